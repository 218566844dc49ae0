"""`gateway serve` as a child process: start it, read what it prints, stop it with SIGTERM."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without the GATEWAY_* variables of whoever runs the tests."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


@contextmanager
def serve_process(
    args: Sequence[str], *, cwd: Path, env: dict[str, str]
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def stop_cleanly(proc: subprocess.Popen[str]) -> str:
    """SIGTERM, then check it exited 0 with no traceback; returns the rest of its stdout."""
    proc.terminate()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert "Traceback" not in err
    return out
