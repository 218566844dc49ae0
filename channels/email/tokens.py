"""Signed tokens carried in reply addresses (`support+<token>@domain`), return paths
(`bounces+<token>@domain`) and our loop header.

Four kinds exist and can never be taken for one another:

- a **customer token** (app, conversation, customer) goes into the Reply-To of mail to a
  customer, so their answer threads into the right conversation (threading rule 1);
- an **agent token** (app, conversation, agent, purpose `reply` or `note`, expiry) goes into
  the Reply-To of a notification, so the agent's answer can be posted in their name once the
  sender has been verified as well;
- a **bounce token** (app, outbox row, recipient) is the VERP return path of every email we
  send, so a bounce that comes back to it is tied to exactly that email and recipient;
- a **loop token** (app, a digest of the Message-ID) is the value of our `X-Gateway-Loop`
  header: only mail that carries one we signed is taken for our own mail coming back.

A token is `payload || mac`, written in lowercase base32 without padding (local parts are
often case-folded, and base32 survives that). The payload starts with a kind byte and a 16-bit
key id; the MAC is HMAC-SHA256 over a domain string plus the payload, truncated to 96 bits, and
is checked with `hmac.compare_digest`. The kind byte is under the MAC, so flipping it breaks the
signature, and each kind decodes only into its own dataclass.

Keys rotate without a flag day: the key id is a fingerprint of the key itself, the current key
signs, previous keys still verify, and a key removed from the ring (retired) no longer verifies
anything it signed. Everything here is pure (no I/O, no clock): callers pass `now`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

MAC_BYTES = 12  # 96 bits: far beyond online guessing, and keeps the address under 64 chars
DEFAULT_AGENT_TTL = dt.timedelta(days=30)
_DOMAIN = b"support-gateway reply token v1\0"
_KIND_CUSTOMER = 0x01
_KIND_AGENT_REPLY = 0x02
_KIND_AGENT_NOTE = 0x03
_KIND_BOUNCE = 0x04
_KIND_LOOP = 0x05
_LOOP_DIGEST_BYTES = 6
BOUNCE_LOCAL_PART = "bounces"
_MAX_EXPIRY = 2**32 - 1  # seconds since the epoch, 4 bytes (year 2106)

Purpose = Literal["reply", "note"]
_PURPOSE_KIND: dict[str, int] = {"reply": _KIND_AGENT_REPLY, "note": _KIND_AGENT_NOTE}
_KIND_PURPOSE: dict[int, Purpose] = {_KIND_AGENT_REPLY: "reply", _KIND_AGENT_NOTE: "note"}


class TokenError(Exception):
    """A token that must not be trusted; `reason` is a short, stable code for logs and notices.

    Codes: `malformed`, `unknown-key` (retired or never ours), `bad-signature`, `wrong-kind`,
    `expired`.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class TokenExpired(TokenError):
    """Authentic but past its expiry: the agent can still be told which conversation it was."""

    def __init__(self, token: AgentToken) -> None:
        super().__init__("expired", f"the reply address expired on {token.expires_at:%Y-%m-%d}")
        self.token = token


def _check_id(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value >= 2**63:
        raise ValueError(f"{name} must be a non-negative 63-bit integer, got {value!r}")


@dataclass(frozen=True)
class CustomerToken:
    """Threads a customer's answer into their conversation; no expiry (mail is answered late)."""

    app_id: int
    conversation_id: int
    customer_id: int
    key_id: int | None = None  # set by signing / verifying

    def __post_init__(self) -> None:
        _check_id("app_id", self.app_id)
        _check_id("conversation_id", self.conversation_id)
        _check_id("customer_id", self.customer_id)


@dataclass(frozen=True)
class AgentToken:
    """Lets one agent answer one conversation by email, as a reply or as an internal note."""

    app_id: int
    conversation_id: int
    agent_id: int
    purpose: Purpose
    expires_at: dt.datetime
    key_id: int | None = None

    def __post_init__(self) -> None:
        _check_id("app_id", self.app_id)
        _check_id("conversation_id", self.conversation_id)
        _check_id("agent_id", self.agent_id)
        if self.purpose not in _PURPOSE_KIND:
            raise ValueError(f"purpose must be 'reply' or 'note', got {self.purpose!r}")
        if self.expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        # The wire format has whole seconds; normalizing here makes sign/verify round-trip.
        normalized = self.expires_at.astimezone(dt.UTC).replace(microsecond=0)
        if not 0 <= int(normalized.timestamp()) <= _MAX_EXPIRY:
            raise ValueError("expires_at is out of range")
        object.__setattr__(self, "expires_at", normalized)

    def expired(self, now: dt.datetime) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True)
class BounceToken:
    """The return path of one outbox row: which email, and which of its recipients (the index
    in the row's recipients; None for an email sent to several in one transaction)."""

    app_id: int
    outbox_id: int
    recipient: int | None
    key_id: int | None = None

    def __post_init__(self) -> None:
        _check_id("app_id", self.app_id)
        _check_id("outbox_id", self.outbox_id)
        if self.recipient is not None:
            _check_id("recipient", self.recipient)


