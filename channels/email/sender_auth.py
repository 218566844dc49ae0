"""Whether a sender's domain vouches for a mail: an aligned DKIM signature verifies (dkimpy),
or the channel's own edge wrote that DKIM or DMARC passed (Authentication-Results).

Agent mail needs this where a channel requires it (channels/email/agent_reply.py,
agent_forward.py): the From header alone is trivial to forge.
"""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable

import authres
import dkim
import dns.exception
import dns.resolver

DnsFunc = Callable[..., bytes | None]


def sender_authenticated(
    raw: bytes, sender: str, trusted_authserv_id: str | None, dns: DnsFunc | None
) -> bool:
    """Whether the sender's domain vouches for this mail: an aligned DKIM signature passes, or
    the channel's own edge (`trusted_authserv_id`) says DKIM or DMARC passed."""
    domain = sender.rpartition("@")[2]
    if trusted_authserv_id and trusted_results_pass(raw, trusted_authserv_id, domain):
        return True
    return any(_aligned(d, domain) for d in dkim_pass_domains(raw, dns))


def _aligned(signing_domain: str, author_domain: str) -> bool:
    # Relaxed alignment (RFC 7489): the signer is the author's domain or a parent of it.
    signing = signing_domain.lower().rstrip(".")
    author = author_domain.lower().rstrip(".")
    return bool(signing) and (
        author == signing or (author.endswith("." + signing) and "." in signing)
    )


def resolver_txt(host: str, port: int = 53) -> DnsFunc:
    """A TXT lookup for dkimpy that asks one named DNS server (e.g. a local validating
    resolver) instead of the system's."""

    def get_txt(name: bytes, timeout: int = 5) -> bytes | None:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
        resolver.lifetime = timeout
        try:
            answer = resolver.resolve(name.decode("ascii"), "TXT")
        except (dns.exception.DNSException, UnicodeDecodeError):
            return None
        return b"".join(answer[0].strings)

    return get_txt


def dkim_pass_domains(raw: bytes, dns: DnsFunc | None = None) -> set[str]:
    """The d= domains of the DKIM signatures of `raw` that verify (dkimpy, with `dns`)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    count = len(message.get_all("DKIM-Signature") or [])
    passed: set[str] = set()
    for index in range(count):
        checker = dkim.DKIM(raw)
        try:
            ok = checker.verify(idx=index, dnsfunc=dns) if dns else checker.verify(idx=index)
        except (dkim.DKIMException, ValueError, IndexError):
            ok = False
        if ok and checker.domain:
            passed.add(checker.domain.decode("ascii", "replace").lower())
    return passed


_Result = tuple[str, str, dict[tuple[str, str], str]]  # method, result, properties


def _edge_results(raw: bytes, authserv_id: str) -> list[_Result]:
    """(method, result, properties) of the first Authentication-Results of our own edge.
    Results of any other authserv-id are ignored: anyone can write them. The edge must
    remove headers claiming its id from incoming mail, as RFC 8601 section 5 requires."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    for value in message.get_all("Authentication-Results") or []:
        try:
            header = authres.AuthenticationResultsHeader.parse_value(" ".join(str(value).split()))
        except authres.AuthResError:
            continue
        if (header.authserv_id or "").lower() != authserv_id.lower():
            continue
        return [
            (r.method, r.result, {(p.type, p.name): str(p.value) for p in r.properties})
            for r in header.results
        ]  # only the first header of our edge counts
    return []


def trusted_results_pass(raw: bytes, authserv_id: str, author_domain: str) -> bool:
    """True when our own edge says DKIM (aligned) or DMARC passed."""
    for method, result, props in _edge_results(raw, authserv_id):
        if result != "pass":
            continue
        if method == "dkim" and _aligned(props.get(("header", "d"), ""), author_domain):
            return True
        if method == "dmarc" and props.get(("header", "from"), "").lower() == (
            author_domain.lower()
        ):
            return True
    return False


def trusted_dmarc_failed(raw: bytes, authserv_id: str, author_domain: str) -> bool:
    """True when our own edge says DMARC failed for the author's domain: its owner says the
    mail is not theirs."""
    return any(
        method == "dmarc"
        and result == "fail"
        and props.get(("header", "from"), "").lower() == author_domain.lower()
        for method, result, props in _edge_results(raw, authserv_id)
    )


# --- the pipeline's entry ------------------------------------------------------------------
