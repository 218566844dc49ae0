"""Parse mail in a few worker processes, so one pathological message cannot stall a worker.

A thread cannot be stopped in the middle of a regular expression or a C decoder, so the CPU
limit per message is enforced where the operating system can enforce it: in a process. Each
worker arms two limits before every message:

- a profiling timer (`ITIMER_PROF`, process CPU time) at the budget: its handler raises in
  Python code, the worker answers "over the limit" and lives on;
- `RLIMIT_CPU` one second above it: if the message is stuck in C code, the kernel ends the
  worker with SIGXCPU, and the pool starts a new one.

The caller waits with a generous wall-clock backstop as well (a worker that sleeps or deadlocks
uses no CPU). Workers are fresh interpreters (fork+exec), not forks of the gateway: it has
threads and open database connections a forked child must not inherit.

The pool is also a way to use more than one core for parsing, which the GIL would otherwise
serialise; the cost per message is one pickled round trip through a pipe (see bench/parse.py).
"""

from __future__ import annotations

import atexit
import math
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any

from channels.email.parse import MessageRejected, ParsedMail, ParseLimits, parse_message

_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
_ENTRY = (
    "import sys; from channels.email.isolate import serve_fds; serve_fds(*map(int, sys.argv[1:]))"
)

# A busy machine can give a worker far less than one core; the wall-clock backstop only exists
# for a worker that is not using CPU at all.
_WALL_FACTOR = 10
_WALL_SLACK_SECONDS = 30.0


class ParseTimeout(MessageRejected):
    """The message used more CPU time than allowed; quarantined with this reason."""


class _CpuExceeded(BaseException):
    # BaseException: an `except Exception` inside a parser must not swallow the timer.
    pass


@dataclass(frozen=True)
class _Job:
    raw: bytes
    limits: ParseLimits
    envelope_from: str | None
    cpu_seconds: float


def _on_timer(signum: int, frame: FrameType | None) -> None:
    raise _CpuExceeded


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def serve_fds(read_fd: int, write_fd: int) -> None:
    """The worker process's entry point (see `_Worker`)."""
    _serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False))


def _serve(jobs: Connection, answers: Connection) -> None:
    """The worker loop: one job in, one answer out, until the pipe closes."""
    signal.signal(signal.SIGPROF, _on_timer)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    while True:
        try:
            job: _Job = jobs.recv()
        except (EOFError, OSError):
            return
        soft = math.ceil(_cpu_used() + job.cpu_seconds) + 1
        if hard == resource.RLIM_INFINITY or soft <= hard:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
        answer: tuple[str, Any]
        try:
            signal.setitimer(signal.ITIMER_PROF, job.cpu_seconds)
            try:
                answer = ("ok", parse_message(job.raw, job.limits, job.envelope_from))
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
        except _CpuExceeded:
            answer = ("timeout", None)
        except MessageRejected as exc:
            answer = ("rejected", str(exc))
        except Exception as exc:  # noqa: BLE001 - the parent quarantines with this reason
            answer = ("error", f"{type(exc).__name__}: {exc}")
        try:
            answers.send(answer)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    """One parser process: a fresh interpreter (fork+exec), so it inherits neither the
    gateway's threads and database connections nor its `__main__`, which multiprocessing's
    spawn would import again (and run, in a script without a main guard)."""

    def __init__(self) -> None:
        job_r, job_w = os.pipe()
        answer_r, answer_w = os.pipe()
        env = dict(os.environ)
        # The worker must import this very code, installed or not.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SOURCE_ROOT, env.get("PYTHONPATH")) if p)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(job_r), str(answer_w)],
                pass_fds=(job_r, answer_w),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(job_r)
            os.close(answer_w)
        self.jobs = Connection(job_w, readable=False)
        self.answers = Connection(answer_r, writable=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_code(self) -> int | None:
        try:
            return self.process.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        self.jobs.close()
        self.answers.close()
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=5)


