"""Which mail domains an app may use, and the proofs behind them.

An address belongs to one app (one channel) and works only on a domain that app has proven:
granted by the operator (`domains` of the app in the config file, or `gateway domains grant`),
or shown by the app with a DNS TXT record that carries its token. An address the operator wrote
into the config file for the app is granted by that alone. Until its domain is proven, mail to
an address is refused at RCPT and nothing is sent from it.

Only the operator grants; an app admin can start and check a DNS proof. A domain proven for one
app cannot be claimed by another (the database's partial unique index decides a race).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tickets.errors import InvalidValue, NotAllowed, NotFound
from tickets.models import App, AppDomain, Channel, ChannelAddress

CONFIG = "config"  # granted by the config file: synced at start, changed only there
OPERATOR = "operator"  # granted by `gateway domains grant`
DNS = "dns"  # proven by the app's TXT record

CHALLENGE_LABEL = "_gateway-challenge"
RECORD_PREFIX = "gateway-verify="

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalize_domain(value: str) -> str:
    """`Example.COM.` -> `example.com`; InvalidValue for what is not a host name."""
    domain = value.strip().lower().removesuffix(".")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidValue(f"{value!r} is not a domain name like example.com") from None
    if len(domain) > 253 or not all(_LABEL.match(label) for label in domain.split(".")):
        raise InvalidValue(f"{value!r} is not a domain name like example.com")
    return domain


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


def challenge_name(domain: str) -> str:
    return f"{CHALLENGE_LABEL}.{domain}"


def challenge_value(row: AppDomain) -> str:
    return f"{RECORD_PREFIX}{row.token}"


def how_to_prove(domain: str) -> str:
    return (
        f'ask the operator to grant {domain} to this app (domains = ["{domain}"] under the '
        f"app in the config file, or 'gateway domains grant'), or start a DNS proof "
        f"('gateway domains verify {domain}' or POST /api/v1/admin/domains), publish the TXT "
        f"record it shows at {challenge_name(domain)} and check it again"
    )


def not_proven(address: str) -> str:
    domain = domain_of(address)
    return f"{address}: the domain {domain} is not proven for this app; {how_to_prove(domain)}"


@dataclass(frozen=True)
class Proofs:
    """A snapshot of who may use what: proven domains and the config file's own addresses."""

    domains: dict[str, int]  # proven domain -> app id
    placed: dict[str, int]  # address the config file gives an app -> app id

    def allows(self, app_id: int, address: str) -> bool:
        """May the app receive mail to, and send from, this address (plus forms included)?"""
        local, _, domain = address.lower().rpartition("@")
        base = f"{local.split('+', 1)[0]}@{domain}"
        return self.placed.get(base) == app_id or self.domains.get(domain) == app_id

    def allows_envelope(self, app_id: int, address: str) -> bool:
        """May the app use this return path: on a domain it has proven, or of an address the
        config file gives it (a VERP `bounces+...@` address has no channel of its own)."""
        domain = domain_of(address)
        return self.domains.get(domain) == app_id or any(
            owner == app_id and domain_of(placed) == domain for placed, owner in self.placed.items()
        )


def proofs(session: Session) -> Proofs:
    proven = session.execute(
        select(AppDomain.domain, AppDomain.app_id).where(AppDomain.proven_at.is_not(None))
    )
    placed = session.execute(
        select(ChannelAddress.address, Channel.app_id, Channel.settings).join(
            Channel, Channel.id == ChannelAddress.channel_id
        )
    )
    return Proofs(
        domains={domain: app_id for domain, app_id in proven},
        placed={
            address: app_id
            for address, app_id, settings in placed
            if (settings or {}).get("source") == "config"
        },
    )


def sending_refusal(
    session: Session, app_id: int, from_addresses: Iterable[str], mail_from: str
) -> str | None:
    """Why mail of this app may not go out with this From and return path; None if it may."""
    snapshot = proofs(session)
    for address in from_addresses:
        if not snapshot.allows(app_id, address):
            return f"not sent: {not_proven(address)}"
    if mail_from and not snapshot.allows_envelope(app_id, mail_from):
        return f"not sent: {not_proven(mail_from)}"
    return None


def check_new_address(session: Session, app_id: int, address: str) -> None:
    """Refuse (409) an address another app's proven domain covers; its owner stays private."""
    owner = session.scalar(
        select(AppDomain.app_id).where(
            AppDomain.domain == domain_of(address), AppDomain.proven_at.is_not(None)
        )
    )
    if owner is not None and owner != app_id:
        raise NotAllowed(f"{address}: the domain {domain_of(address)} is not available to this app")


