"""`gateway serve` and `gateway worker`: start the parts of the gateway a role needs, stop cleanly.

The broker is set here, before the actor module is imported, and every part registers a start
and a stop, so SIGTERM or Ctrl-C stops them in reverse order.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from gateway.broker import setup_broker
from gateway.config import ConfigError, GatewayConfig, SmtpConfig
from gateway.runtime import Runtime

if TYPE_CHECKING:
    import dramatiq

log = logging.getLogger(__name__)

Role = Literal["all", "ingress", "worker"]


@dataclass
class Services:
    """The running parts, each with its stop function, in start order."""

    runtime: Runtime
    stops: list[tuple[str, Callable[[], None]]] = field(default_factory=list)
    listening: list[str] = field(default_factory=list)

    def stop(self) -> None:
        for name, stop in reversed(self.stops):
            try:
                stop()
            except Exception:
                log.exception("stopping %s failed", name)
        self.stops.clear()
        self.runtime.close()


def start(config: GatewayConfig, role: Role = "all") -> Services:
    """Start what `role` needs; a part that cannot start stops those before it and raises
    ConfigError naming the key to change."""
    broker = setup_broker(config.broker_url, config.broker_namespace)
    runtime = Runtime.create(config)
    from gateway import actors  # after setup_broker: actors bind to the current broker

    actors.bind(runtime)
    services = Services(runtime)
    try:
        _start_roles(services, broker, role)
    except BaseException:
        services.stop()  # what started before must not keep the process alive
        raise
    return services


def _start_roles(services: Services, broker: dramatiq.Broker, role: Role) -> None:
    from gateway import actors

    config = services.runtime.config
    if role in ("all", "ingress"):
        _start_smtp(services, actors.enqueue_inbound)
        _start_imap(services, actors.process_inbound.send)
        _start_http(services)
    if role in ("all", "worker"):
        import dramatiq

        worker = dramatiq.Worker(broker, worker_threads=config.worker_threads)
        worker.start()
        services.stops.append(("worker", worker.stop))
        services.listening.append(
            f"workers: {config.worker_threads} threads on {config.broker_url}"
        )
    if role in ("all", "worker"):
        from gateway.scheduler import Scheduler

        scheduler = Scheduler(services.runtime)
        scheduler.start()
        services.stops.append(("scheduler", scheduler.stop))
        services.listening.append(f"scheduler: sweep every {config.sweep_seconds:g}s")


def _start_smtp(services: Services, enqueue: Callable[[list[int]], object]) -> None:
    from channels.email.smtp import (
        BatchWriter,
        InboundController,
        InboundHandler,
        SmtpLimits,
    )
    from gateway.inbound import RouteTable, store_group
    from tickets.inbound import IncomingMail

    runtime = services.runtime
    smtp = runtime.config.smtp
    context = _smtp_tls(smtp)

    def store(mails: Sequence[IncomingMail]) -> list[int | Exception]:
        stored = store_group(runtime, mails)
        for mail, row in zip(mails, stored, strict=True):
            if isinstance(row, int):
                log.info(
                    "inbound %s accepted: smtp from %s to %s",
                    row,
                    mail.envelope_from or "<>",
                    ", ".join(mail.envelope_to),
                )
        return stored

    writer = BatchWriter(
        store,
        on_stored=enqueue,
        group_commit_seconds=smtp.group_commit_ms / 1000,
    )
    services.stops.append(("smtp batch writer", writer.close))
    limits = SmtpLimits(
        max_message_bytes=smtp.max_message_bytes,
        max_recipients=smtp.max_recipients,
        max_header_bytes=smtp.max_header_bytes,
        max_received_headers=smtp.max_received_headers,
        max_connections=smtp.max_connections,
        max_connections_per_peer=smtp.max_connections_per_peer,
        idle_timeout_seconds=smtp.idle_timeout_seconds,
        idle_evict_seconds=smtp.idle_evict_seconds,
        max_pending_data_bytes=smtp.max_pending_data_bytes,
        refusal_log_seconds=smtp.refusal_log_seconds,
    )

    routes = RouteTable(runtime)
    services.stops.append(("smtp routes", routes.start_refreshing(smtp.routes_refresh_seconds)))
    handler = InboundHandler(routes, writer, limits)
    host, _, port = smtp.listen.rpartition(":")
    controller = InboundController(
        handler, host, int(port), server_hostname=smtp.hostname, tls_context=context
    )
    try:
        controller.start()
    except OSError as exc:  # aiosmtpd hands on what binding the port raised
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"smtp.listen: cannot listen on {smtp.listen}: {reason}") from None
    services.stops.append(("smtp", controller.stop))
    services.listening.append(f"smtp: {smtp.listen}" + (" (STARTTLS)" if context else ""))


def _smtp_tls(smtp: SmtpConfig) -> ssl.SSLContext | None:
    """The STARTTLS context of the configured files; a file that cannot be used is a
    ConfigError saying which and why."""
    from channels.email.smtp import tls_context

    if not (smtp.tls_cert_file and smtp.tls_key_file):
        return None
    for key, path in (("tls_cert_file", smtp.tls_cert_file), ("tls_key_file", smtp.tls_key_file)):
        try:
            with open(path, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            raise ConfigError(f"smtp.{key}: cannot read {path}: {exc.strerror}") from None
    try:
        return tls_context(smtp.tls_cert_file, smtp.tls_key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            "smtp.tls_cert_file, smtp.tls_key_file: not a PEM certificate and its private key"
            f" ({exc.reason or exc})"
        ) from None


def _start_imap(services: Services, enqueue: Callable[[int], object]) -> None:
    from gateway.inbound import imap_pollers

    for poller in imap_pollers(services.runtime, enqueue):
        stop = threading.Event()
        thread = threading.Thread(
            target=poller.run, args=(stop,), name=f"imap-{poller.account.name}", daemon=True
        )
        thread.start()

        def halt(stop: threading.Event = stop, thread: threading.Thread = thread) -> None:
            stop.set()
            thread.join(timeout=10)

        services.stops.append((f"imap {poller.account.name}", halt))
        services.listening.append(
            f"imap: {poller.account.username} at {poller.account.where} ({poller.account.folder})"
        )


def _start_http(services: Services) -> None:
    from gateway.http.app import create_app
    from gateway.http.server import HttpError, HttpServer

    try:
        server = HttpServer(create_app(services.runtime), services.runtime.config.http.listen)
        server.start()
    except HttpError as exc:
        raise ConfigError(f"http.listen: {exc}") from None
    services.stops.append(("http", server.stop))
    services.listening.append(f"http: {server.url}")


def run_forever(config: GatewayConfig, role: Role, echo: Callable[[str], None]) -> None:
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log_to_stderr()
    services = start(config, role)
    try:
        echo(f"gateway ({role}) running; database {_safe_url(config.resolved_database_url)}")
        for line in services.listening:
            echo(f"  {line}")
        for line in where_to_look(config, services.listening):
            echo(line)
        echo("stop with Ctrl-C or SIGTERM")
        stopping.wait()
        echo("stopping...")
    finally:
        services.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    echo("stopped")


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def where_to_look(config: GatewayConfig, listening: list[str]) -> list[str]:
    """What a person starting the gateway wants next: the console's address, and where mail
    goes in; then the log lines that follow."""

    def bound(kind: str) -> str | None:
        return next((x.split(": ", 1)[1] for x in listening if x.startswith(kind + ": ")), None)

    lines = []
    http = bound("http")
    if http is not None:
        lines.append(f"console: {http}/  (the widget: {http}/widget/<app>)")
    smtp = bound("smtp")
    if smtp is not None:
        addresses = [a for app in config.apps for ch in app.channels for a in ch.addresses]
        to = f" for {', '.join(addresses)}" if addresses else ""
        lines.append(f"mail in: SMTP {smtp.split()[0]}{to}")
    lines.append("log (stderr): one line per mail accepted, processed and sent, with its id")
    return lines


_LOGGERS = ("gateway", "channels", "tickets")


def log_to_stderr() -> None:
    """Our own loggers at INFO on stderr (what happens to each mail); libraries stay at their
    warnings. Only the command does this: tests and embedders keep their own logging."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
            logger.addHandler(handler)
        logger.setLevel(logging.INFO)
