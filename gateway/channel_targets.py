"""A channel's IMAP account and relay as the check and sending use them, and their passwords.

Who wrote a setting decides what it may do:
- the operator (the config file, or the CLI on the server, which marks the sections it writes)
  may name an environment variable or file for a password, and any host;
- an app admin (the admin API) gives a password by value only; it is stored sealed
  (`gateway.secret_box`), and the channel may connect only to hosts the operator allows for
  the app (`[[apps]] allowed_hosts`, see `channels.email.egress`). That is checked when the
  setting is written and again at every connection, so a host the operator later removes is
  refused from then on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import object_session

from channels.email.check import ImapTarget, SmtpTarget
from channels.email.egress import HostPolicy, HostRefused
from gateway.config import ConfigError
from gateway.inbound import _secret
from gateway.runtime import Runtime
from gateway.secret_box import SECRETS, SecretBox, SecretUnreadable
from tickets.errors import InvalidValue
from tickets.models import App, Channel

OPERATOR = "operator"  # a section key: written by the operator, may name *_env / *_file
INDIRECT = ("_env", "_file")  # key suffixes that point at a secret on the server


def indirect_keys(section: dict[str, Any]) -> list[str]:
    return [k for k, v in section.items() if k.endswith(INDIRECT) and v]


def host_policy(runtime: Runtime, app_name: str) -> HostPolicy:
    """The hosts the operator allows the app's admin-given channel settings to use."""
    return runtime.config.host_policy(app_name)


def check_host(policy: HostPolicy | None, key: str, section: dict[str, Any]) -> None:
    """Refuse, when the setting is written, a host the operator does not allow."""
    if policy is None:
        return
    try:
        policy.check(section["host"], int(section["port"]), resolve=False)
    except HostRefused as exc:
        raise InvalidValue(f"{key}.host: {exc}") from None


def _policy_for(runtime: Runtime, channel: Channel, section: dict[str, Any]) -> HostPolicy | None:
    if channel.settings.get("source", "config") == "config" or section.get(OPERATOR):
        return None
    session = object_session(channel)
    app = session.get(App, channel.app_id) if session is not None else None
    return host_policy(runtime, app.name if app is not None else "")


def password(runtime: Runtime, channel: Channel, key: str) -> str | None:
    """The section's password: the sealed one given through the API, else (operator's
    sections only) its environment variable or file."""
    stored = channel.settings.get(SECRETS, {}).get(key)
    if stored:
        try:
            return runtime.secret_box.open(stored)
        except SecretUnreadable as exc:
            raise ConfigError(f"channel {channel.name} {key}: {exc}") from None
    section = channel.settings.get(key) or {}
    if channel.settings.get("source", "config") != "config" and not section.get(OPERATOR):
        return None  # an app admin's section never reads the server's environment or files
    return _secret(
        section.get("password_env"), section.get("password_file"), f"channel {channel.name} {key}"
    )


def imap_target(runtime: Runtime, channel: Channel) -> ImapTarget | None:
    imap = channel.settings.get("imap")
    if not imap:
        return None
    return ImapTarget(
        host=imap["host"],
        port=int(imap.get("port") or 993),
        ssl=bool(imap.get("ssl", True)),
        starttls=bool(imap.get("starttls", False)),
        username=imap["username"],
        password=password(runtime, channel, "imap"),
        folder=imap.get("folder") or "INBOX",
        policy=_policy_for(runtime, channel, imap),
    )


def smtp_target(runtime: Runtime, channel: Channel) -> SmtpTarget | None:
    """The channel's own relay, else the operator's [outbound] relay (None: no relay)."""
    smtp = channel.settings.get("smtp")
    if smtp:
        return SmtpTarget(
            host=smtp["host"],
            port=int(smtp.get("port") or 587),
            starttls=bool(smtp.get("starttls", True)),
            tls=bool(smtp.get("tls", False)),
            username=smtp.get("username"),
            password=password(runtime, channel, "smtp"),
            policy=_policy_for(runtime, channel, smtp),
        )
    out = runtime.config.outbound
    if out.transport != "smtp":
        return None
    return SmtpTarget(
        host=out.host,
        port=out.port,
        starttls=out.starttls,
        tls=out.tls,
        username=out.username,
        password=_secret(out.password_env, None, "outbound"),
    )


def store_passwords(
    box: SecretBox | None, stored: dict[str, Any], given: dict[str, str]
) -> dict[str, Any]:
    """The stored passwords with the given ones sealed in (the others kept)."""
    if given and box is None:
        raise ValueError("passwords given by value need the secret box to be stored")
    return {**stored, **{key: box.seal(value) for key, value in given.items() if box}}
