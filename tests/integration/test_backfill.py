"""`gateway import` of a mailbox bigger than one batch: replies land in their conversations,
a broken mail is kept in quarantine, a re-run stores nothing twice, and the progress shows at a
terminal only."""

from __future__ import annotations

import json
import mailbox
import os
import pty
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from tests.integration.test_import import gateway_env, run

CUSTOMERS = 120  # 240 mails: the replies come in later batches than what they answer


def mail(i: int, *, reply: bool = False) -> EmailMessage:
    """Customer i's first mail, or their reply to it: another subject, so that only the
    In-Reply-To and References headers tie it to the first."""
    msg = EmailMessage()
    msg["From"] = f"Customer {i} <customer{i}@example.com>"
    msg["To"] = "support@localhost"
    if reply:
        msg["Subject"] = f"Still waiting for order {i}"
        msg["Message-ID"] = f"<reply-{i}@example.com>"
        msg["In-Reply-To"] = msg["References"] = f"<first-{i}@example.com>"
        msg.set_content(f"Any news about order {i}?")
    else:
        msg["Subject"] = f"Order {i} never arrived"
        msg["Message-ID"] = f"<first-{i}@example.com>"
        msg.set_content(f"Hello, my order {i} has not arrived yet.")
    return msg


def nested_too_deep() -> bytes:
    """A message nested deeper in MIME parts than the parse limit (50) allows."""
    head = (
        b"From: Mallory <mallory@example.com>\nTo: support@localhost\n"
        b"Subject: Nested\nMessage-ID: <nested@example.com>\nMIME-Version: 1.0\n"
    )
    body = b"Content-Type: text/plain\n\ninnermost\n"
    for depth in range(60):
        boundary = f"b{depth}".encode()
        body = (
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\n\n'
            b"--" + boundary + b"\n" + body + b"\n--" + boundary + b"--\n"
        )
    return head + body


def history(path: Path) -> bytes:
    """The mailbox: every customer's first mail, a broken one, then every reply; the broken
    mail's bytes."""
    box = mailbox.mbox(path)
    for i in range(CUSTOMERS):
        box.add(mail(i))
    broken = nested_too_deep()
    box.add(broken)
    for i in range(CUSTOMERS):
        box.add(mail(i, reply=True))
    box.flush()
    return broken


def cli_json(tmp_path: Path, *args: str) -> object:
    proc = run(tmp_path, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def conversations(tmp_path: Path) -> list[dict[str, Any]]:
    listed = cli_json(tmp_path, "conversations", "list", "--limit", "1000")
    assert isinstance(listed, list)
    return listed


def test_a_mailbox_imports_into_its_conversations_once(tmp_path):
    broken = history(tmp_path / "history.mbox")
    total = 2 * CUSTOMERS + 1

    proc = run(tmp_path, "import", "history.mbox")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(
        f"{total} messages read, {2 * CUSTOMERS} processed now, 1 quarantined in "
    )
    assert proc.stderr == ""  # not a terminal: no progress, just the summary line

    listed = conversations(tmp_path)
    assert len(listed) == CUSTOMERS
    some = next(c for c in listed if c["customer"]["email"] == "customer7@example.com")
    shown = cli_json(tmp_path, "conversations", "show", str(some["id"]))
    assert isinstance(shown, dict)
    assert [m["text"].strip() for m in shown["messages"]] == [
        "Hello, my order 7 has not arrived yet.",
        "Any news about order 7?",
    ]

    # The broken mail is kept, with its bytes and why.
    [held] = cli_json(tmp_path, "quarantine", "list")  # type: ignore[misc]
    assert held["reason"] == "MIME nesting deeper than 50"
    raw = run_bytes(tmp_path, "quarantine", "show", str(held["id"]), "--raw")
    assert raw.replace(b"\r\n", b"\n") == broken

    again = run(tmp_path, "import", "history.mbox")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        f"{total} messages read, 0 processed now, 0 quarantined, {total} imported before in "
    )
    status = cli_json(tmp_path, "status")
    assert isinstance(status, dict)
    inbound = status["inbound"]
    assert (inbound["accepted"], inbound["processed"], inbound["quarantined"]) == (
        total,
        2 * CUSTOMERS,
        1,
    )
    assert len(conversations(tmp_path)) == CUSTOMERS


def run_bytes(tmp_path: Path, *args: str) -> bytes:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=tmp_path,
        env=gateway_env(tmp_path),
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_stored_but_not_processed_mail_is_processed_by_the_next_run(tmp_path):
    history(tmp_path / "history.mbox")
    total = 2 * CUSTOMERS + 1

    proc = run(tmp_path, "import", "history.mbox", "--no-process")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(
        f"{total} messages read, 0 processed now, 0 quarantined, "
        f"{total} left for the gateway to process in "
    )
    again = run(tmp_path, "import", "history.mbox")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(
        f"{total} messages read, {2 * CUSTOMERS} processed now, 1 quarantined, "
        f"{total} imported before in "
    )
    assert len(conversations(tmp_path)) == CUSTOMERS


def test_a_terminal_sees_a_progress_bar(tmp_path):
    history(tmp_path / "history.mbox")
    env = gateway_env(tmp_path) | {"TERM": "xterm", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "import", "history.mbox"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    seen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal: it has ended
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.decode().startswith(f"{2 * CUSTOMERS + 1} messages read")
    screen = seen.decode(errors="replace")
    assert "importing" in screen
    assert f"/{2 * CUSTOMERS + 1}" in screen  # done of total
