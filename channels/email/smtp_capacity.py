"""What the SMTP server's sessions may take, so that no sender can take it all: connection
slots (in all and per peer address), which an idle session gives up to a new sender when the
server is full, and the memory of message data being received or stored.

Everything here runs on the server's event loop (one thread), so nothing is locked.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import time
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger(__name__)


class RateLimitedLog:
    """A warning that may recur thousands of times a second (a flood of refused connections):
    at most one line per `every_seconds`, and that line counts the ones left out before it."""

    def __init__(
        self,
        log: logging.Logger,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log, self._every, self._clock = log, every_seconds, clock
        self._next = float("-inf")
        self._left_out = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if now < self._next:
            self._left_out += 1
            return
        if self._left_out:
            message += " (and %d more like it in the last %gs)"
            args = (*args, self._left_out, self._every)
        self._log.warning(message, *args)
        self._next, self._left_out = now + self._every, 0


class Session(Protocol):
    """A session as the capacity sees it."""

    def idle_since(self) -> float | None:
        """When the session last sent anything (time.monotonic()); None while it waits on us."""

    def make_room(self) -> None:
        """Tell the client why and close; the slot is freed at once (`Capacity.leave`)."""


class Capacity:
    """The server's connection slots and its budget of pending DATA bytes."""

    def __init__(
        self,
        total: int,
        per_peer: int,
        *,
        evict_idle_after: float = 2.0,
        pending_data_bytes: int = 2**62,
        log_every_seconds: float = 60.0,
    ) -> None:
        self.total, self.per_peer = total, per_peer
        self.evict_idle_after = evict_idle_after
        self.pending_data_bytes = pending_data_bytes
        self.data_held = 0
        self._peak = 0  # the most message data held at once since the last trim of the heap
        self._trim_due = False
        self.sessions: dict[Session, str] = {}
        self.by_peer: dict[str, int] = {}
        self.refusals = RateLimitedLog(log, log_every_seconds)
        self.evictions = RateLimitedLog(log, log_every_seconds)

    @property
    def count(self) -> int:
        return len(self.sessions)

    def enter(self, session: Session, peer: str) -> bool:
        """Take a slot for `session` from `peer`. When every slot is taken (or every slot of
        that peer), the session idle the longest, at least `evict_idle_after`, makes room: of
        that peer's own sessions when the peer is at its limit, of anyone's when the server is.
        """
        if self.by_peer.get(peer, 0) >= self.per_peer and not self._make_room(peer):
            self.refusals.warning("refused a connection from %s: too many from that address", peer)
            return False
        if len(self.sessions) >= self.total and not self._make_room():
            self.refusals.warning("refused a connection from %s: too many connections", peer)
            return False
        self.sessions[session] = peer
        self.by_peer[peer] = self.by_peer.get(peer, 0) + 1
        return True

    def leave(self, session: Session) -> None:
        """Give the slot back (safe to call twice)."""
        peer = self.sessions.pop(session, None)
        if peer is None:
            return
        left = self.by_peer.get(peer, 1) - 1
        if left:
            self.by_peer[peer] = left
        else:
            self.by_peer.pop(peer, None)

    def _make_room(self, of_peer: str | None = None) -> bool:
        idle = [
            (since, s)
            for s, peer in self.sessions.items()
            if (of_peer is None or peer == of_peer) and (since := s.idle_since()) is not None
        ]
        if not idle:
            return False
        since, oldest = min(idle, key=lambda pair: pair[0])
        idle_for = time.monotonic() - since
        if idle_for < self.evict_idle_after:
            return False
        peer = self.sessions[oldest]
        oldest.make_room()
        self.leave(oldest)
        self.evictions.warning("closed a session of %s idle for %.1fs to make room", peer, idle_for)
        return True

    def take_data(self, size: int) -> bool:
        """Hold `size` more bytes of message data, if the budget allows."""
        if self.data_held + size > self.pending_data_bytes:
            return False
        self.data_held += size
        self._peak = max(self._peak, self.data_held)
        return True

    def give_data(self, size: int) -> None:
        self.data_held -= size
        # After a burst (not the steady flow of ordinary mail, whose memory is reused), once
        # most of it is given back; a moment later, so that the cancelled sessions' frames
        # have let go of the bytes.
        if self._peak >= _BURST_BYTES and self.data_held <= self._peak // 4 and not self._trim_due:
            self._trim_due = True
            asyncio.get_running_loop().call_later(1.0, self._trim)

    def _trim(self) -> None:
        self._trim_due, self._peak = False, self.data_held
        release_free_memory()


# Message data held at once that makes giving its memory back to the OS worth a heap trim.
_BURST_BYTES = 16 * 1024 * 1024


def release_free_memory() -> None:
    """Hand the free pages of the C heap back to the OS (glibc's malloc_trim; elsewhere
    nothing). glibc keeps freed memory for reuse, and after a burst of large messages that is
    as much as the budget of pending DATA: the process would stay that big for good."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is not None:
        trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None
