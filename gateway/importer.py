"""`gateway import`: old mail from an mbox file, a maildir or a folder of .eml files, stored and
processed like mail that came in by SMTP, as fast as the machine's cores allow.

Each message gets a source key from its bytes' digest, so a re-run stores nothing twice and
processes only what an interrupted run left pending.

The work is a pipeline of chunks: a chunk is stored in one transaction (its raw rows in one bulk
INSERT: durable, like an SMTP accept), then parsed in a pool of parser processes, one per core,
while this thread processes the chunk before it (threading, storing, quarantine) in one
transaction through `gateway.inbound`. Parsing is most of the CPU a mail costs and needs no
database, so it runs on the other cores while the database work of the previous chunk runs
here; the processing stays in one thread and in mailbox order, so a reply finds the
conversation its parent started.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from channels.email.isolate import ParserPool
from channels.email.parse import ParsedMail, ParseLimits
from gateway import inbound
from gateway.runtime import Runtime
from tickets import inbound as inbound_store
from tickets.errors import InvalidValue
from tickets.inbound import IncomingMail
from tickets.models import InboundMail, InboundState

# Mails per chunk: one store transaction and one processing transaction each. Larger chunks
# save little (the per-mail work dominates); on SQLite a processing transaction holds the
# write lock that a running gateway's SMTP accepts wait for, so it stays well under a second.
CHUNK = 100

# A parse "without a CPU limit" (`parse_cpu_seconds = 0`) still runs in the pool, for the
# cores; the limit is then a day.
_NO_LIMIT_SECONDS = 86400.0


def _key(raw: bytes) -> str:
    return "import:" + hashlib.sha256(raw).hexdigest()


@dataclass
class Unreadable:
    """A file of a folder or maildir that could not be read: there are no bytes to keep."""

    name: str
    reason: str


@dataclass
class MailSource:
    """The messages under one path: how many, and (source key, raw bytes) of each in order."""

    count: int
    _read: Callable[[], Iterator[bytes | Unreadable]]

    def __iter__(self) -> Iterator[tuple[str, bytes] | Unreadable]:
        for item in self._read():
            yield item if isinstance(item, Unreadable) else (_key(item), item)


def open_source(path: str) -> MailSource:
    """An mbox file, a maildir (a folder with cur/ and new/), a folder of .eml files (searched
    recursively, in name order) or a single message file."""
    p = Path(path)
    if not p.exists():
        raise InvalidValue(f"{path}: no such file or folder")
    if p.is_dir() and (p / "cur").is_dir() and (p / "new").is_dir():
        box = mailbox.Maildir(p, factory=None, create=False)
        keys = sorted(box.iterkeys())

        def maildir() -> Iterator[bytes | Unreadable]:
            for key in keys:
                try:
                    yield box.get_bytes(key)
                except OSError as exc:
                    yield Unreadable(key, exc.strerror or str(exc))

        return MailSource(len(keys), maildir)
    if p.is_dir():
        files = sorted(p.rglob("*.eml"))

        def folder() -> Iterator[bytes | Unreadable]:
            for file in files:
                try:
                    yield file.read_bytes()
                except OSError as exc:
                    yield Unreadable(str(file), exc.strerror or str(exc))

        return MailSource(len(files), folder)
    try:
        with p.open("rb") as fh:
            head = fh.read(5)
    except OSError as exc:
        raise InvalidValue(f"{path}: cannot read: {exc.strerror}") from None
    if head != b"From ":
        return MailSource(1, lambda: iter([p.read_bytes()]))
    mbox = mailbox.mbox(p, create=False)
    keys = list(mbox.iterkeys())  # reads the file once for where each message begins
    return MailSource(len(keys), lambda: (mbox.get_bytes(key) for key in keys))


def iter_messages(path: str) -> Iterator[tuple[str, bytes]]:
    """(source key, raw bytes) of every readable message under `path`."""
    for item in open_source(path):
        if not isinstance(item, Unreadable):
            yield item


@dataclass
class Tally:
    """What an import did so far; handed to the progress callback after every chunk."""

    total: int  # messages found under the path
    read: int = 0
    stored: int = 0  # new rows
    before: int = 0  # imported already by an earlier run (the same bytes)
    processed: int = 0
    quarantined: int = 0
    pending: int = 0  # stored, left for the gateway to process (`--no-process`, a retry)
    done: int = 0  # read and as far as this import takes them
    unreadable: list[Unreadable] = field(default_factory=list)


def pool_size() -> int:
    """One parser process per core this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def import_mail(
    runtime: Runtime,
    source: MailSource,
    *,
    app_id: int,
    kind: str = inbound.HISTORY,
    process: bool = True,
    parsers: int | None = None,
    on_progress: Callable[[Tally], None] = lambda tally: None,
) -> Tally:
    """Store every message of `source` for `app_id` once, and (with `process`) process what is
    pending of it; `kind` is the rows' source (HISTORY tells no agent, NOTIFYING does)."""
    tally = Tally(total=source.count)
    limits = inbound.parse_limits(runtime)
    cpu_seconds = limits.cpu_seconds or _NO_LIMIT_SECONDS
    pool = ParserPool(parsers or pool_size()) if process else None
    ahead: tuple[Future[dict[int, ParsedMail | Exception]], int] | None = None
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="import-parse") as parsing:
            for chunk in _chunks(source, tally):
                todo = _store(runtime, chunk, app_id, kind, tally)
                following = None
                if pool is None:
                    tally.pending += len(todo)
                    tally.done += len(chunk)
                elif todo:
                    # Parsed on the other cores while the previous chunk is processed here.
                    parsed = parsing.submit(_parse, pool, todo, limits, cpu_seconds)
                    following = (parsed, len(chunk))
                else:
                    tally.done += len(chunk)
                if ahead is not None:
                    _process(runtime, *ahead, tally)
                ahead = following
                on_progress(tally)
            if ahead is not None:
                _process(runtime, *ahead, tally)
                on_progress(tally)
    finally:
        if pool is not None:
            pool.close()
    return tally


