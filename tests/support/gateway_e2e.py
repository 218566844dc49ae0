"""The whole gateway (`gateway.server.start`) on loopback with an SmtpSink as its relay: the
config end-to-end tests start it with, and sending it mail by SMTP as a mail server would."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from gateway.config import AppConfig, GatewayConfig, NotificationsConfig, embedded_default
from gateway.server import Services, start
from tests.support.http import RunningHttp
from tests.support.smtp_sink import SmtpSink, free_port
from tickets import services


def relay_config(
    tmp_path: Path, relay: SmtpSink, apps: list[AppConfig], **updates: Any
) -> GatewayConfig:
    """SQLite under tmp_path (unless `database_url` is given), SMTP and HTTP on free loopback
    ports, outbound mail to `relay`, and short grace periods and sweeps so tests are quick."""
    base = embedded_default()
    return base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}"}),
            "http": base.http.model_copy(update={"listen": "127.0.0.1:0"}),
            "outbound": base.outbound.model_copy(
                update={"transport": "smtp", "host": relay.host, "port": relay.port}
            ),
            "delivery": base.delivery.model_copy(update={"email_grace_seconds": 1}),
            # The customer writes right after an agent was told of something: a short window.
            "notifications": NotificationsConfig(coalesce_seconds=1),
            "sweep_seconds": 0.3,
            "worker_threads": 2,
            "apps": apps,
            **updates,
        }
    )


def send(gateway: Services, msg: EmailMessage | bytes, *rcpt: str, mail_from: str = "") -> None:
    """Deliver to the gateway's SMTP server (the envelope sender from the From if not given)."""
    port = int(gateway.runtime.config.smtp.listen.rpartition(":")[2])
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        if isinstance(msg, bytes):
            client.sendmail(mail_from, list(rcpt), msg)
        else:
            client.send_message(msg, to_addrs=list(rcpt))


@contextmanager
def whole_gateway(
    tmp_path: Path, agent: str, name: str, role: str = "agent"
) -> Iterator[tuple[Services, RunningHttp]]:
    """The whole embedded gateway (SMTP, HTTP, workers) on free loopback ports, with one agent
    of app demo; its HTTP server as a RunningHttp for the console helpers."""
    base = embedded_default()
    config = base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}"}),
            "http": base.http.model_copy(update={"listen": "127.0.0.1:0"}),
            "sweep_seconds": 0.5,
            "worker_threads": 2,
        }
    )
    running = start(config, "all")
    try:
        (line,) = [x for x in running.listening if x.startswith("http: ")]
        with running.runtime.unit_of_work() as s:
            app = services.get_app(s, "demo")
            services.add_agent(s, app, agent, name, running.runtime.clock(), role=role)
        yield running, RunningHttp(running.runtime, line.removeprefix("http: "))
    finally:
        running.stop()
