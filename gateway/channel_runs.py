"""Channel checks started from the console: each runs in a thread of this process, and its
steps are kept here while it runs, so the page can show every step as it ends.

One run per channel at a time; a second start while one runs joins it. Only the latest run of
a channel is kept. When the run is over, its result is also the channel's `last_test` in the
database (gateway.channel_admin.check_channel), which is what another process shows.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from channels.email.check import Step
from gateway.channel_admin import check_channel
from gateway.runtime import Runtime

log = logging.getLogger(__name__)

TIMEOUT = 30.0  # seconds the round trip waits for its mail, from the console


@dataclass
class Run:
    id: str
    app_id: int
    channel_id: int
    started: float = field(default_factory=time.monotonic)
    steps: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None

    @property
    def running(self) -> bool:
        return self.result is None

    def as_json(self) -> dict[str, Any]:
        with _lock:
            return {
                "id": self.id,
                "running": self.running,
                "steps": list(self.steps),
                "result": self.result,
            }


_lock = threading.Lock()
_runs: dict[tuple[int, int], Run] = {}


def current(app_id: int, channel_id: int) -> Run | None:
    with _lock:
        return _runs.get((app_id, channel_id))


def start(runtime: Runtime, app_id: int, channel_id: int, timeout: float = TIMEOUT) -> Run:
    """Start checking the channel (the caller made sure it is the app's), or join the run
    that is already going."""
    with _lock:
        run = _runs.get((app_id, channel_id))
        if run is not None and run.running:
            return run
        run = Run(secrets.token_hex(8), app_id, channel_id)
        _runs[(app_id, channel_id)] = run
    thread = threading.Thread(
        target=_run, args=(runtime, run, timeout), name=f"channel-check-{channel_id}", daemon=True
    )
    thread.start()
    return run


def _run(runtime: Runtime, run: Run, timeout: float) -> None:
    def heard(step: Step) -> None:
        with _lock:
            run.steps.append(step.as_dict())

    try:
        result = check_channel(runtime, run.app_id, run.channel_id, timeout, listener=heard)
    except Exception as exc:  # the page must learn that the run ended, whatever happened
        log.exception("channel %s: the check stopped", run.channel_id)
        result = {
            "ok": False,
            "message": f"the check stopped: {type(exc).__name__}",
            "hint": "see the gateway's log",
            "steps": [],
        }
    with _lock:
        run.result = result
