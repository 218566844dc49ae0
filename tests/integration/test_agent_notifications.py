"""Which agent is told what: the fan-out of events into notifications, preferences, digests,
coalescing and the hourly limit, and the rendered emails (team voice, conversation, ticket
layer, notes, reply addresses)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from channels.email.notify import AgentTemplates, Sender, compose_notifications
from channels.email.tokens import Keyring, token_in_address
from tickets import notifications, services
from tickets.errors import InvalidValue
from tickets.models import Agent, AgentNotification, App, Event

RING = Keyring(b"notification test key")
SENDER = Sender(keyring=RING, channel_address="support@acme.test")
TEMPLATES = AgentTemplates()


@pytest.fixture
def team(session: Session, app: App, now: dt.datetime):
    ana = services.add_agent(session, app, "ana@agents.test", "Ana Lopez", now)
    bob = services.add_agent(session, app, "bob@agents.test", "Bob Stone", now)
    customer = services.create_customer(session, app, now, name="Sam", email="sam@example.com")
    conversation, _ = services.start_conversation(
        session, app, customer, "email", "My parcel never arrived", now, subject="Parcel"
    )
    fan_out(session, now)  # what happened before the test is history
    return ana, bob, conversation


def fan_out(session, now) -> list[tuple[str, str]]:
    """The pending notifications (headline kind, agent) after a fan-out; then they are history
    from long enough ago not to hold the next one back."""
    notifications.fan_out(session, now)
    rows = session.scalars(
        select(AgentNotification)
        .where(AgentNotification.sent_at.is_(None))
        .order_by(AgentNotification.id)
    ).all()
    out = [(r.kind, session.get(Agent, r.agent_id).email) for r in rows]
    for r in rows:
        r.sent_at = now - dt.timedelta(hours=1)
    session.flush()
    return out


def test_an_unassigned_customer_message_tells_the_whole_team(session, team, now):
    _ana, _bob, conversation = team
    services.add_customer_message(session, conversation, "Any news?", "email", now)
    assert sorted(fan_out(session, now)) == [
        ("new_message", "ana@agents.test"),
        ("new_message", "bob@agents.test"),
    ]


def test_an_assigned_ticket_tells_only_the_assignee_and_never_the_actor(session, team, now):
    ana, bob, conversation = team
    ticket = services.convert(session, conversation, bob, now, assignee=ana)
    assert fan_out(session, now) == [("assigned", "ana@agents.test")]
    services.add_customer_message(session, conversation, "Any news?", "email", now)
    assert fan_out(session, now) == [("new_message", "ana@agents.test")]
    services.assign(session, ticket, bob, services.Actor.agent(bob), now)  # bob takes it himself
    assert fan_out(session, now) == []


def test_auto_replies_and_wakes_by_customer_message_notify_nobody_twice(session, team, now):
    ana, _bob, conversation = team
    services.add_customer_message(
        session, conversation, "Out of office", "email", now, is_auto_reply=True
    )
    assert fan_out(session, now) == []
    services.snooze(
        session, conversation, now + dt.timedelta(hours=1), services.Actor.agent(ana), now
    )
    services.add_customer_message(session, conversation, "Hello?", "email", now)
    assert sorted(k for k, _ in fan_out(session, now)) == ["new_message", "new_message"]
    services.snooze(
        session, conversation, now + dt.timedelta(hours=1), services.Actor.agent(ana), now
    )
    services.unsnooze(session, conversation, services.SYSTEM, now, reason="snooze ended")
    assert sorted(fan_out(session, now)) == [
        ("snooze_woke", "ana@agents.test"),
        ("snooze_woke", "bob@agents.test"),
    ]


def test_sla_and_delivery_events_reach_the_assignee_in_one_email(session, team, now, app):
    ana, _bob, conversation = team
    ticket = services.convert(session, conversation, ana, now, assignee=ana)
    fan_out(session, now)
    for kind in ("sla.warning", "sla.breached", "outbox.failed"):
        services.record(
            session,
            app_id=app.id,
            kind=kind,
            actor=services.SYSTEM,
            now=now,
            conversation=conversation,
            ticket=ticket,
            timer="first_response",
            due_at=now.isoformat(),
            reason="550 no such user",
        )
    # One email, named after the weightiest; the others are lines of it.
    notifications.fan_out(session, now)
    [draft] = _drafts(session, ana, now)
    assert "SLA breached (first response)" in draft.rendered.subject
    text = draft.rendered.text
    assert "SLA warning: the first response is due" in text
    assert "could not be delivered: 550 no such user" in text


def test_an_event_is_fanned_out_once(session, team, now):
    _ana, _bob, conversation = team
    services.add_customer_message(session, conversation, "Hi", "email", now)
    assert notifications.fan_out(session, now) == 2
    assert notifications.fan_out(session, now) == 0


def test_preferences_choose_kinds_and_digest_but_rejections_always_come_at_once(
    session, team, now, app
):
    ana, bob, conversation = team
    notifications.set_preferences(bob, events=["assigned"])
    notifications.set_preferences(ana, digest=True, digest_hour=8)
    services.add_customer_message(session, conversation, "Hi", "email", now)
    services.record(
        session,
        app_id=app.id,
        kind="agent_mail.rejected",
        actor=services.SYSTEM,
        now=now,
        agent_id=bob.id,
        reason="sender",
        detail="not yours",
    )
    notifications.fan_out(session, now)
    rows = session.scalars(
        select(AgentNotification).where(AgentNotification.sent_at.is_(None))
    ).all()
    by_agent = {(r.agent_id, r.kind): r for r in rows}
    assert set(by_agent) == {(ana.id, "new_message"), (bob.id, "reply_rejected")}
    assert by_agent[(ana.id, "new_message")].digest
    assert by_agent[(ana.id, "new_message")].due_at == dt.datetime(
        2026, 11, 25, 8, 0, tzinfo=dt.UTC
    )
    assert by_agent[(bob.id, "reply_rejected")].due_at == now
    assert notifications.due_agent_ids(session, now) == [bob.id]
    with pytest.raises(InvalidValue):
        notifications.set_preferences(ana, events=["everything"])


def _drafts(session, agent, now):
    rows = list(notifications.claim_due(session, agent.id, now))
    return compose_notifications(session, agent, rows, SENDER, TEMPLATES, now)


def test_a_new_message_notification_shows_the_conversation_ticket_and_notes(session, team, now):
    ana, bob, conversation = team
    ticket = services.convert(session, conversation, bob, now, assignee=ana, priority="high")
    fan_out(session, now)
    services.add_note(session, conversation, bob, "Courier says lost", now)
    message = services.add_customer_message(session, conversation, "Where is it?", "email", now)
    notifications.fan_out(session, now)
    [draft] = _drafts(session, ana, now)
    assert "New message from Sam" in draft.rendered.subject
    assert draft.to == "ana@agents.test"
    assert f"#{ticket.number}" in draft.rendered.subject and "Parcel" in draft.rendered.subject
    for text in (draft.rendered.text, draft.rendered.html):
        assert "Where is it?" in text and "My parcel never arrived" in text
        assert "Courier says lost" in text
        assert "priority high" in text.replace("<strong>", "").replace("</strong>", "")
        assert "Reply above this line" in text
    token = token_in_address(draft.reply_to, ["support@acme.test"])
    verified = RING.verify_agent(token, now)
    assert (verified.agent_id, verified.conversation_id, verified.purpose) == (
        ana.id,
        conversation.id,
        "reply",
    )
    assert verified.expires_at == (now + dt.timedelta(days=30)).replace(microsecond=0)
    assert message.id


def test_html_escapes_what_people_wrote(session, team, now):
    ana, _bob, conversation = team
    services.add_customer_message(session, conversation, "<script>alert(1)</script>", "email", now)
    notifications.fan_out(session, now)
    [draft] = _drafts(session, ana, now)
    assert "<script>" not in draft.rendered.html and "&lt;script&gt;" in draft.rendered.html
    assert "<script>alert(1)</script>" in draft.rendered.text


def test_a_digest_collects_the_due_rows_into_one_email(session, team, now):
    ana, _bob, conversation = team
    notifications.set_preferences(ana, digest=True, digest_hour=8)
    services.add_customer_message(session, conversation, "One", "email", now)
    services.add_customer_message(session, conversation, "Two", "email", now)
    notifications.fan_out(session, now)
    later = now + dt.timedelta(days=1)
    [draft] = _drafts(session, ana, later)
    # One conversation, one entry, listing both messages.
    assert draft.rendered.subject == "[Acme] Your digest: 1 update"
    text = draft.rendered.text
    assert draft.reply_to is None and text.count("New messages (2) from Sam") == 1
    assert ">> NEW << Sam (email, 2026-11-24 10:00 UTC):\n  One" in text and "  Two" in text


def test_the_rejection_notice_says_why_and_offers_no_reply_address(session, team, now, app):
    ana, _bob, conversation = team
    services.record(
        session,
        app_id=app.id,
        kind="agent_mail.rejected",
        actor=services.SYSTEM,
        now=now,
        conversation=conversation,
        agent_id=ana.id,
        reason="sender",
        detail="it came from eve@evil.test",
        inbound_id=7,
        mail_from="eve@evil.test",
        subject="Re: Parcel",
    )
    notifications.fan_out(session, now)
    [draft] = _drafts(session, ana, now)
    assert draft.to == "ana@agents.test" and draft.reply_to is None
    assert "not accepted" in draft.rendered.subject
    assert (
        "it came from eve@evil.test" in draft.rendered.text
        and "quarantine show 7" in draft.rendered.text
    )


def test_every_agent_template_renders_for_every_kind(session, team, now, app):
    ana, bob, conversation = team
    services.convert(session, conversation, bob, now, assignee=ana)
    fan_out(session, now)
    kinds = {
        "message.customer": {},
        "ticket.assigned": {"assignee": "ana@agents.test"},
        "conversation.woke": {"reason": "snooze ended"},
        "sla.warning": {"timer": "first_response"},
        "sla.breached": {"timer": "resolution"},
        "outbox.failed": {"reason": "550"},
        "agent_mail.rejected": {"agent_id": ana.id, "detail": "x"},
    }
    drafts = []
    for hour, (kind, data) in enumerate(kinds.items()):
        at = now + dt.timedelta(hours=hour)  # each after the window of the one before
        services.record(
            session,
            app_id=app.id,
            kind=kind,
            actor=services.SYSTEM,
            now=at,
            conversation=conversation,
            **data,
        )
        notifications.fan_out(session, at)
        drafts += _drafts(session, ana, at)
    assert len(drafts) == len(kinds)
    assert all(
        d.rendered.subject.startswith("[Acme] ") and d.rendered.text.strip() and d.rendered.html
        for d in drafts
    )
    assert len({d.rendered.subject for d in drafts}) == len(kinds)
    assert not session.scalars(select(Event).where(Event.notified_at.is_(None))).all()


def test_the_cli_sets_notification_preferences_and_verified_addresses(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(tmp_path / "data")

    def gw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert gw("agents", "add", "ana@agents.test", "--name", "Ana").returncode == 0
    out = gw("agents", "notify", "ana@agents.test", "--events", "new_message,assigned", "--digest")
    assert out.returncode == 0, out.stderr
    assert "assigned, new_message, reply_rejected; daily digest at 08:00 UTC" in out.stdout
    assert gw("agents", "address", "ana@agents.test", "ana@home.test").returncode == 0
    [agent] = json.loads(gw("agents", "list", "--json").stdout)
    assert {"address": "ana@home.test", "verified": True} in agent["addresses"]
    assert agent["notifications"]["digest"] is True
    bad = gw("agents", "notify", "ana@agents.test", "--events", "everything")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "unknown notification" in bad.stderr


def test_a_backlog_is_claimed_in_batches_and_each_row_once(session, team, now, app):
    ana, _bob, _conversation = team
    customer = services.create_customer(session, app, now, name="Kim", email="kim@example.com")
    for i in range(notifications.CLAIM_BATCH + 10):
        services.start_conversation(session, app, customer, "email", f"message {i}", now)
    notifications.fan_out(session, now, limit=1000)
    first = notifications.claim_due(session, ana.id, now)
    second = notifications.claim_due(session, ana.id, now)
    assert (len(first), len(second)) == (notifications.CLAIM_BATCH, 10)
    assert not {r.id for r in first} & {r.id for r in second}
    assert notifications.claim_due(session, ana.id, now) == []


def test_a_real_sla_warning_and_breach_reach_the_assignee(tmp_path):
    """Through the SLA machinery itself (tickets/sla.py fires the events), not synthetic ones."""
    from gateway.config import SlaPolicyConfig, embedded_default
    from gateway.runtime import Runtime
    from tickets import sla
    from tickets.models import SlaTimer

    base = embedded_default()
    fast = [SlaPolicyConfig(name="fast", first_response="60s", warn_at=0.5)]
    config = base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "apps": [base.apps[0].model_copy(update={"sla_policies": fast})],
        }
    )
    rt = Runtime.create(config)
    t0 = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
    try:
        with rt.unit_of_work() as s:
            app = services.get_app(s, "demo")
            ana = services.add_agent(s, app, "ana@agents.test", "Ana", t0)
            customer = services.create_customer(s, app, t0, name="Sam", email="sam@example.com")
            conversation, _ = services.start_conversation(s, app, customer, "email", "Hi", t0)
            services.convert(s, conversation, ana, t0, assignee=ana)
            notifications.fan_out(s, t0)
            notifications.claim_due(s, ana.id, t0)
            kinds = []
            for seconds in (31, 61):
                at = t0 + dt.timedelta(seconds=seconds)
                for timer_id in sla.due_timer_ids(s, at, 100):
                    kinds.append(sla.fire_due(s, timer_id, at))
            assert kinds == ["sla.warning", "sla.breached"]
            later = t0 + dt.timedelta(seconds=62)
            notifications.fan_out(s, later)
            rows = list(notifications.claim_due(s, ana.id, later))
            [draft] = compose_notifications(s, ana, rows, SENDER, TEMPLATES, later)
            assert [(r.kind, r.event_count) for r in rows] == [("sla_breach", 2)]
            assert "SLA breached (first response)" in draft.rendered.subject
            assert "was due 2026-11-24 09:01 UTC" in draft.rendered.text
            assert "SLA warning: the first response is due" in draft.rendered.text
            assert s.scalars(select(SlaTimer)).one().state.value == "breached"
    finally:
        rt.close()


_outbox_ids = iter(range(1, 1_000_000))


def _mail(session, agent, at, per_hour=notifications.DEFAULT_PER_HOUR):
    """What the actor does, short of the outbox: claim within the limit, compose, and mark the
    rows with an outbox id (one per email)."""
    claimed = notifications.take_due(session, agent.id, at, per_hour)
    drafts = compose_notifications(
        session,
        agent,
        claimed.single,
        SENDER,
        TEMPLATES,
        at,
        folded=claimed.folded,
        limit=None if claimed.room_at is None else (per_hour, claimed.room_at),
    )
    for draft in drafts:
        outbox_id = next(_outbox_ids)
        for row in draft.rows:
            row.outbox_id = outbox_id
    session.flush()
    return drafts


def test_a_quiet_conversation_is_told_at_once_then_once_a_window_with_everything_new(
    session, team, now
):
    ana, _bob, conversation = team
    window = dt.timedelta(seconds=60)

    def write(text, at):
        services.add_customer_message(session, conversation, text, "email", at)
        notifications.fan_out(session, at, coalesce=window)

    write("First", now)
    [first] = _mail(session, ana, now)
    assert "First" in first.rendered.text
    for second in (10, 20, 30):
        write(f"Then at {second}s", now + dt.timedelta(seconds=second))
    assert _mail(session, ana, now + dt.timedelta(seconds=59)) == []
    [batch] = _mail(session, ana, now + window)
    assert "New messages (3) from Sam" in batch.rendered.subject
    assert batch.rendered.text.count(">> NEW <<") == 3
    assert all(
        f">> NEW << Sam (email, 2026-11-24 10:00 UTC):\nThen at {s}s" in batch.rendered.text
        for s in (10, 20, 30)
    )
    # Ana's reply address in it still names the conversation.
    token = token_in_address(batch.reply_to, ["support@acme.test"])
    assert RING.verify_agent(token, now).conversation_id == conversation.id
    # A quiet hour later, the next one is prompt again.
    later = now + dt.timedelta(hours=1)
    write("Back again", later)
    assert len(_mail(session, ana, later)) == 1


def test_rows_collect_events_instead_of_multiplying(session, team, now):
    ana, bob, conversation = team
    for i in range(40):
        services.add_customer_message(session, conversation, f"flood {i}", "chat", now)
    assert notifications.fan_out(session, now) == 80  # 40 messages, two agents
    pending = session.scalars(
        select(AgentNotification).where(AgentNotification.sent_at.is_(None))
    ).all()
    assert sorted((r.agent_id, r.event_count, len(r.events)) for r in pending) == [
        (ana.id, 40, 40),
        (bob.id, 40, 40),
    ]


def test_being_assigned_does_not_wait_for_the_window(session, team, now):
    ana, bob, conversation = team
    services.add_customer_message(session, conversation, "Hello", "email", now)
    notifications.fan_out(session, now)
    assert len(_mail(session, ana, now)) == 1
    soon = now + dt.timedelta(seconds=5)
    services.add_customer_message(session, conversation, "Anyone?", "email", soon)
    notifications.fan_out(session, soon)
    assert _mail(session, ana, soon) == []  # a new message waits for the window
    services.convert(session, conversation, bob, soon, assignee=ana)
    notifications.fan_out(session, soon)
    [draft] = _mail(session, ana, soon)  # being assigned does not, and brings the message along
    assert "Assigned to you" in draft.rendered.subject and ">> NEW << Sam" in draft.rendered.text


def test_over_the_hourly_limit_the_rest_is_folded_into_one_then_waits(session, team, now, app):
    ana, _bob, _conversation = team
    customers = [
        services.create_customer(session, app, now, name=f"C{i}", email=f"c{i}@example.com")
        for i in range(6)
    ]
    for i, customer in enumerate(customers[:5]):
        services.start_conversation(session, app, customer, "email", f"help {i}", now)
    notifications.fan_out(session, now)
    drafts = _mail(session, ana, now, per_hour=3)
    assert len(drafts) == 3
    folded = drafts[-1]
    assert folded.rendered.subject == "[Acme] 3 more updates (limit of 3 emails an hour reached)"
    assert sum(d.rendered.text.count(">> NEW <<") for d in drafts) == 5
    assert "can come from 2026-11-24 11:00 UTC" in folded.rendered.text
    # The hour is full: a new conversation waits until the first email of the hour is an hour
    # old, and is not lost meanwhile.
    soon = now + dt.timedelta(minutes=5)
    services.start_conversation(session, app, customers[5], "email", "help 5", soon)
    notifications.fan_out(session, soon)
    assert _mail(session, ana, soon, per_hour=3) == []
    assert ana.id not in notifications.due_agent_ids(session, soon)
    hour = now + dt.timedelta(hours=1)
    assert ana.id in notifications.due_agent_ids(session, hour)
    [late] = _mail(session, ana, hour, per_hour=3)
    assert "help 5" in late.rendered.text
