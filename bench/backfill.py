"""Backfill benchmark: `gateway import` of a generated mailbox, beside its limits in the same run.

    python bench/backfill.py [--messages 1000] [--runs 3] [--size 10240] [--parsers N]
    python bench/backfill.py --db postgresql+psycopg://postgres@127.0.0.1:5432/scratch

The corpus is bench/inbound.py's: realistic ~10 KB plain-text mail from distinct customers, a
third of it replies threaded with In-Reply-To/References on an earlier message of the corpus,
written as one mbox file. Each run, on SQLite (a fresh file) and, with --db, on that database
(rows of earlier runs stay; every run has its own corpus, so nothing is "imported before"):

1. parse limit: the corpus parsed by a pool of `--parsers` parser processes (the importer's
   pool, the same CPU limit per message), fed 100 at a time from one thread, no database: what
   the import cannot beat, since every message must be parsed;
2. store limit: the corpus's raw rows stored in chunks of 100, one transaction each (the
   importer's store step alone), then deleted again;
3. import: `gateway.importer.import_mail` (what `gateway import` runs): store, parse in the
   pool, process (threading, storing, events) in chunks; checked: every message processed,
   as many conversations as the corpus has threads;
4. one by one: for comparison, what `gateway import` did before (store all, then
   `process_batch` per 100 ids, which parses in the gateway's shared pool, then the database
   work, never both at once).

CPU ms/msg of the import is this process (the database work, reading, pickling) plus the
parser processes. The machine is shared: read the figures of one run against each other, and
quote several runs.
"""

from __future__ import annotations

import argparse
import logging
import mailbox
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from inbound import make_corpus  # bench/inbound.py: the same corpus as the SMTP bench
from sqlalchemy import delete, func, select

from channels.email.isolate import ParserPool
from gateway.config import embedded_default
from gateway.importer import CHUNK, import_mail, iter_messages, open_source, pool_size
from gateway.inbound import HISTORY, parse_limits, process_batch, store_batch
from gateway.runtime import Runtime
from tickets.inbound import IncomingMail
from tickets.models import App, InboundMail, InboundState, Message

AIM = 1000.0  # msgs/s, issue 16


@dataclass
class Corpus:
    mbox: Path
    raws: list[bytes]
    threads: int


def write_corpus(folder: Path, count: int, size: int, seed: int) -> Corpus:
    run_id = uuid.uuid4().hex[:8]
    mails = make_corpus(count, size, seed, run_id, reply_share=1 / 3)
    raws = []
    for mail in mails:
        # The corpus is SMTP DATA: undo the dot-stuffing, and mbox lines end in LF.
        lines = mail.data.split(b"\r\n")
        raws.append(b"\n".join(line[1:] if line.startswith(b"..") else line for line in lines))
    path = folder / f"corpus-{run_id}.mbox"
    box = mailbox.mbox(path)
    for raw in raws:
        box.add(raw)
    box.flush()
    box.close()
    return Corpus(path, raws, len({mail.thread for mail in mails}))


@contextmanager
def runtime_on(db: str, folder: Path) -> Iterator[Runtime]:
    url = f"sqlite:///{folder / 'gateway.db'}" if db == "sqlite" else db
    config = embedded_default().model_copy(update={"database_url": url, "data_dir": str(folder)})
    runtime = Runtime.create(config)
    try:
        yield runtime
    finally:
        runtime.close()


def app_id(runtime: Runtime) -> int:
    with runtime.reading() as session:
        return int(session.scalar(select(App.id).where(App.name == "demo")) or 0)


@dataclass
class Timed:
    seconds: float
    cpu: float  # this process
    children: float  # the child processes it waited for meanwhile (the parser processes)


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def timed(fn: Callable[[], object]) -> Timed:
    start = time.perf_counter()
    own, kids = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    fn()
    return Timed(
        time.perf_counter() - start,
        _cpu(resource.RUSAGE_SELF) - own,
        _cpu(resource.RUSAGE_CHILDREN) - kids,
    )


def parse_limit(corpus: Corpus, runtime: Runtime, parsers: int) -> Timed:
    limits = parse_limits(runtime)
    pool = ParserPool(parsers)
    pool.parse_many([(corpus.raws[0], None)], limits, limits.cpu_seconds)  # workers started

    def parse_all() -> None:
        for start in range(0, len(corpus.raws), CHUNK):
            chunk = [(raw, None) for raw in corpus.raws[start : start + CHUNK]]
            pool.parse_many(chunk, limits, limits.cpu_seconds)

    try:
        return timed(parse_all)
    finally:
        pool.close()


def store_limit(corpus: Corpus, runtime: Runtime, app: int) -> Timed:
    ids: list[int] = []
    tag = uuid.uuid4().hex

    def store_all() -> None:
        for start in range(0, len(corpus.raws), CHUNK):
            mails = [
                IncomingMail(raw=raw, source=HISTORY, source_key=f"bench:{tag}:{n}", app_id=app)
                for n, raw in enumerate(corpus.raws[start : start + CHUNK], start)
            ]
            ids.extend(store_batch(runtime, mails))

    result = timed(store_all)
    with runtime.unit_of_work() as session:
        session.execute(delete(InboundMail).where(InboundMail.id.in_(ids)))
    return result


