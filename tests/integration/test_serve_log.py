"""`gateway serve` tells a person where to look and what happens to each mail: run as a user runs
it (a child process on free ports), sent a mail over SMTP, read from its output."""

from __future__ import annotations

import re
import smtplib
import threading
import time
from email.message import EmailMessage
from pathlib import Path

from tests.support.http import free_port
from tests.support.serve import clean_env, serve_process


def config(tmp_path: Path, smtp: int, http: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
data_dir = "{tmp_path / "data"}"
database_url = "sqlite:///{tmp_path / "data" / "gateway.db"}"
sweep_seconds = 0.5

[smtp]
listen = "127.0.0.1:{smtp}"

[http]
listen = "127.0.0.1:{http}"
public_url = "http://127.0.0.1:{http}"

[outbound]
transport = "file"
file_dir = "{tmp_path / "data" / "sent"}"

[[apps]]
name = "demo"
brand = "Demo"

[[apps.channels]]
name = "support"
addresses = ["support@localhost"]
"""
    )
    return path


def test_serve_says_where_to_look_and_logs_each_mail(tmp_path):
    smtp_port, http_port = free_port(), free_port()
    cfg = str(config(tmp_path, smtp_port, http_port))
    env = clean_env()
    # An agent, so the customer's mail causes a notification email: the "sent" line.
    with serve_process(
        ["--config", cfg, "agents", "add", "ana@example.com", "--name", "Ana"],
        cwd=tmp_path,
        env=env,
    ) as setup:
        assert setup.wait(timeout=120) == 0

    with serve_process(["--config", cfg, "serve"], cwd=tmp_path, env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        intro = []
        for line in proc.stdout:
            intro.append(line)
            if line.startswith("stop with"):
                break
        said = "".join(intro)
        assert f"console: http://127.0.0.1:{http_port}/" in said, said
        assert f"mail in: SMTP 127.0.0.1:{smtp_port} for support@localhost" in said, said

        log: list[str] = []
        reader = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)
        reader.start()
        mail = EmailMessage()
        mail["From"] = "Maria <maria@example.com>"
        mail["To"] = "support@localhost"
        mail["Subject"] = "Where is my parcel?"
        mail.set_content("It has been two weeks.")
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            client.send_message(mail)

        wanted = {
            "accepted": r"inbound 1 accepted: smtp from maria@example.com to support@localhost",
            "processed": r"inbound 1 processed: stored as message \d+ in conversation \d+",
            "sent": r"outbox \d+: sent",
        }
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = "".join(log)
            if all(re.search(p, text) for p in wanted.values()):
                break
            time.sleep(0.2)
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        reader.join(timeout=10)
        text = "".join(log)
        missing = [k for k, p in wanted.items() if not re.search(p, text)]
        assert missing == [], text
        assert "Traceback" not in text
