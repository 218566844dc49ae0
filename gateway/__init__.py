"""Wiring: config, database, broker, actors, scheduler, CLI and HTTP.

The only place that builds adapters.
"""
