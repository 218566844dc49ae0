"""Group commit of accepted mail: one transaction, one disk sync and one hand-off to the
workers for all the mail that finished DATA meanwhile, without any 250 leaving before its
commit, and without one mail that cannot be stored failing the others of its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from tickets.inbound import IncomingMail

log = logging.getLogger(__name__)


StoreBatch = Callable[[Sequence[IncomingMail]], Sequence[int | Exception]]


class BatchWriter:
    """Commits accepted mail in groups: one transaction for whatever arrived meanwhile.

    `store_batch` runs in this writer's thread and must commit before it returns; each waiting
    DATA command gets its row id (or the exception) only after that. It answers per mail, so
    that a mail that cannot be stored fails alone and the rest of its group is stored.

    Under load the writer holds a group open for `group_commit_seconds` after its first mail
    (PostgreSQL's commit_delay): each commit costs a transaction, a log sync and a hand-off to
    the workers, and the sessions that finish DATA in that window share them. It waits only
    when the group before it had company (more than one mail), so a lone message at a quiet
    time is committed at once.
    """

    def __init__(
        self,
        store_batch: StoreBatch,
        *,
        max_batch: int = 200,
        on_stored: Callable[[list[int]], object] = lambda _ids: None,
        group_commit_seconds: float = 0.0,
    ) -> None:
        self._store_batch = store_batch
        self._on_stored = on_stored
        self._max_batch = max_batch
        self._group_commit_seconds = group_commit_seconds
        self._queue: queue.Queue[tuple[IncomingMail, Waiter] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="smtp-batch-writer", daemon=True)
        self._thread.start()

    def submit(self, mail: IncomingMail) -> Future[int]:
        """For a caller in a thread: a future of the committed row id."""
        future: Future[int] = Future()
        self._queue.put((mail, future))
        return future

    async def store(self, mail: IncomingMail) -> int:
        """For a caller on an event loop: the committed row id.

        The waiters of one commit are woken with one call into their loop: a wake-up per
        message (what `asyncio.wrap_future` does) costs the loop a system call each.
        """
        waiter = asyncio.get_running_loop().create_future()
        self._queue.put((mail, waiter))
        return int(await waiter)

    def _run(self) -> None:
        busy = False  # the last group had more than one mail
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            until = time.monotonic() + (self._group_commit_seconds if busy else 0.0)
            while len(batch) < self._max_batch:
                try:
                    wait = until - time.monotonic()
                    more = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            busy = len(batch) > 1
            try:
                results = self._store_batch([mail for mail, _ in batch])
            except Exception as exc:  # every waiter must hear of the failure
                log.exception("storing %d inbound messages failed", len(batch))
                _settle([(waiter, exc) for _, waiter in batch])
                continue
            _settle([(waiter, result) for (_, waiter), result in zip(batch, results, strict=True)])
            ids = [result for result in results if isinstance(result, int)]
            if not ids:
                continue
            # Enqueueing may block on a broker round trip: done here, never on the event loop.
            try:
                self._on_stored(ids)
            except Exception:
                # The rows are committed; the scheduler sweep will enqueue them instead.
                log.exception("handing on inbound %s failed", ids)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=30)


Waiter = Future[int] | asyncio.Future[int]


def _settle(results: list[tuple[Waiter, int | BaseException]]) -> None:
    """Hand each waiter its row id or the failure: thread futures at once, loop futures with
    one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]]
    by_loop = {}
    for waiter, result in results:
        if isinstance(waiter, asyncio.Future):
            by_loop.setdefault(waiter.get_loop(), []).append((waiter, result))
        elif isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)
    for loop, waiting in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle_on_loop, waiting)


def _settle_on_loop(waiting: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    for waiter, result in waiting:
        if waiter.done():  # cancelled: the session went away
            continue
        if isinstance(result, BaseException):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)
