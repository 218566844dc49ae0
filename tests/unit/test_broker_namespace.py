"""`broker_namespace`: two gateways on one broker server keep to their own queues."""

from __future__ import annotations

from gateway.broker import setup_broker


def test_a_namespace_puts_every_queue_under_it_and_leaving_it_restores_the_names() -> None:
    try:
        broker = setup_broker("stub://", "staging")
        from gateway import actors

        actors.process_inbound_batch.send([1])
        assert actors.process_inbound_batch.queue_name == "staging.inbound"
        assert broker.get_declared_queues() >= {
            f"staging.{q}" for q in ("inbound", "timers", "checks", "outbound")
        }
        assert all(q.startswith("staging.") for q in broker.get_declared_queues())
        assert broker.queues["staging.inbound"].qsize() == 1

        plain = setup_broker("stub://")
        assert actors.process_inbound_batch.queue_name == "inbound"
        assert "staging.inbound" not in plain.get_declared_queues()
    finally:
        setup_broker("stub://")
