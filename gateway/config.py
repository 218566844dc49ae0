"""The gateway's configuration: one TOML file validated into typed objects.

No file at all means the embedded default of CONTRACT.md (SQLite under the data directory, the
in-memory broker, one app `demo` with the channel `support@localhost`). Secrets never live in the
file: it names the environment variable (or file) that holds them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from channels.email.egress import HostPolicy, parse_rule
from channels.email.tokens import Keyring
from tickets.business_time import Calendar, parse_duration
from tickets.domains import normalize_domain
from tickets.errors import InvalidValue


class ConfigError(Exception):
    """An invalid configuration; the message names the key and the problem in one line."""


class _Section(BaseModel):
    # Unknown keys are an error: a typo in a key would otherwise silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return value


class SmtpConfig(_Section):
    listen: str = "127.0.0.1:2525"
    hostname: str = "localhost"
    max_message_bytes: int = Field(default=26_214_400, gt=0)
    max_recipients: int = Field(default=100, gt=0)
    max_header_bytes: int = Field(default=102_400, gt=0)
    max_received_headers: int = Field(default=50, gt=0)
    max_connections: int = Field(default=200, gt=0)
    max_connections_per_peer: int = Field(default=20, gt=0)
    # A session that sends nothing this long is closed.
    idle_timeout_seconds: float = Field(default=300.0, gt=0)
    # With every connection slot taken, the session idle longest (at least this long) is closed
    # with 421 to let a new sender in: idle connections cannot lock senders out.
    idle_evict_seconds: float = Field(default=2.0, ge=0)
    # DATA held in memory by all sessions together (messages being received or stored); a
    # message that would go over it is answered 452 and its bytes are dropped at once.
    max_pending_data_bytes: int = Field(default=268_435_456, gt=0)
    # Refused connections are logged at most once per this many seconds, with a count.
    refusal_log_seconds: float = Field(default=60.0, gt=0)
    # How often the accepted addresses are reloaded (channels added or disabled at run time).
    routes_refresh_seconds: float = Field(default=10.0, gt=0)
    # Under load, how long the first accepted mail of a commit waits for others to share it.
    group_commit_ms: float = Field(default=1.0, ge=0, le=50)
    tls_cert_file: str | None = None
    tls_key_file: str | None = None

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: _host_port(v)))

    @model_validator(mode="after")
    def _check_together(self) -> SmtpConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file: give both, or neither")
        if self.max_pending_data_bytes < self.max_message_bytes:
            raise ValueError("max_pending_data_bytes: must be at least max_message_bytes")
        return self


class HttpConfig(_Section):
    listen: str = "127.0.0.1:8025"
    public_url: str = "http://127.0.0.1:8025"
    # Reverse proxies (addresses or networks) whose X-Forwarded-For names the client; from
    # anyone else the header is ignored, or a client could pick its own address.
    trusted_proxies: list[str] = []

    _check_listen = field_validator("listen")(classmethod(lambda cls, v: _host_port(v)))

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, v: list[str]) -> list[str]:
        for network in v:
            ipaddress.ip_network(network, strict=False)  # ValueError names the bad one
        return v

    @field_validator("public_url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {v!r}")
        return v.rstrip("/")


class RateLimitsConfig(_Section):
    """What anonymous callers can make the gateway do: COUNT/PERIOD, or "off"."""

    new_visitors_per_ip: str = "30/1h"
    messages_per_ip: str = "200/1h"
    messages_per_conversation: str = "30/5m"
    email_links_per_ip: str = "10/1h"
    email_links_per_conversation: str = "3/1h"
    # Console sign-in attempts (a password, or a link by email): online guessing and mail
    # bombing of an agent's address.
    sign_in_per_ip: str = "30/10m"
    sign_in_per_address: str = "10/10m"

    @field_validator("*")
    @classmethod
    def _check_limit(cls, v: str) -> str:
        parse_rate(v)
        return v


def parse_rate(text: str) -> tuple[int, dt.timedelta] | None:
    """ "30/1h" -> (30, one hour); "off" -> None."""
    if text == "off":
        return None
    count, sep, period = text.partition("/")
    if not sep or not count.isdigit() or int(count) < 1:
        raise ValueError(f'expected COUNT/PERIOD like "30/1h", or "off"; got {text!r}')
    return int(count), parse_duration(period)


class DeliveryConfig(_Section):
    email_grace_seconds: int = Field(default=120, ge=0)
    widget_online_seconds: int = Field(default=60, ge=0)


class NotificationsConfig(_Section):
    # Per agent and conversation: the first notification of a quiet conversation goes out at
    # once, later ones wait until this long after the last mail and go out together.
    coalesce_seconds: float = Field(default=60.0, ge=0)
    # Per agent: more notification mails than this in an hour are folded into one.
    max_per_hour: int = Field(default=30, gt=0)


class LimitsConfig(_Section):
    max_header_bytes: int = Field(default=102_400, gt=0)
    max_mime_depth: int = Field(default=50, gt=0)
    max_mime_parts: int = Field(default=1000, gt=0)
    parse_cpu_seconds: float = Field(default=2.0, ge=0)  # 0: no limit, parse in-process
    parse_processes: int = Field(default=2, gt=0)  # worker processes that enforce it
    max_attachment_bytes: int = Field(default=26_214_400, gt=0)
    # People a customer copies (Cc) stay in the loop of the conversation: at most this many.
    max_participants: int = Field(default=10, ge=0, le=100)


class OutboundConfig(_Section):
    transport: Literal["file", "smtp"] = "file"
    file_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=25, gt=0, le=65535)
    starttls: bool = False
    tls: bool = False
    username: str | None = None
    password_env: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    connections: int = Field(default=4, gt=0, le=100)
    batch_size: int = Field(default=50, gt=0, le=1000)
    retry_schedule: list[str] = ["1m", "5m", "15m", "1h", "2h"]
    give_up_after: str = "5d"

    @field_validator("retry_schedule")
    @classmethod
    def _check_schedule(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one interval")
        for item in v:
            parse_duration(item)
        return v

    @field_validator("give_up_after")
    @classmethod
    def _check_give_up(cls, v: str) -> str:
        parse_duration(v)
        return v


class EmailCheckConfig(_Section):
    # Off by default: a DNS lookup at every conversion is a network dependency many sites lack.
    mx_lookup: bool = False
    mx_timeout_seconds: float = Field(default=3.0, gt=0, le=30)


class SummarizerConfig(_Section):
    provider: Literal["offline", "openai"] = "offline"
    base_url: str | None = None  # e.g. https://api.openai.com/v1 or a local compatible server
    model: str | None = None
    api_key_env: str | None = None  # the variable that holds the key; never the key itself
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # New messages refresh the summary once the conversation has been quiet this long.
    debounce_seconds: float = Field(default=60.0, ge=0)

    @model_validator(mode="after")
    def _check_provider(self) -> SummarizerConfig:
        if self.provider == "openai" and not (self.base_url and self.model):
            raise ValueError("provider 'openai' needs base_url and model")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url: expected an http(s):// URL, got {self.base_url!r}")
        return self


class ImapConfig(_Section):
    host: str
    port: int = Field(default=993, gt=0, le=65535)
    ssl: bool = True
    starttls: bool = False
    username: str
    password_env: str | None = None
    password_file: str | None = None
    oauth2_token_env: str | None = None
    oauth2_token_file: str | None = None
    folder: str = "INBOX"
    processed_folder: str | None = None
    backfill_days: int = Field(default=7, ge=0)
    poll_seconds: float = Field(default=60.0, gt=0)
    idle: bool = True


class DkimConfig(_Section):
    """Outbound DKIM signing for a channel; the key file is a PEM RSA private key."""

    selector: str = Field(min_length=1)
    domain: str = Field(min_length=1)
    private_key_file: str = Field(min_length=1)


class ChannelConfig(_Section):
    name: str = Field(min_length=1)
    addresses: list[str] = Field(min_length=1)
    subject_threading: bool = True
    subject_threading_days: int = Field(default=14, ge=0)
    require_dkim: bool = False
    trusted_authserv_id: str | None = None
    imap: ImapConfig | None = None
    dkim: DkimConfig | None = None

    @field_validator("addresses")
    @classmethod
    def _check_addresses(cls, v: list[str]) -> list[str]:
        out = []
        for address in v:
            local, at, domain = address.strip().rpartition("@")
            if not at or not local or not domain or "+" in local:
                raise ValueError(f"{address!r} is not a plain address like support@example.com")
            out.append(address.strip().lower())
        return out


class CalendarConfig(_Section):
    name: str = Field(min_length=1)
    timezone: str = "UTC"
    hours: dict[str, str | list[str]] = {}
    holidays: list[str] = []

    @model_validator(mode="after")
    def _check(self) -> CalendarConfig:
        self.to_calendar()
        return self

    def to_calendar(self) -> Calendar:
        return Calendar.from_config(self.name, self.timezone, self.hours, self.holidays)


PriorityName = Literal["low", "normal", "high", "urgent"]


class SlaPolicyConfig(_Section):
    name: str = Field(min_length=1)
    priorities: list[PriorityName] = ["low", "normal", "high", "urgent"]
    categories: list[str] = []
    first_response: str | None = None
    next_response: str | None = None
    resolution: str | None = None
    calendar: str = "always"
    warn_at: float = Field(default=0.8, gt=0, lt=1)

    @field_validator("first_response", "next_response", "resolution")
    @classmethod
    def _check_duration(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v


# A CSP host source: the value goes into a header, so nothing but a scheme, host and port.
_FRAME_SOURCE = re.compile(r"^https?://(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*(:(\d{1,5}|\*))?$")


class AppConfig(_Section):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    brand: str = Field(min_length=1)
    default_locale: str = "en"
    # The mail domains the operator grants this app: its channels may use any address on them
    # (an address written in `channels` is granted by itself). A domain belongs to one app.
    domains: list[str] = []
    channels: list[ChannelConfig] = []
    calendars: list[CalendarConfig] = []
    sla_policies: list[SlaPolicyConfig] = []
    # Sites that may show the widget page in a frame (the gateway itself always may).
    widget_frame_ancestors: list[str] = []

    @field_validator("widget_frame_ancestors")
    @classmethod
    def _check_ancestors(cls, v: list[str]) -> list[str]:
        for source in v:
            if not _FRAME_SOURCE.match(source):
                raise ValueError(
                    f"expected sites like https://www.example.com or https://*.example.com, "
                    f"got {source!r}"
                )
        return v

    # IMAP and SMTP hosts the app's admins may give their channels (admin API); nothing else is
    # ever connected to with an admin-given password. "name", "*.domain", "IP" or "IP/prefix",
    # each with an optional ":port". Private and loopback addresses only through an IP entry.
    allowed_hosts: list[str] = []

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, v: list[str]) -> list[str]:
        for entry in v:
            parse_rule(entry)
        return v

    @field_validator("domains")
    @classmethod
    def _check_domains(cls, v: list[str]) -> list[str]:
        try:
            return list(dict.fromkeys(normalize_domain(d) for d in v))
        except InvalidValue as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _check_references(self) -> AppConfig:
        calendars = {c.name for c in self.calendars} | {"always"}
        for i, policy in enumerate(self.sla_policies):
            if policy.calendar not in calendars:
                raise ValueError(
                    f"sla_policies[{i}].calendar: no calendar named {policy.calendar!r}"
                )
        names = [c.name for c in self.channels]
        if len(names) != len(set(names)):
            raise ValueError("channels: two channels share a name")
        return self


class GatewayConfig(_Section):
    data_dir: str = "./gateway-data"
    database_url: str | None = None
    broker_url: str = "stub://"
    # Queues are named `<namespace>.<queue>` on the broker: gateways sharing one server each
    # take only their own messages. Empty: the plain queue names.
    broker_namespace: str = Field(default="", pattern=r"^[A-Za-z0-9_-]*$", max_length=64)
    secret_key_env: str = "GATEWAY_SECRET_KEY"  # noqa: S105 - the name of a variable
    secret_key_file: str | None = None
    # Keys that still verify reply tokens but no longer sign them; drop one to retire it.
    previous_secret_key_envs: list[str] = []
    previous_secret_key_files: list[str] = []
    agent_token_ttl: str = "30d"  # noqa: S105 - a duration
    # DNS server (HOST:PORT) for DKIM key lookups of agents' mail; unset: the system resolver.
    dkim_resolver: str | None = None
    # DNS server (HOST:PORT) for the TXT records of domain proofs; unset: the system resolver.
    dns_resolver: str | None = None
    worker_threads: int = Field(default=4, gt=0)
    sweep_seconds: float = Field(default=5.0, gt=0)
    smtp: SmtpConfig = SmtpConfig()
    http: HttpConfig = HttpConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    rate_limits: RateLimitsConfig = RateLimitsConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    limits: LimitsConfig = LimitsConfig()
    outbound: OutboundConfig = OutboundConfig()
    email_check: EmailCheckConfig = EmailCheckConfig()
    summarizer: SummarizerConfig = SummarizerConfig()
    apps: list[AppConfig] = []

    @field_validator("dkim_resolver", "dns_resolver")
    @classmethod
    def _check_resolver(cls, v: str | None) -> str | None:
        return None if v is None else _host_port(v)

    @field_validator("agent_token_ttl")
    @classmethod
    def _check_ttl(cls, v: str) -> str:
        parse_duration(v)
        return v

    @field_validator("broker_url")
    @classmethod
    def _check_broker(cls, v: str) -> str:
        if not v.startswith(("stub://", "redis://", "rediss://", "amqp://", "amqps://")):
            raise ValueError(f"expected stub://, redis://... or amqp://..., got {v!r}")
        return v

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite", "postgresql")):
            raise ValueError(f"expected a sqlite:/// or postgresql+psycopg:// URL, got {v!r}")
        return v

    @model_validator(mode="after")
    def _check_apps(self) -> GatewayConfig:
        names = [a.name for a in self.apps]
        if len(names) != len(set(names)):
            raise ValueError("apps: two apps share a name")
        seen: dict[str, str] = {}
        for app in self.apps:
            for channel in app.channels:
                for address in channel.addresses:
                    if address in seen:
                        raise ValueError(f"address {address} belongs to two channels")
                    seen[address] = channel.name
        granted: dict[str, str] = {}
        for app in self.apps:
            for domain in app.domains:
                if domain in granted:
                    raise ValueError(
                        f"domain {domain} is granted to two apps ({granted[domain]}, {app.name})"
                    )
                granted[domain] = app.name
        for app in self.apps:
            for channel in app.channels:
                for address in channel.addresses:
                    owner = granted.get(address.rpartition("@")[2], app.name)
                    if owner != app.name:
                        raise ValueError(
                            f"address {address} of app {app.name} is on a domain granted to "
                            f"app {owner}"
                        )
        return self

    # Derived values: resolved once here so every part of the gateway agrees on them.

    @property
    def data_path(self) -> Path:
        return Path(os.environ.get("GATEWAY_DATA_DIR") or self.data_dir)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'gateway.db'}"

    @property
    def outbound_dir(self) -> Path:
        return Path(self.outbound.file_dir) if self.outbound.file_dir else self.data_path / "sent"

    def secret_key(self) -> bytes:
        """The HMAC key: from the environment, else the named file, else a generated local file.

        Generating one is only right for the embedded default, where the data directory is
        this machine's own; a deployment names its key.
        """
        value = os.environ.get(self.secret_key_env)
        if value:
            return value.encode()
        path = Path(self.secret_key_file) if self.secret_key_file else None
        if path is not None:
            try:
                return path.read_text().strip().encode()
            except OSError as exc:
                raise ConfigError(f"secret_key_file: cannot read {path}: {exc.strerror}") from exc
        path = self.data_path / "secret_key"
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Written aside, then linked into place: a thread or process starting at the same
            # moment reads no file or the whole key (never an empty one), and one key wins.
            aside = path.with_name(f".secret_key.{secrets.token_hex(8)}")
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            try:
                os.link(aside, path)
            except FileExistsError:
                pass  # another was first: its key is the key
            finally:
                aside.unlink()
        return path.read_text().strip().encode()

    def previous_secret_keys(self) -> list[bytes]:
        """Keys of earlier rotations, each from its variable or file; all must be present."""
        keys = []
        for name in self.previous_secret_key_envs:
            value = os.environ.get(name)
            if not value:
                raise ConfigError(f"previous_secret_key_envs: {name} is not set")
            keys.append(value.encode())
        for file in self.previous_secret_key_files:
            try:
                keys.append(Path(file).read_text().strip().encode())
            except OSError as exc:
                raise ConfigError(
                    f"previous_secret_key_files: cannot read {file}: {exc.strerror}"
                ) from exc
        return keys

    def keyring(self) -> Keyring:
        """The reply-token keyring: the current key signs, previous keys still verify."""
        try:
            return Keyring(self.secret_key(), self.previous_secret_keys())
        except ValueError as exc:
            raise ConfigError(f"secret keys: {exc}") from None

    def host_policy(self, app_name: str) -> HostPolicy:
        """The hosts the operator allows for the app's admin-given channel settings (none for
        an app the config file does not list)."""
        app = next((a for a in self.apps if a.name == app_name), None)
        return HostPolicy.parse(app.allowed_hosts if app is not None else [])

    @property
    def agent_token_lifetime(self) -> dt.timedelta:
        return parse_duration(self.agent_token_ttl)


def embedded_default() -> GatewayConfig:
    """The configuration `gateway serve` runs with when no file is given."""
    return GatewayConfig(
        apps=[
            AppConfig(
                name="demo",
                brand="Demo",
                domains=["localhost"],
                channels=[ChannelConfig(name="support", addresses=["support@localhost"])],
                sla_policies=[
                    SlaPolicyConfig(
                        name="default", first_response="1h", next_response="4h", resolution="3d"
                    )
                ],
            )
        ]
    )


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{key}: {msg}" if key else msg


def parse_config(data: dict[str, Any]) -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None


def load_config(path: str | os.PathLike[str] | None = None) -> GatewayConfig:
    """Read the file named by `path` or `GATEWAY_CONFIG`; no file means the embedded default."""
    path = path or os.environ.get("GATEWAY_CONFIG")
    if not path:
        return embedded_default()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})"
        ) from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
