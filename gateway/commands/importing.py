"""`gateway import PATH`: old mail (an mbox, a maildir, a folder of .eml) into the gateway.

Progress goes to stderr as a bar, and only at a terminal: a log file or a script gets just the
summary line on stdout, `<read> messages read, <processed> processed now, <quarantined>
quarantined`, followed by what else there is to say (imported before, left pending, unreadable
files, the rate).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from gateway.commands.base import EXIT_USER_ERROR, State, handle_errors, pass_state
from gateway.importer import Tally, import_mail, open_source
from gateway.inbound import HISTORY, NOTIFYING


@click.command("import")
@click.argument("path")
@click.option(
    "--process/--no-process",
    default=True,
    show_default=True,
    help="process the imported mail now (else the running gateway will)",
)
@click.option(
    "--notify/--no-notify",
    default=False,
    show_default=True,
    help="tell agents about the imported mail, as about new mail (history: no)",
)
@pass_state
@handle_errors
def import_cmd(state: State, path: str, process: bool, notify: bool) -> None:
    """Import an mbox, a maildir or a folder of .eml files; a re-run imports nothing twice.

    Messages are parsed on every core; a message that cannot be read as mail is kept in
    quarantine (`gateway quarantine list`) with the reason."""
    runtime = state.runtime()
    with runtime.unit_of_work() as session:
        app_id = state.app(session).id
    source = open_source(path)
    started = time.monotonic()
    with _progress(source.count) as show:
        tally = import_mail(
            runtime,
            source,
            app_id=app_id,
            kind=NOTIFYING if notify else HISTORY,
            process=process,
            on_progress=show,
        )
    click.echo(summary(tally, time.monotonic() - started))
    for item in tally.unreadable:
        click.echo(f"gateway: {item.name}: cannot read: {item.reason}", err=True)
    if tally.unreadable:
        sys.exit(EXIT_USER_ERROR)


def summary(tally: Tally, seconds: float) -> str:
    parts = [
        f"{tally.read} messages read",
        f"{tally.processed} processed now",
        f"{tally.quarantined} quarantined",
    ]
    if tally.before:
        parts.append(f"{tally.before} imported before")
    if tally.pending:
        parts.append(f"{tally.pending} left for the gateway to process")
    if tally.unreadable:
        parts.append(f"{len(tally.unreadable)} unreadable")
    done = tally.processed + tally.quarantined
    rate = f" in {seconds:.1f} s"
    if done and seconds > 0:
        rate += f", {done / seconds:.0f} msgs/s"
    return ", ".join(parts) + rate


@contextmanager
def _progress(total: int) -> Iterator[Callable[[Tally], None]]:
    """A bar on stderr at a terminal, advanced as messages are done (processed, or with
    `--no-process` stored); elsewhere nothing, so a log holds only the summary."""
    if not sys.stderr.isatty():
        yield lambda tally: None
        return
    columns = (
        TextColumn("importing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("import", total=total, detail="")

        def show(tally: Tally) -> None:
            detail = f"{tally.quarantined} quarantined" if tally.quarantined else ""
            if tally.before:
                detail += (", " if detail else "") + f"{tally.before} imported before"
            bar.update(task, completed=tally.done, detail=detail)

        yield show
