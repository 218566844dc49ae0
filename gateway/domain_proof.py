"""The DNS side of domain proofs: start one, look up the app's TXT record, record the result.

An app proves a domain by publishing `_gateway-challenge.<domain> TXT "gateway-verify=<token>"`
with the token of its own proof (`tickets.domains`). The lookup runs outside any transaction;
`[dns_resolver]` names the server to ask (else the system's resolver).
"""

from __future__ import annotations

from typing import Any

import dns.exception
import dns.resolver

from gateway.runtime import Runtime
from tickets import domains
from tickets.models import App, AppDomain

LOOKUP_SECONDS = 5.0


def domain_json(row: AppDomain) -> dict[str, Any]:
    """A domain as its app's admin sees it, with the record to publish while it is pending."""
    proven = row.proven_at is not None
    return {
        "domain": row.domain,
        "state": "proven" if proven else "pending",
        "proof": row.proof,
        "proven_at": row.proven_at,
        "record": None
        if proven and row.proof != domains.DNS
        else {
            "name": domains.challenge_name(row.domain),
            "type": "TXT",
            "value": domains.challenge_value(row),
        },
        "checked_at": row.checked_at,
        "last_check": row.last_check,
    }


def lookup_txt(runtime: Runtime, name: str) -> list[str] | str:
    """The TXT strings published at `name`, or what went wrong, in words."""
    server = runtime.config.dns_resolver
    if server:
        resolver = dns.resolver.Resolver(configure=False)
        host, _, port = server.rpartition(":")
        resolver.nameservers, resolver.port = [host], int(port)
    else:
        resolver = dns.resolver.Resolver()
    try:
        answer = resolver.resolve(name, "TXT", lifetime=LOOKUP_SECONDS)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return f"no TXT record at {name}"
    except dns.exception.Timeout:
        return f"the DNS lookup of {name} timed out; try again"
    except dns.exception.DNSException as exc:
        return f"the DNS lookup of {name} failed: {exc}"
    return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]


def start(runtime: Runtime, app_id: int, domain: str) -> dict[str, Any]:
    with runtime.unit_of_work() as session:
        app = session.get(App, app_id)
        assert app is not None
        return domain_json(domains.start_proof(session, app, domain, runtime.clock()))


def verify(runtime: Runtime, app_id: int, domain: str) -> dict[str, Any]:
    """Look the app's record up; when it is there, the domain is proven for the app."""
    with runtime.unit_of_work() as session:
        app = session.get(App, app_id)
        assert app is not None
        row = domains.get_domain(session, app, domain)
        if row.proven_at is not None:
            return domain_json(row)
        name, wanted = domains.challenge_name(row.domain), domains.challenge_value(row)
    found = lookup_txt(runtime, name)
    if isinstance(found, str):
        ok, detail = False, found
    elif wanted in found:
        ok, detail = True, f"found {wanted} at {name}"
    else:
        ok, detail = False, f"the TXT record at {name} is not {wanted}"
    with runtime.unit_of_work() as session:
        app = session.get(App, app_id)
        assert app is not None
        row = domains.get_domain(session, app, domain)
        domains.record_check(session, row, ok, detail, runtime.clock())
        return domain_json(row)


def list_for(runtime: Runtime, app_id: int) -> list[dict[str, Any]]:
    with runtime.unit_of_work() as session:
        app = session.get(App, app_id)
        assert app is not None
        return [domain_json(row) for row in domains.list_domains(session, app)]
