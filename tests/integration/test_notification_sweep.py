"""The notification sweep as the scheduler runs it (fan out, then `notify_due`): what lands in
the outbox for the team when customers write, on SQLite and PostgreSQL.

A burst in one conversation is one email per agent listing all of it; an email the whole team
gets alike still carries each agent's own reply address; a notification that gains news while
its email is being rendered goes out with that news, never without it; the hourly limit holds.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import select

from channels.email.tokens import token_in_address
from gateway.config import AppConfig, ChannelConfig, NotificationsConfig, embedded_default
from gateway.notify import notify_due
from gateway.runtime import Runtime
from tests.conftest import DATABASES, PG_URL, reset_postgres
from tickets import notification_sweep, notifications, services
from tickets.models import AgentNotification, Conversation, Outbox

SUPPORT = "support@acme.test"
T0 = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
MARK = re.compile(r"x[0-9a-f]{12}(?:name|reply|note)")  # where an agent's own values go


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(params=DATABASES)
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    if request.param == "postgresql":
        assert PG_URL
        reset_postgres(PG_URL).dispose()
        url = PG_URL
    else:
        url = f"sqlite:///{tmp_path / 'gw.db'}"
    config = embedded_default().model_copy(
        update={
            "database_url": url,
            "data_dir": str(tmp_path),
            "notifications": NotificationsConfig(coalesce_seconds=60, max_per_hour=3),
            "apps": [
                AppConfig(
                    name="acme",
                    brand="Acme",
                    channels=[ChannelConfig(name="support", addresses=[SUPPORT])],
                )
            ],
        }
    )
    runtime = Runtime.create(config)
    runtime.clock = Clock()  # type: ignore[method-assign]
    with runtime.unit_of_work() as s:
        app = services.get_app(s, "acme")
        services.add_agent(s, app, "ana@agents.test", "Ana Lopez", T0)
        services.add_agent(s, app, "bob@agents.test", "Bob Stone", T0)
    try:
        yield runtime
    finally:
        runtime.close()


def clock(rt: Runtime) -> Clock:
    assert isinstance(rt.clock, Clock)
    return rt.clock


def write(rt: Runtime, texts: list[str], customer: str = "sam@example.com") -> int:
    """Customer mail into one conversation of that customer; its id."""
    now = rt.clock()
    with rt.unit_of_work() as s:
        app = services.get_app(s, "acme")
        person = services.customer_by_address(s, app, customer, now)
        conversation = s.scalars(
            select(Conversation).where(Conversation.customer_id == person.id)
        ).first()
        if conversation is None:
            conversation, _ = services.start_conversation(
                s, app, person, "email", texts[0], now, subject=f"Order of {customer}"
            )
            texts = texts[1:]
        for text in texts:
            services.add_customer_message(s, conversation, text, "email", now)
        return conversation.id


def sweep(rt: Runtime) -> list[EmailMessage]:
    """The scheduler's notification step and the actor it enqueues; the emails queued."""
    window = dt.timedelta(seconds=rt.config.notifications.coalesce_seconds)
    with rt.unit_of_work() as s:
        notifications.fan_out(s, rt.clock(), 1000, window)
    ids = notify_due(rt).outbox_ids
    with rt.reading() as s:
        raws = s.scalars(select(Outbox.raw).where(Outbox.id.in_(ids)).order_by(Outbox.id)).all()
    return [message_from_bytes(raw, policy=policy.default) for raw in raws]  # type: ignore[misc]


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(mail: EmailMessage) -> str:
    part = mail.get_body(("html",))
    assert part is not None
    return str(part.get_content())