@dataclass(frozen=True)
class LoopToken:
    """Our mark on mail we send: the app, and a digest of the Message-ID it was made for (a
    relay may rewrite the Message-ID, so the mark alone is what is checked)."""

    app_id: int
    digest: bytes
    key_id: int | None = None

    def __post_init__(self) -> None:
        _check_id("app_id", self.app_id)
        if len(self.digest) != _LOOP_DIGEST_BYTES:
            raise ValueError(f"the digest has {_LOOP_DIGEST_BYTES} bytes")


def loop_token(app_id: int, message_id: str) -> LoopToken:
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogateescape")).digest()
    return LoopToken(app_id, digest[:_LOOP_DIGEST_BYTES])


Token = CustomerToken | AgentToken
AnyToken = CustomerToken | AgentToken | BounceToken | LoopToken


def agent_token(
    app_id: int,
    conversation_id: int,
    agent_id: int,
    purpose: Purpose,
    now: dt.datetime,
    ttl: dt.timedelta = DEFAULT_AGENT_TTL,
) -> AgentToken:
    return AgentToken(app_id, conversation_id, agent_id, purpose, now + ttl)


def key_id_of(key: bytes) -> int:
    """A key's id: a 16-bit fingerprint, so rotating needs no id bookkeeping in the config."""
    return int.from_bytes(hmac.new(key, b"key id", hashlib.sha256).digest()[:2], "big")


class Keyring:
    """The current signing key and the previous keys that still verify.

    The raw secrets are never used directly: each is stretched into a token-only subkey, so the
    same configured secret can serve other purposes without a cross-protocol risk.
    """

    def __init__(self, current: bytes, previous: Sequence[bytes] = ()) -> None:
        if not current:
            raise ValueError("the signing key is empty")
        self._keys: dict[int, bytes] = {}
        for key in (current, *previous):
            if not key:
                raise ValueError("a previous key is empty")
            kid = key_id_of(key)
            subkey = hmac.new(key, b"reply tokens", hashlib.sha256).digest()
            if kid in self._keys and self._keys[kid] != subkey:
                raise ValueError("two keys share a key id; generate a new key")
            self._keys[kid] = subkey
        self.current_id = key_id_of(current)

    def __repr__(self) -> str:  # never show key material, not even in a traceback
        return f"Keyring(current_id={self.current_id}, ids={sorted(self._keys)})"

    @property
    def key_ids(self) -> frozenset[int]:
        return frozenset(self._keys)

    def _mac(self, key_id: int, payload: bytes) -> bytes:
        return hmac.new(self._keys[key_id], _DOMAIN + payload, hashlib.sha256).digest()[:MAC_BYTES]

    def sign(self, token: AnyToken) -> str:
        """The token as address text, signed with the current key."""
        payload = _encode(token, self.current_id)
        return _b32(payload + self._mac(self.current_id, payload))

    def verify(self, text: str) -> Token:
        """A reply token of either kind, authentic; expiry is not checked here (see
        `verify_agent`). A return path or a loop mark is no reply token."""
        token = self._verify(text)
        if not isinstance(token, CustomerToken | AgentToken):
            raise TokenError("wrong-kind", "not a reply address")
        return token

    def verify_bounce(self, text: str) -> BounceToken:
        token = self._verify(text)
        if not isinstance(token, BounceToken):
            raise TokenError("wrong-kind", "not a return path")
        return token

    def verify_loop(self, text: str) -> LoopToken:
        token = self._verify(text)
        if not isinstance(token, LoopToken):
            raise TokenError("wrong-kind", "not our loop mark")
        return token

    def _verify(self, text: str) -> AnyToken:
        raw = _unb32(text)
        if len(raw) < 3 + 3 + MAC_BYTES:
            raise TokenError("malformed", "the token is too short")
        payload, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        kid = int.from_bytes(payload[1:3], "big")
        if kid not in self._keys:
            raise TokenError("unknown-key", "the token was signed with a key no longer in use")
        if not hmac.compare_digest(mac, self._mac(kid, payload)):
            raise TokenError("bad-signature", "the token's signature does not match")
        # Authentic from here on: only we could have written these bytes.
        return _decode(payload, kid)

    def verify_customer(self, text: str) -> CustomerToken:
        token = self.verify(text)
        if not isinstance(token, CustomerToken):
            raise TokenError("wrong-kind", "an agent's reply address, not a customer's")
        return token

    def verify_agent(self, text: str, now: dt.datetime) -> AgentToken:
        token = self.verify(text)
        if not isinstance(token, AgentToken):
            raise TokenError("wrong-kind", "a customer's reply address, not an agent's")
        if token.expired(now):
            raise TokenExpired(token)
        return token


def _unverified_payload(text: str) -> bytes | None:
    try:
        raw = _unb32(text)
    except TokenError:
        return None
    return raw[:-MAC_BYTES] if len(raw) > 3 + MAC_BYTES else None