def list_domains(session: Session, app: App) -> list[AppDomain]:
    return list(
        session.scalars(
            select(AppDomain).where(AppDomain.app_id == app.id).order_by(AppDomain.domain)
        )
    )


def _row(session: Session, app: App, domain: str) -> AppDomain | None:
    return session.scalar(
        select(AppDomain).where(AppDomain.app_id == app.id, AppDomain.domain == domain)
    )


def _proven_elsewhere(session: Session, app: App, domain: str) -> AppDomain | None:
    return session.scalar(
        select(AppDomain).where(
            AppDomain.domain == domain,
            AppDomain.proven_at.is_not(None),
            AppDomain.app_id != app.id,
        )
    )


def start_proof(session: Session, app: App, value: str, now: dt.datetime) -> AppDomain:
    """The app's DNS proof of a domain: its row (with the token to publish), made if new."""
    domain = normalize_domain(value)
    if _proven_elsewhere(session, app, domain) is not None:
        raise NotAllowed(f"the domain {domain} is not available to this app")
    row = _row(session, app, domain)
    if row is None:
        row = AppDomain(app_id=app.id, domain=domain, token=secrets.token_hex(16), created_at=now)
        session.add(row)
        session.flush()
    return row


def get_domain(session: Session, app: App, value: str) -> AppDomain:
    domain = normalize_domain(value)
    row = _row(session, app, domain)
    if row is None:
        raise NotFound(f"no proof of {domain} was started for this app")
    return row


def record_check(
    session: Session, row: AppDomain, found: bool, detail: str, now: dt.datetime
) -> None:
    """Store a DNS check's result; a passing one proves the domain unless another app won."""
    row.checked_at = now
    row.last_check = detail[:2000]
    if not found or row.proven_at is not None:
        return
    app = session.get(App, row.app_id)
    assert app is not None
    if _proven_elsewhere(session, app, row.domain) is not None:
        raise NotAllowed(f"the domain {row.domain} is not available to this app")
    row.proof, row.proven_at = DNS, now
    _flush_or_conflict(session, row.domain)


def grant(
    session: Session, app: App, value: str, now: dt.datetime, *, proof: str = OPERATOR
) -> AppDomain:
    """The operator lets the app use the domain. Refused while another app holds it, except for
    the config file, which is the operator's last word: it takes the domain over."""
    domain = normalize_domain(value)
    other = _proven_elsewhere(session, app, domain)
    if other is not None:
        if proof != CONFIG:
            holder = session.get(App, other.app_id)
            name = holder.name if holder else other.app_id
            raise NotAllowed(f"{domain} is proven for app {name}; revoke it there first")
        other.proof, other.proven_at = None, None
        session.flush()
    row = _row(session, app, domain)
    if row is None:
        row = AppDomain(app_id=app.id, domain=domain, token=secrets.token_hex(16), created_at=now)
        session.add(row)
    if row.proven_at is None or row.proof != CONFIG:
        row.proof, row.proven_at = proof, row.proven_at or now
    _flush_or_conflict(session, domain)
    return row


def revoke(session: Session, app: App, value: str) -> None:
    row = get_domain(session, app, value)
    if row.proof == CONFIG:
        raise NotAllowed(f"{row.domain} is granted by the config file; remove it there")
    session.delete(row)
    session.flush()


def sync_config_grants(session: Session, granted: dict[str, list[str]], now: dt.datetime) -> None:
    """Make the config file's grants (app name -> domains) the `config` rows exactly."""
    apps = {a.name: a for a in session.scalars(select(App).where(App.name.in_(list(granted))))}
    wanted = {(apps[name].id, normalize_domain(d)) for name, ds in granted.items() for d in ds}
    for row in session.scalars(select(AppDomain).where(AppDomain.proof == CONFIG)):
        if (row.app_id, row.domain) not in wanted:
            session.delete(row)
    session.flush()
    for name, domains in granted.items():
        for domain in domains:
            grant(session, apps[name], domain, now, proof=CONFIG)


def _flush_or_conflict(session: Session, domain: str) -> None:
    try:
        session.flush()
    except IntegrityError:  # the caller's transaction is rolled back with the 409
        raise NotAllowed(f"the domain {domain} is not available to this app") from None