def test_a_burst_in_one_conversation_is_one_email_per_agent_listing_all_of_it(rt):
    conversation_id = write(rt, [f"burst message {i:02d}" for i in range(50)])
    mails = sweep(rt)
    assert sorted(str(m["To"]) for m in mails) == ["ana@agents.test", "bob@agents.test"]
    for mail in mails:
        text = text_of(mail)
        assert "New messages (50) from sam@example.com" in str(mail["Subject"])
        assert all(f"burst message {i:02d}" in text for i in range(50))
        assert text.count(">> NEW <<") == 50
    # Rendered once for both, yet each answers as its own agent.
    by_agent = {}
    for mail in mails:
        token = token_in_address(str(mail["Reply-To"]), [SUPPORT])
        verified = rt.keyring.verify_agent(token, rt.clock())
        assert verified.conversation_id == conversation_id
        by_agent[str(mail["To"])] = verified.agent_id
        note = rt.keyring.verify_agent(
            token_in_address(text_of(mail).split("write to ")[1].split()[0], [SUPPORT]),
            rt.clock(),
        )
        assert (note.agent_id, note.purpose) == (verified.agent_id, "note")
    assert len(set(by_agent.values())) == 2
    # Alike but for those addresses, and no placeholder of the shared rendering is left.
    bodies = set()
    for mail in mails:
        note = text_of(mail).split("write to ")[1].split()[0]
        body = text_of(mail) + html_of(mail)
        bodies.add(body.replace(str(mail["Reply-To"]), "REPLY").replace(note, "NOTE"))
    assert len(bodies) == 1 and not MARK.search(bodies.pop())
    # Nothing is left owed: the next sweep sends nothing.
    assert sweep(rt) == []


def test_a_quiet_conversation_is_told_at_once_then_once_a_window(rt):
    write(rt, ["First"])
    assert len(sweep(rt)) == 2
    clock(rt).now += dt.timedelta(seconds=10)
    write(rt, [f"more {i}" for i in range(10)])
    assert sweep(rt) == []  # within the window: collected
    clock(rt).now += dt.timedelta(seconds=51)
    mails = sweep(rt)
    assert len(mails) == 2
    assert all(text_of(m).count(">> NEW <<") == 10 for m in mails)


def test_news_that_comes_while_an_email_is_rendered_is_in_it_or_in_the_next(rt):
    write(rt, ["Where is my parcel?"])
    with rt.unit_of_work() as s:
        notifications.fan_out(s, rt.clock())
    # The sweep reads and renders; meanwhile the customer writes again and it is collected.
    with rt.reading() as s:
        plans, postponed = notification_sweep.plan(s, rt.clock(), 3)
        snapshots = [notification_sweep.Snapshot.of(p) for p in plans]
    write(rt, ["Hello? Anyone?"])
    with rt.unit_of_work() as s:
        notifications.fan_out(s, rt.clock())
        # What was rendered no longer holds: nothing is taken.
        assert notification_sweep.claim(s, snapshots, postponed, rt.clock()) == set()
    mails = sweep(rt)
    assert len(mails) == 2
    assert all(
        "Where is my parcel?" in text_of(m) and "Hello? Anyone?" in text_of(m) for m in mails
    )


def test_over_the_hourly_limit_the_rest_is_folded_and_the_next_waits_for_the_hour(rt):
    for i in range(5):
        write(rt, [f"help {i}"], customer=f"c{i}@example.com")
    mails = sweep(rt)
    ana = [m for m in mails if str(m["To"]) == "ana@agents.test"]
    assert len(ana) == 3  # max_per_hour
    assert "3 more updates (limit of 3 emails an hour reached)" in str(ana[-1]["Subject"])
    assert sum(text_of(m).count(">> NEW <<") for m in ana) == 5
    clock(rt).now += dt.timedelta(minutes=5)
    write(rt, ["help 5"], customer="c5@example.com")
    assert sweep(rt) == []
    with rt.reading() as s:
        waiting = s.scalars(
            select(AgentNotification.due_at).where(AgentNotification.sent_at.is_(None))
        ).all()
    assert waiting and all(due == T0 + dt.timedelta(hours=1) for due in waiting)
    clock(rt).now = T0 + dt.timedelta(hours=1)
    late = sweep(rt)
    assert len(late) == 2 and all("help 5" in text_of(m) for m in late)