def peek_kind(text: str) -> Literal["customer", "agent"] | None:
    """Which kind a token claims to be, WITHOUT verifying it.

    Only for choosing a path (agent mail or customer mail); everything it says must be checked
    by `Keyring.verify` before it is acted on.
    """
    payload = _unverified_payload(text)
    if payload is None:
        return None
    if payload[0] == _KIND_CUSTOMER:
        return "customer"
    return "agent" if payload[0] in _KIND_PURPOSE else None


def peek_person_id(text: str) -> int | None:
    """The customer or agent id a token claims, WITHOUT verifying it: only ever used to pick
    whom to warn about a mail that failed verification."""
    payload = _unverified_payload(text)
    if payload is None:
        return None
    try:
        pos = 3
        for _ in range(3):
            value, pos = _read_varint(payload, pos)
    except TokenError:
        return None
    return value


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _unb32(text: str) -> bytes:
    text = text.strip().upper()
    if not text or len(text) > 120:
        raise TokenError("malformed", "not a reply token")
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise TokenError("malformed", "not a reply token") from None
    # One spelling per token: trailing padding bits or an extra character that base32 would
    # silently ignore make it a different, unsigned text.
    if _b32(raw) != text.lower():
        raise TokenError("malformed", "not a reply token")
    return raw


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise TokenError("malformed", "truncated token")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _encode(token: AnyToken, key_id: int) -> bytes:
    if isinstance(token, CustomerToken):
        kind = _KIND_CUSTOMER
        body = _varint(token.app_id) + _varint(token.conversation_id) + _varint(token.customer_id)
    elif isinstance(token, BounceToken):
        # Recipient 0 means "every recipient of the row"; n means recipients[n - 1].
        kind = _KIND_BOUNCE
        recipient = 0 if token.recipient is None else token.recipient + 1
        body = _varint(token.app_id) + _varint(token.outbox_id) + _varint(recipient)
    elif isinstance(token, LoopToken):
        kind = _KIND_LOOP
        body = _varint(token.app_id) + token.digest
    else:
        kind = _PURPOSE_KIND[token.purpose]
        body = (
            _varint(token.app_id)
            + _varint(token.conversation_id)
            + _varint(token.agent_id)
            + int(token.expires_at.timestamp()).to_bytes(4, "big")
        )
    return bytes([kind]) + key_id.to_bytes(2, "big") + body


def _decode(payload: bytes, key_id: int) -> AnyToken:
    kind, pos = payload[0], 3
    app_id, pos = _read_varint(payload, pos)
    if kind == _KIND_LOOP and pos + _LOOP_DIGEST_BYTES == len(payload):
        return LoopToken(app_id, payload[pos:], key_id)
    conversation_id, pos = _read_varint(payload, pos)
    person_id, pos = _read_varint(payload, pos)
    try:
        if kind == _KIND_CUSTOMER and pos == len(payload):
            return CustomerToken(app_id, conversation_id, person_id, key_id)
        if kind == _KIND_BOUNCE and pos == len(payload):
            recipient = person_id - 1 if person_id else None
            return BounceToken(app_id, conversation_id, recipient, key_id)
        if kind in _KIND_PURPOSE and pos + 4 == len(payload):
            expiry = int.from_bytes(payload[pos:], "big")
            expires_at = dt.datetime.fromtimestamp(expiry, dt.UTC)
            return AgentToken(
                app_id, conversation_id, person_id, _KIND_PURPOSE[kind], expires_at, key_id
            )
    except ValueError:
        pass  # an id out of range: we never sign such a token
    raise TokenError("malformed", "unknown token layout")


def reply_address(channel_address: str, token: str) -> str:
    """`support@example.com` + token -> `support+<token>@example.com`."""
    local, _, domain = channel_address.rpartition("@")
    return f"{local}+{token}@{domain}"


def bounce_address(token: str, domain: str) -> str:
    """The VERP return path `bounces+<token>@domain`."""
    return f"{BOUNCE_LOCAL_PART}+{token}@{domain}"


def bounce_token_in(address: str) -> str | None:
    """The token of a return path `bounces+<token>@domain` (any case), unverified."""
    local, at, _domain = address.strip().strip("<>").rpartition("@")
    base, plus, token = local.partition("+")
    if not at or not plus or base.lower() != BOUNCE_LOCAL_PART:
        return None
    token = token.lower()
    if not token or not all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in token):
        return None
    return token


def token_in_address(address: str, channel_addresses: Iterable[str]) -> str | None:
    """The token of `local+token@domain` when `local@domain` is one of the channel's addresses.

    Compared case-insensitively (MTAs fold case); a plus form of a foreign address, or a plus
    part that is not base32, is no token.
    """
    local, at, domain = address.strip().strip("<>").rpartition("@")
    base, plus, token = local.partition("+")
    if not at or not plus or not token:
        return None
    if f"{base}@{domain}".lower() not in {a.lower() for a in channel_addresses}:
        return None
    token = token.lower()
    if not all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in token):
        return None
    return token


def find_token(recipients: Iterable[str], channel_addresses: Iterable[str]) -> str | None:
    """The first token found among the recipients (envelope RCPT, then To/Cc as the caller
    orders them)."""
    own = list(channel_addresses)
    for address in recipients:
        token = token_in_address(address, own)
        if token is not None:
            return token
    return None