def _chunks(source: MailSource, tally: Tally) -> Iterator[list[tuple[str, bytes]]]:
    chunk: list[tuple[str, bytes]] = []
    for item in source:
        tally.read += 1
        if isinstance(item, Unreadable):
            tally.unreadable.append(item)
            tally.done += 1
            continue
        chunk.append(item)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _store(
    runtime: Runtime, chunk: Sequence[tuple[str, bytes]], app_id: int, kind: str, tally: Tally
) -> dict[int, bytes]:
    """Store the chunk (committed when this returns); the rows still to process, by id."""
    mails = [
        IncomingMail(raw=raw, source=kind, source_key=key, app_id=app_id) for key, raw in chunk
    ]
    with runtime.unit_of_work() as session:
        before = inbound_store.source_keys_among(session, [key for key, _ in chunk])
        ids = inbound_store.store_incoming(session, mails, runtime.clock())
    fresh = {key for key, _ in chunk} - before
    tally.stored += len(fresh)
    tally.before += len(chunk) - len(fresh)  # a message twice in the source counts once
    raw_by_id = {row_id: raw for row_id, (_, raw) in zip(ids, chunk, strict=True)}
    if len(fresh) == len(chunk):
        return raw_by_id
    # Some were imported before: only what an interrupted run left pending is processed.
    with runtime.reading() as session:
        pending = set(
            session.scalars(
                select(InboundMail.id).where(
                    InboundMail.id.in_(list(raw_by_id)), InboundMail.state == InboundState.PENDING
                )
            )
        )
    return {row_id: raw for row_id, raw in raw_by_id.items() if row_id in pending}


def _parse(
    pool: ParserPool, todo: dict[int, bytes], limits: ParseLimits, cpu_seconds: float
) -> dict[int, ParsedMail | Exception]:
    results = pool.parse_many([(raw, None) for raw in todo.values()], limits, cpu_seconds)
    return dict(zip(todo, results, strict=True))


def _process(
    runtime: Runtime,
    parsing: Future[dict[int, ParsedMail | Exception]],
    count: int,
    tally: Tally,
) -> None:
    """Process a parsed chunk of `count` messages (fewer rows, if some were done before).

    The mails that could not be parsed go to quarantine in a batch of their own: in a batch
    with others, gateway.inbound (as of 2946267) drops the pending writes of the mails processed
    before such a one (their thread refs, their "processed" mark), so they would be processed
    and stored a second time later.
    """
    parsed = parsing.result()
    broken: dict[int, ParsedMail | Exception] = {
        i: p for i, p in parsed.items() if isinstance(p, Exception)
    }
    readable = {i: p for i, p in parsed.items() if i not in broken}
    for batch in (readable, broken):
        for outcome in inbound.process_parsed(runtime, batch).values():
            tally.processed += outcome.state == "processed"
            tally.quarantined += outcome.state == "quarantined"
            tally.pending += outcome.state == "pending"
    tally.done += count
