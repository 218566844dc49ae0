"""The Dramatiq broker, chosen by `broker_url` and set before any actor module is imported.

`stub://` is the in-memory broker of the embedded default (worker threads inside `gateway
serve`); `redis://` and `amqp://` are for scale-out. Nothing is lost with the in-memory broker:
the database holds every piece of pending work and the scheduler sweep re-enqueues it.

`broker_namespace` puts every queue under `<namespace>.`, so that several gateways (staging
beside production, or concurrent test runs) share one Redis or RabbitMQ server without taking
each other's messages.
"""

from __future__ import annotations

import sys

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)


def _middleware() -> list[dramatiq.Middleware]:
    # Retries are bounded and short: the database keeps the work, the sweep re-enqueues it, so
    # the broker need not hold a message for days.
    return [
        AgeLimit(),
        TimeLimit(time_limit=5 * 60 * 1000),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(max_retries=5, min_backoff=1000, max_backoff=60_000),
    ]


# The queue each actor was declared with, before any namespace: re-binding actors to another
# broker (tests switch brokers) starts from it again.
_BASE_QUEUES: dict[str, str] = {}


class QueueNamespace(dramatiq.Middleware):
    """Declares every actor's queue as `<namespace>.<queue>` (messages carry the actor's queue,
    so enqueueing and consuming both follow)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def before_declare_actor(
        self, broker: dramatiq.Broker, actor: dramatiq.Actor[..., object]
    ) -> None:
        base = _BASE_QUEUES.setdefault(actor.actor_name, actor.queue_name)
        actor.queue_name = f"{self.namespace}.{base}"


def make_broker(url: str, namespace: str = "") -> dramatiq.Broker:
    middleware = _middleware() + ([QueueNamespace(namespace)] if namespace else [])
    broker: dramatiq.Broker
    if url.startswith("stub://"):
        broker = StubBroker(middleware=middleware)
    elif url.startswith(("redis://", "rediss://")):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url, middleware=middleware)
    elif url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # Publisher confirms: enqueue returns only once RabbitMQ has the message.
        broker = RabbitmqBroker(url=url, confirm_delivery=True, middleware=middleware)
    else:
        raise ValueError(f"unsupported broker_url {url!r}")
    return broker


def setup_broker(url: str, namespace: str = "") -> dramatiq.Broker:
    """Set the global broker; it must happen before `gateway.actors` is imported."""
    if "gateway.actors" in sys.modules:
        current = dramatiq.get_broker()
        # Actors are already bound to a broker: re-binding them is how tests switch brokers.
        broker = make_broker(url, namespace)
        dramatiq.set_broker(broker)
        for actor_name in list(current.actors):
            actor = current.get_actor(actor_name)
            actor.broker = broker
            actor.queue_name = _BASE_QUEUES.get(actor_name, actor.queue_name)
            broker.declare_actor(actor)
        return broker
    broker = make_broker(url, namespace)
    dramatiq.set_broker(broker)
    return broker