def check(runtime: Runtime, corpus: Corpus, after_id: int) -> str:
    """'' when every message of the run is processed into as many conversations as threads."""
    with runtime.reading() as session:
        states = dict(
            session.execute(
                select(InboundMail.state, func.count())
                .where(InboundMail.id > after_id)
                .group_by(InboundMail.state)
            ).all()
        )
        conversations = session.scalar(
            select(func.count(func.distinct(Message.conversation_id))).where(
                Message.inbound_mail_id > after_id
            )
        )
    processed = states.get(InboundState.PROCESSED, 0)
    if processed != len(corpus.raws) or conversations != corpus.threads:
        return (
            f"CHECK FAILED: {processed}/{len(corpus.raws)} processed, "
            f"{conversations} conversations for {corpus.threads} threads"
        )
    return ""


def max_id(runtime: Runtime) -> int:
    with runtime.reading() as session:
        return int(session.scalar(select(func.max(InboundMail.id))) or 0)


def import_run(corpus: Corpus, runtime: Runtime, app: int, parsers: int) -> tuple[Timed, str]:
    after = max_id(runtime)
    result = timed(
        lambda: import_mail(runtime, open_source(str(corpus.mbox)), app_id=app, parsers=parsers)
    )
    return result, check(runtime, corpus, after)


def one_by_one(corpus: Corpus, runtime: Runtime, app: int) -> tuple[Timed, str]:
    after = max_id(runtime)

    def old_import() -> None:
        mails = [
            IncomingMail(raw=raw, source=HISTORY, source_key=key, app_id=app)
            for key, raw in iter_messages(str(corpus.mbox))
        ]
        ids: list[int] = []
        for start in range(0, len(mails), CHUNK):
            ids.extend(store_batch(runtime, mails[start : start + CHUNK]))
        for start in range(0, len(ids), CHUNK):
            process_batch(runtime, ids[start : start + CHUNK])

    return timed(old_import), check(runtime, corpus, after)


@dataclass
class Run:
    parse: float
    store: float
    imported: float
    cpu_ms: tuple[float, float]  # this process, the parser processes
    before: float | None
    problem: str


def bench_db(db: str, args: argparse.Namespace, folder: Path) -> list[Run]:
    runs = []
    for n in range(args.runs):
        where = folder / f"{db if db == 'sqlite' else 'url'}-{n}"
        where.mkdir()
        corpus = write_corpus(where, args.messages, args.size, args.seed)
        baseline = (
            write_corpus(where, args.messages, args.size, args.seed) if args.one_by_one else None
        )
        with runtime_on(db, where) as runtime:
            app = app_id(runtime)
            count = len(corpus.raws)
            parse = parse_limit(corpus, runtime, args.parsers)
            store = store_limit(corpus, runtime, app)
            imported, problem = import_run(corpus, runtime, app, args.parsers)
            before = None
            if baseline is not None:
                old, old_problem = one_by_one(baseline, runtime, app)
                before = count / old.seconds
                problem = problem or old_problem
        run = Run(
            parse=count / parse.seconds,
            store=count / store.seconds,
            imported=count / imported.seconds,
            cpu_ms=(imported.cpu / count * 1000, imported.children / count * 1000),
            before=before,
            problem=problem,
        )
        log(f"{db_name(db)} run {n + 1}: {run.imported:.0f} msgs/s {problem}")
        runs.append(run)
    return runs


def db_name(db: str) -> str:
    return "SQLite" if db == "sqlite" else "PostgreSQL"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def print_table(results: dict[str, list[Run]], args: argparse.Namespace) -> None:
    header = (
        "db",
        "run",
        "import msgs/s",
        "parse limit",
        "import/parse",
        "store limit",
        "CPU ms/msg here + parsers",
        "before",
        "",
    )
    rows = []
    for db, runs in results.items():
        for n, r in enumerate(runs, 1):
            rows.append(
                (
                    db_name(db),
                    str(n),
                    f"{r.imported:.0f}",
                    f"{r.parse:.0f}",
                    f"{r.imported / r.parse:.2f}",
                    f"{r.store:.0f}",
                    "{:.1f} + {:.1f}".format(*r.cpu_ms),
                    "-" if r.before is None else f"{r.before:.0f}",
                    r.problem,
                )
            )
        median = statistics.median(r.imported for r in runs)
        ok = "ok" if median >= AIM else "MISSED"
        rows.append((db_name(db), "median", f"{median:.0f}", "", "", "", "", "", f"{ok}"))
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print()
    print(
        f"backfill bench: `gateway import` of an mbox of {args.messages} messages of "
        f"~{args.size} bytes, {args.parsers} parser processes, {pool_size()} cores, "
        f"aim {AIM:.0f} msgs/s"
    )
    print(line)
    for row in [header, *rows]:
        print(
            "  ".join(
                c.rjust(w) if i > 1 else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if row is header:
            print(line)
    print(line)
    print(
        "parse limit = the corpus through the same parser pool, no database; store limit = its\n"
        "raw rows stored in chunks, nothing processed; import = store + parse + process, every\n"
        "message checked processed and threaded; CPU = this process + the parser processes;\n"
        "before = the import as it was (process_batch per 100 ids, parse then database work)."
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", "-n", type=int, default=1000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--size", type=int, default=10240, help="approximate message size, bytes")
    p.add_argument("--db", help="also on this database URL (a scratch database)")
    p.add_argument("--parsers", type=int, default=pool_size(), help="parser processes")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--one-by-one",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also measure the import as it was",
    )
    args = p.parse_args(argv)
    if args.messages < 1 or args.runs < 1 or args.parsers < 1 or args.size < 512:
        p.error("--messages, --runs and --parsers must be >= 1, --size >= 512")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    folder = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    try:
        results = {
            db: bench_db(db, args, folder) for db in ["sqlite", *([args.db] if args.db else [])]
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print_table(results, args)
    failed = any(r.problem for runs in results.values() for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.pop("GATEWAY_CONFIG", None)
    sys.exit(main())
