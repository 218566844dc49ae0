"""The brokers the broker tests run on: the in-memory stub always, and the machine's Redis and
RabbitMQ when GATEWAY_TEST_REDIS_URL / GATEWAY_TEST_AMQP_URL name them.

Those two servers are shared by every test process (pytest-xdist workers, another checkout's
run): a test purges their queues (`broker.flush_all()`) and would purge another test's messages.
So a test holds `exclusive(url)`, a lock file of that URL, for as long as it uses one of them.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BROKERS = ["stub://"] + [
    url
    for url in (os.environ.get("GATEWAY_TEST_REDIS_URL"), os.environ.get("GATEWAY_TEST_AMQP_URL"))
    if url
]


@contextmanager
def exclusive(url: str) -> Iterator[None]:
    """One test at a time on the broker server of `url` (the stub broker is per process)."""
    if url.startswith("stub://"):
        yield
        return
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"gateway-tests-broker-{digest}.lock"
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def drop_namespace(url: str, namespace: str) -> None:
    """Delete the queues a gateway with `broker_namespace = namespace` declared on `url`."""
    import dramatiq

    from gateway import actors  # noqa: F401 - declares every actor on the current broker

    broker = dramatiq.get_broker()
    bases = {broker.get_actor(name).queue_name.rsplit(".", 1)[-1] for name in broker.actors}
    if url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=f"dramatiq:*{namespace}.*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
    elif url.startswith(("amqp://", "amqps://")):
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = connection.channel()
            for base in bases:
                for suffix in ("", ".DQ", ".XQ"):
                    channel.queue_delete(f"{namespace}.{base}{suffix}")
        finally:
            connection.close()
