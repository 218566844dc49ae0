"""The gateway's HTTP side: one FastAPI app (agent API, admin API, widget, health, metrics)."""