class ParserPool:
    """Up to `size` worker processes, started on first use; safe to call from many threads."""

    def __init__(self, size: int = 2) -> None:
        self.size = max(1, size)
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self._workers: set[_Worker] = set()
        self._closed = False
        self._fan_out: ThreadPoolExecutor | None = None

    def parse(
        self,
        raw: bytes,
        limits: ParseLimits,
        envelope_from: str | None = None,
        cpu_seconds: float = 2.0,
    ) -> ParsedMail:
        """`parse_message` under a CPU limit; MessageRejected (quarantine) when it is broken."""
        job = _Job(raw, limits, envelope_from, cpu_seconds)
        with self._slots:
            worker = self._take()
            keep = False
            try:
                kind, value = self._ask(worker, job)
                # A worker interrupted mid-parse may hold half-updated state: start afresh.
                keep = kind != "timeout"
            finally:
                if keep:
                    self._idle.put(worker)
                else:
                    self._retire(worker)
        if kind == "ok":
            assert isinstance(value, ParsedMail)
            return value
        if kind == "timeout":
            raise ParseTimeout(f"parsing took more than {cpu_seconds:g} s of CPU time")
        raise MessageRejected(str(value))

    def parse_many(
        self,
        items: Sequence[tuple[bytes, str | None]],
        limits: ParseLimits,
        cpu_seconds: float = 2.0,
    ) -> list[ParsedMail | Exception]:
        """Parse (raw, envelope_from) pairs on all workers at once; each result in order, or the
        exception that would quarantine it."""

        def one(item: tuple[bytes, str | None]) -> ParsedMail | Exception:
            try:
                return self.parse(item[0], limits, item[1], cpu_seconds)
            except Exception as exc:  # noqa: BLE001 - the caller quarantines with it
                return exc

        if len(items) <= 1:
            return [one(item) for item in items]
        with self._lock:
            if self._fan_out is None:
                self._fan_out = ThreadPoolExecutor(self.size, thread_name_prefix="parse")
            fan_out = self._fan_out
        return list(fan_out.map(one, items))

    def _ask(self, worker: _Worker, job: _Job) -> tuple[str, Any]:
        try:
            worker.jobs.send(job)
            wall = job.cpu_seconds * _WALL_FACTOR + _WALL_SLACK_SECONDS
            if worker.answers.poll(wall):
                answer: tuple[str, Any] = worker.answers.recv()
                return answer
        except (EOFError, OSError):
            pass  # the worker died: the kernel's CPU limit, or the memory killer
        code = worker.exit_code()
        if code == -signal.SIGXCPU:
            raise ParseTimeout(f"parsing took more than {job.cpu_seconds:g} s of CPU time")
        if code is None:
            raise ParseTimeout("parsing did not finish (no CPU used, no answer)")
        raise MessageRejected(f"the parser process died (exit code {code})")

    def _take(self) -> _Worker:
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker.alive():
                return worker
            self._retire(worker)  # killed from outside while idle: not this message's fault
        with self._lock:
            if self._closed:
                raise RuntimeError("the parser pool is closed")
            worker = _Worker()
            self._workers.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.discard(worker)
        worker.stop()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._workers = list(self._workers), set()
            fan_out, self._fan_out = self._fan_out, None
        if fan_out is not None:
            fan_out.shutdown(wait=False)
        for worker in workers:
            worker.stop()


_shared: ParserPool | None = None
_shared_lock = threading.Lock()


def shared_pool(size: int | None = None) -> ParserPool:
    """The process-wide pool (one per gateway process), created on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ParserPool(size or min(2, os.cpu_count() or 1))
            atexit.register(_shared.close)
        return _shared


def parse_isolated(raw: bytes, limits: ParseLimits, envelope_from: str | None = None) -> ParsedMail:
    """Parse as the gateway does: in the shared pool under `limits.cpu_seconds`, or in this
    process when the limit is off (0)."""
    if not limits.cpu_seconds:
        return parse_message(raw, limits, envelope_from)
    return shared_pool(limits.parse_processes).parse(raw, limits, envelope_from, limits.cpu_seconds)


def parse_many_isolated(
    items: Sequence[tuple[bytes, str | None]], limits: ParseLimits
) -> list[ParsedMail | Exception]:
    """`parse_isolated` for a batch of (raw, envelope_from), spread over the workers; each
    result in order, or the exception that would quarantine that message."""
    if not limits.cpu_seconds:
        results: list[ParsedMail | Exception] = []
        for raw, envelope_from in items:
            try:
                results.append(parse_message(raw, limits, envelope_from))
            except Exception as exc:  # noqa: BLE001 - the caller quarantines with it
                results.append(exc)
        return results
    pool = shared_pool(limits.parse_processes)
    return pool.parse_many(items, limits, limits.cpu_seconds)
