"""`gateway import`: mbox, maildir and a folder of .eml through the durable path; a re-run
imports nothing twice."""

from __future__ import annotations

import datetime as dt
import json
import mailbox
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from tickets import notifications


def make(i: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"person{i}@example.com"
    msg["To"] = "support@localhost"
    msg["Subject"] = f"Imported {i}"
    msg["Message-ID"] = f"<import-{i}@example.com>"
    msg.set_content(f"Old question {i}")
    return msg


def gateway_env(tmp_path: Path) -> dict[str, str]:
    """This environment without GATEWAY_ settings, with the data under `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(tmp_path / "data")
    return env


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=tmp_path,
        env=gateway_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_mbox_maildir_and_eml_folder_once(tmp_path):
    mbox = mailbox.mbox(tmp_path / "old.mbox")
    for i in range(3):
        mbox.add(make(i))
    mbox.flush()
    maildir = mailbox.Maildir(tmp_path / "Maildir")
    for i in range(3, 5):
        maildir.add(make(i))
    folder = tmp_path / "emls"
    folder.mkdir()
    for i in range(5, 7):
        (folder / f"{i}.eml").write_bytes(make(i).as_bytes())

    for path, count in (("old.mbox", 3), ("Maildir", 2), ("emls", 2)):
        proc = run(tmp_path, "import", path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith(f"{count} messages read, {count} processed now")
    again = run(tmp_path, "import", "old.mbox")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("3 messages read, 0 processed now")

    listed = json.loads(run(tmp_path, "conversations", "list", "--json").stdout)
    assert sorted(c["subject"] for c in listed) == [f"Imported {i}" for i in range(7)]
    status = json.loads(run(tmp_path, "status", "--json").stdout)
    assert status["inbound"]["accepted"] == 7
    assert status["inbound"]["processed"] == 7


def test_import_of_a_missing_path_is_one_line(tmp_path):
    proc = run(tmp_path, "import", "nowhere.mbox")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "gateway: nowhere.mbox: no such file or folder"


def owed_notifications(tmp_path: Path) -> int:
    """What the gateway's sweep would collect for agents now: (event, agent) pairs."""
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'gateway.db'}")
    try:
        with Session(engine) as session, session.begin():
            return notifications.fan_out(session, dt.datetime.now(dt.UTC))
    finally:
        engine.dispose()


def test_imported_history_tells_no_agent_unless_asked(tmp_path):
    assert run(tmp_path, "agents", "add", "ana@example.com", "--name", "Ana").returncode == 0
    mbox = mailbox.mbox(tmp_path / "history.mbox")
    for i in range(3):
        mbox.add(make(i))
    mbox.flush()
    proc = run(tmp_path, "import", "history.mbox")
    assert proc.returncode == 0, proc.stderr
    assert owed_notifications(tmp_path) == 0  # three new conversations, and nobody is told

    folder = tmp_path / "new"
    folder.mkdir()
    (folder / "3.eml").write_bytes(make(3).as_bytes())
    proc = run(tmp_path, "import", "new", "--notify")
    assert proc.returncode == 0, proc.stderr
    assert owed_notifications(tmp_path) >= 1  # as if it had come in by SMTP


def test_a_file_that_cannot_be_read_is_named_and_the_rest_imported(tmp_path):
    folder = tmp_path / "emls"
    folder.mkdir()
    (folder / "1.eml").write_bytes(make(1).as_bytes())
    (folder / "2.eml").symlink_to(tmp_path / "gone.eml")  # a link to nothing: no bytes to keep
    proc = run(tmp_path, "import", "emls")
    assert proc.returncode == 1
    assert proc.stdout.startswith("2 messages read, 1 processed now, 0 quarantined, 1 unreadable")
    assert proc.stderr.strip() == "gateway: emls/2.eml: cannot read: No such file or directory"
