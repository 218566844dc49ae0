"""The forgery suite: Hypothesis throws forged and valid agent mail at the gateway's inbound path
(stored as SMTP would store it, processed by `process_inbound`, notices queued by the notifier).

Forgeries: flipped token bits, tokens of another agent, of an edited conversation, of another
app, expired tokens, retired keys, the right token with a wrong From, a forwarded notification
answered by someone else, the right From with forged Authentication-Results, DKIM failing where
required, a customer token. Expected: nothing posted, every one quarantined, and a notice at the
registered address of the agent concerned. Valid replies (plain, DKIM-signed through a real DNS
server on loopback, or vouched for by the channel's edge) are all posted.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from channels.email.tokens import CustomerToken, Keyring, agent_token, reply_address
from gateway.config import AppConfig, ChannelConfig, NotificationsConfig, embedded_default
from gateway.inbound import process_inbound, store_batch
from gateway.notify import notify_agent
from gateway.runtime import Runtime
from tests.support.agent_mail import STYLES, DkimKeys, agent_mail
from tests.support.dns_server import TxtServer
from tickets import notifications, services
from tickets.inbound import IncomingMail
from tickets.models import (
    Agent,
    AuthorType,
    Channel,
    InboundMail,
    InboundState,
    Message,
    Note,
    Outbox,
)

PLAIN, SECURE, OTHER = "support@acme.test", "secure@acme.test", "help@other.test"
EDGE = "mx.acme.test"
FORGERIES = (
    "flipped-bit",
    "other-agent",
    "edited-conversation",
    "other-app",
    "expired",
    "retired-key",
    "wrong-from",
    "forwarded",
    "forged-results",
    "dkim-fails",
    "customer-token",
)
VALID = ("valid", "valid-note", "valid-dkim", "valid-edge")
TALLY: Counter[str] = Counter()


@dataclass
class World:
    rt: Runtime
    keys: DkimKeys
    app_id: int
    other_app_id: int
    ana: int
    bob: int
    conversation: int
    other_conversation: int
    customer: int
    channels: dict[str, tuple[int, int]]  # address -> (app id, channel id)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[World]:
    tmp: Path = tmp_path_factory.mktemp("forgery")
    keys = DkimKeys(tmp)
    keys.add("agents.test")
    keys.add("evil.test")
    dns = TxtServer(keys.txt_records()).start()
    base = embedded_default()
    config = base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp / 'gw.db'}",
            "data_dir": str(tmp),
            "dkim_resolver": f"127.0.0.1:{dns.port}",
            # Here every forgery is to bring its own notice at once; coalescing and the hourly
            # limit (which fold a flood of them) are tests/security/test_mail_bombing.py's.
            "notifications": NotificationsConfig(coalesce_seconds=0, max_per_hour=100_000),
            "apps": [
                AppConfig(
                    name="acme",
                    brand="Acme",
                    channels=[
                        ChannelConfig(name="support", addresses=[PLAIN]),
                        ChannelConfig(
                            name="secure",
                            addresses=[SECURE],
                            require_dkim=True,
                            trusted_authserv_id=EDGE,
                        ),
                    ],
                ),
                AppConfig(
                    name="other",
                    brand="Other",
                    channels=[ChannelConfig(name="h", addresses=[OTHER])],
                ),
            ],
        }
    )
    rt = Runtime.create(config)
    now = rt.clock()
    with rt.unit_of_work() as s:
        app, other = services.get_app(s, "acme"), services.get_app(s, "other")
        ana = services.add_agent(s, app, "ana@agents.test", "Ana Lopez", now)
        bob = services.add_agent(s, app, "bob@agents.test", "Bob Stone", now)
        olga = services.add_agent(s, other, "olga@agents.test", "Olga", now)
        sam = services.create_customer(s, app, now, name="Sam", email="sam@example.com")
        conversation, _ = services.start_conversation(s, app, sam, "email", "Parcel?", now)
        services.convert(s, conversation, ana, now, assignee=ana)
        second, _ = services.start_conversation(s, app, sam, "email", "Invoice?", now)
        ola = services.create_customer(s, other, now, name="Ola", email="ola@example.com")
        foreign, _ = services.start_conversation(s, other, ola, "email", "Hi", now)
        channels = {
            address: (channel.app_id, channel.id)
            for channel in s.scalars(select(Channel))
            for address in (a.address for a in channel.addresses)
        }
        ids = (app.id, other.id, ana.id, bob.id, conversation.id, foreign.id, sam.id)
        assert olga.id and second.id
    notifications_before(rt)
    yield World(rt, keys, *ids[:2], *ids[2:4], ids[4], ids[5], ids[6], channels)
    dns.stop()
    rt.close()


def notifications_before(rt: Runtime) -> None:
    # The setup's own events are history: fan them out and mark them sent.
    with rt.unit_of_work() as s:
        notifications.fan_out(s, rt.clock())
        for agent in s.scalars(select(Agent)):
            notifications.claim_due(s, agent.id, rt.clock())


def flip(text: str, bit: int) -> str:
    raw = bytearray(base64.b32decode(text.upper() + "=" * (-len(text) % 8)))
    bit %= len(raw) * 8
    raw[bit // 8] ^= 1 << (bit % 8)
    return base64.b32encode(bytes(raw)).decode().rstrip("=").lower()


def build(world: World, case: str, style: str, text: str, bit: int) -> tuple[str, bytes, int]:
    """(channel address, raw mail, id of the agent who must be told) for one case."""
    ring = world.rt.keyring
    now = world.rt.clock()
    channel = (
        SECURE if case in ("forged-results", "dkim-fails", "valid-dkim", "valid-edge") else PLAIN
    )
    purpose = "note" if case == "valid-note" else "reply"
    token = agent_token(world.app_id, world.conversation, world.ana, purpose, now)
    sender, notified, headers = "Ana Lopez <ana@agents.test>", world.ana, []
    signed = ring.sign(token)
    if case == "flipped-bit":
        signed = flip(signed, bit)
    elif case == "other-agent":
        signed = ring.sign(agent_token(world.app_id, world.conversation, world.bob, "reply", now))
        notified = world.bob  # the token's agent is told someone used their address
    elif case == "edited-conversation":
        # The conversation id edited by someone without the key: re-encoded, MAC unchanged.
        other = ring.sign(
            agent_token(world.app_id, world.conversation + 1, world.ana, "reply", now)
        )
        signed = other[:-20] + signed[-20:]
    elif case == "other-app":
        channel = OTHER
        signed = ring.sign(agent_token(world.app_id, world.conversation, world.ana, "reply", now))
    elif case == "expired":
        signed = ring.sign(
            agent_token(
                world.app_id, world.conversation, world.ana, "reply", now - dt.timedelta(days=31)
            )
        )
    elif case == "retired-key":
        signed = Keyring(b"the key of 2024, retired").sign(token)
    elif case in ("wrong-from", "forwarded"):
        sender = "Eve <eve@elsewhere.test>"
    elif case == "forged-results":
        # Our edge found no signature and said so on top; the sender's own claim sits below.
        headers = [
            ("Authentication-Results", f"{EDGE}; dkim=none"),
            ("Authentication-Results", f"{EDGE}; dkim=pass header.d=agents.test"),
        ]
    elif case == "customer-token":
        signed = ring.sign(CustomerToken(world.app_id, world.conversation, world.customer))
    elif case == "valid-edge":
        headers = [("Authentication-Results", f"{EDGE}; dkim=pass header.d=agents.test")]
    to = reply_address(channel, signed)
    mail = agent_mail(
        from_addr=sender,
        to_addr=to,
        body=text,
        style=style,
        headers=tuple(headers),
        subject="Fwd: New message" if case == "forwarded" else "Re: New message",
    )
    raw = mail.as_bytes()
    if case == "valid-dkim":
        raw = world.keys.sign(raw, "agents.test")
    elif case == "dkim-fails":
        raw = world.keys.sign(raw, "evil.test") if bit % 2 else world.keys.sign(raw, "agents.test")
        raw = raw if bit % 2 else raw.replace(b"Subject: Re:", b"Subject: RE:")  # altered
    return channel, raw, notified


def counts(world: World) -> tuple[int, int]:
    with world.rt.unit_of_work() as s:
        agent_messages = s.scalar(
            select(func.count(Message.id)).where(Message.author_type == AuthorType.AGENT)
        )
        notes = s.scalar(select(func.count(Note.id)))
        return int(agent_messages or 0), int(notes or 0)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=st.sampled_from(FORGERIES + VALID),
    style=st.sampled_from(STYLES),
    text=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
        min_size=1,
        max_size=200,
    ).filter(lambda t: t.strip() and not t.lstrip().startswith((">", "/"))),
    bit=st.integers(min_value=0, max_value=10_000),
)
def test_forgeries_are_never_posted_and_valid_replies_always_are(world, case, style, text, bit):
    channel, raw, notified = build(world, case, style, text, bit)
    app_id, channel_id = world.channels[channel]
    before = counts(world)
    [inbound_id] = store_batch(
        world.rt,
        [
            IncomingMail(
                raw=raw, source="smtp", envelope_to=[], app_id=app_id, channel_id=channel_id
            )
        ],
    )
    outcome = process_inbound(world.rt, inbound_id)
    assert outcome is not None
    after = counts(world)
    if case in VALID:
        TALLY["valid"] += 1
        assert outcome.state == "processed", outcome.detail
        assert after != before, outcome.detail
        TALLY["valid posted"] += 1
        return
    TALLY["forgeries"] += 1
    assert after == before, f"{case} was posted: {outcome.detail}"
    with world.rt.unit_of_work() as s:
        row = s.get(InboundMail, inbound_id)
        assert row is not None and row.state == InboundState.QUARANTINED, (case, row.reason)
        with_notice = s.scalar(select(func.count(Outbox.id)))
    ids = _notify(world)
    with world.rt.unit_of_work() as s:
        notices = s.scalars(select(Outbox).where(Outbox.id.in_(ids))).all()
        registered = s.get(Agent, notified)
        assert registered is not None
        assert [n.recipients for n in notices] == [[registered.email]], case
        assert b"not accepted" in notices[0].raw
        assert s.scalar(select(func.count(Outbox.id))) == (with_notice or 0) + 1
    TALLY["forgeries quarantined with a notice"] += 1


def _notify(world: World) -> list[int]:
    with world.rt.unit_of_work() as s:
        notifications.fan_out(s, world.rt.clock(), coalesce=dt.timedelta(0))
        due = notifications.due_agent_ids(s, world.rt.clock())
    return [i for agent_id in due for i in notify_agent(world.rt, agent_id).outbox_ids]


def test_the_tally_shows_every_forgery_rejected_and_every_valid_reply_posted():
    # Runs after the suite above (file order): the figures of this run, printed with -s.
    print(f"forgery suite: {dict(TALLY)}")
    assert TALLY["forgeries"] > 0 and TALLY["valid"] > 0
    assert TALLY["forgeries quarantined with a notice"] == TALLY["forgeries"]
    assert TALLY["valid posted"] == TALLY["valid"]
