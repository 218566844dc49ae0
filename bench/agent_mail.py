"""Agent mail benchmark: what verifying and posting an agent's answer costs, beside a customer's
mail through the same inbound path, in one run.

    python bench/agent_mail.py [--count 300]

On a fresh SQLite database it stores `count` mails of each kind (as SMTP would) and processes
them with `process_inbound`, printing mails per second and milliseconds per mail for:

1. customer replies to a conversation (threaded by In-Reply-To): the limit, the inbound path
   without anything agent-specific;
2. valid agent answers (token, verified From, a command line, text posted as a reply);
3. valid agent answers on a `require_dkim` channel, DKIM-signed (dkimpy), the key fetched from
   a DNS server on loopback;
4. forged agent answers (a wrong From): rejected, quarantined, the rejection event recorded.

And the notification side: the events above fanned out into notification rows, and the rows
rendered into outbox emails, beside the limit of composing and queueing as many emails whose
text is given (no deciding who, no context queries, no templates).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import select

from channels.email.outbox import queue_email
from channels.email.tokens import agent_token, reply_address
from gateway.config import AppConfig, ChannelConfig, embedded_default
from gateway.inbound import process_inbound, store_batch
from gateway.notify import notify_agent
from gateway.runtime import Runtime
from tests.support.agent_mail import DkimKeys, agent_mail
from tests.support.dns_server import TxtServer
from tickets import notifications, services
from tickets.inbound import IncomingMail
from tickets.models import Channel, ThreadRef

PLAIN, SECURE = "support@acme.test", "secure@acme.test"


def rate(label: str, count: int, run: Callable[[int], None]) -> None:
    start = time.perf_counter()
    for i in range(count):
        run(i)
    seconds = time.perf_counter() - start
    print(f"{label:<58} {count / seconds:8.1f}/s {1000 * seconds / count:8.2f} ms each")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300)
    count = parser.parse_args().count
    tmp = Path(tempfile.mkdtemp(prefix="bench-agent-mail-"))
    keys = DkimKeys(tmp)
    keys.add("agents.test")
    dns = TxtServer(keys.txt_records()).start()
    base = embedded_default()
    config = base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp / 'gw.db'}",
            "data_dir": str(tmp),
            "dkim_resolver": f"127.0.0.1:{dns.port}",
            "apps": [
                AppConfig(
                    name="acme",
                    brand="Acme",
                    channels=[
                        ChannelConfig(name="support", addresses=[PLAIN]),
                        ChannelConfig(name="secure", addresses=[SECURE], require_dkim=True),
                    ],
                )
            ],
        }
    )
    rt = Runtime.create(config)
    now = rt.clock()
    with rt.unit_of_work() as s:
        app = services.get_app(s, "acme")
        ana = services.add_agent(s, app, "ana@agents.test", "Ana", now)
        sam = services.create_customer(s, app, now, name="Sam", email="sam@example.com")
        conversation, first = services.start_conversation(s, app, sam, "email", "Parcel?", now)
        first.email_message_id = "<first@example.com>"
        services.convert(s, conversation, ana, now, assignee=ana)
        s.add(
            ThreadRef(
                app_id=app.id,
                message_id_header="<first@example.com>",
                conversation_id=conversation.id,
                message_id=first.id,
                created_at=now,
            )
        )
        channels = {
            a.address: (c.app_id, c.id) for c in s.scalars(select(Channel)) for a in c.addresses
        }
        app_id, ana_id, conversation_id = app.id, ana.id, conversation.id
    token = rt.keyring.sign(agent_token(app_id, conversation_id, ana_id, "reply", now))

    def feed(channel: str, raw: bytes) -> None:
        a, c = channels[channel]
        [row] = store_batch(rt, [IncomingMail(raw=raw, source="smtp", app_id=a, channel_id=c)])
        outcome = process_inbound(rt, row)
        assert outcome is not None

    def customer(i: int) -> None:
        msg = agent_mail(
            from_addr="sam@example.com",
            to_addr=PLAIN,
            body=f"Still waiting {i}",
            headers=(("In-Reply-To", "<first@example.com>"),),
        )
        feed(PLAIN, msg.as_bytes())

    def agent(i: int) -> None:
        msg = agent_mail(
            from_addr="ana@agents.test",
            to_addr=reply_address(PLAIN, token),
            body=f"/tag bench\nOn its way {i}",
        )
        feed(PLAIN, msg.as_bytes())

    def agent_dkim(i: int) -> None:
        msg = agent_mail(
            from_addr="ana@agents.test",
            to_addr=reply_address(SECURE, token),
            body=f"Signed answer {i}",
        )
        feed(SECURE, keys.sign(msg.as_bytes(), "agents.test"))

    def forged(i: int) -> None:
        msg = agent_mail(
            from_addr="eve@evil.test", to_addr=reply_address(PLAIN, token), body=f"Forged {i}"
        )
        feed(PLAIN, msg.as_bytes())

    print(f"agent mail benchmark, {count} mails per line, SQLite at {tmp}")
    rate("1. customer replies (the limit: plain inbound path)", count, customer)
    rate("2. agent answers (token, From, a command, posted)", count, agent)
    rate("3. agent answers, DKIM-signed, key from loopback DNS", count, agent_dkim)
    rate("4. forged agent answers (rejected, quarantined, event)", count, forged)

    with rt.unit_of_work() as s:
        start = time.perf_counter()
        rows = notifications.fan_out(s, rt.clock(), 100_000)
        fan = time.perf_counter() - start
    print(
        f"{'fan-out of the events above into notification rows':<58} "
        f"{rows / fan:8.1f}/s {1000 * fan / max(rows, 1):8.2f} ms each ({rows} rows)"
    )
    start = time.perf_counter()
    sent = 0
    more = True
    while more:
        notified = notify_agent(rt, ana_id)
        sent += len(notified.outbox_ids)
        more = notified.more
    seconds = time.perf_counter() - start
    print(
        f"{'notifications rendered into the outbox':<58} "
        f"{sent / seconds:8.1f}/s {1000 * seconds / max(sent, 1):8.2f} ms each ({sent})"
    )
    # The limit: the same number of emails composed and queued without deciding or rendering.
    start = time.perf_counter()
    with rt.unit_of_work() as s:
        for i in range(max(sent, 1)):
            queue_email(
                s,
                app_id=app_id,
                from_address=PLAIN,
                from_name="Acme Support",
                to=["ana@agents.test"],
                subject=f"New message {i}",
                text="Hello\n" * 40,
                html="<p>Hello</p>" * 40,
                now=rt.clock(),
                kind="agent_notification",
            )
    seconds = time.perf_counter() - start
    print(
        f"{'limit: as many emails composed and queued, no rendering':<58} "
        f"{max(sent, 1) / seconds:8.1f}/s {1000 * seconds / max(sent, 1):8.2f} ms each"
    )
    dns.stop()
    rt.close()


if __name__ == "__main__":
    main()
