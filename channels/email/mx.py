"""Does a domain accept mail? An MX lookup (with the RFC 5321 fallback to an address record),
bounded by a timeout, for the optional part of the convert-time email check."""

from __future__ import annotations

import logging

import dns.exception
import dns.resolver

log = logging.getLogger(__name__)


def domain_accepts_mail(domain: str, timeout: float) -> bool | None:
    """True if the domain has MX (or, lacking MX, an A/AAAA record); False if it has neither or
    does not exist; None if the lookup could not tell in time (then nobody should be warned)."""
    resolver = dns.resolver.Resolver()
    for rdtype in ("MX", "A", "AAAA"):
        try:
            answer = resolver.resolve(domain, rdtype, lifetime=timeout)
        except dns.resolver.NXDOMAIN:
            return False
        except dns.resolver.NoAnswer:
            continue
        except dns.exception.DNSException as exc:
            log.info("mail server lookup for %s failed: %s", domain, exc)
            return None
        # RFC 7505 null MX ("."): the domain says it takes no mail.
        return not (rdtype == "MX" and all(str(r.exchange) == "." for r in answer))
    return False
