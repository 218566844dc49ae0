"""Wiring: config, database, broker, actors, scheduler, CLI and HTTP; the only place that builds adapters."""
