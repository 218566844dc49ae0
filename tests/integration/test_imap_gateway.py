"""An IMAP channel inside the running gateway: mail delivered to a real Dovecot mailbox becomes
a conversation, and `gateway channels imap-status` reconciles the mailbox with what was taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from email.message import EmailMessage

from sqlalchemy import select

from gateway.config import parse_config
from gateway.server import start
from tests.integration.test_smtp_inbound import free_port
from tests.support.dovecot import Dovecot
from tickets.models import Message

USER = "support@example.test"


def config_toml(tmp_path, dovecot: Dovecot) -> str:
    return (
        f'database_url = "sqlite:///{tmp_path / "gw.db"}"\ndata_dir = "{tmp_path}"\n'
        "sweep_seconds = 0.5\n"
        f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\n'
        '[http]\nlisten = "127.0.0.1:0"\n'
        '[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@example.test"]\n'
        f'[apps.channels.imap]\nhost = "{dovecot.host}"\nport = {dovecot.port}\nssl = false\n'
        f'username = "{USER}"\npassword_env = "TEST_IMAP_PASSWORD"\npoll_seconds = 1.0\n'
    )


def test_imap_mail_becomes_a_conversation_and_reconciles(tmp_path, dovecot, monkeypatch):
    import tomllib

    monkeypatch.setenv("TEST_IMAP_PASSWORD", dovecot.users[USER])
    text = config_toml(tmp_path, dovecot)
    config = parse_config(tomllib.loads(text))
    msg = EmailMessage()
    msg["From"] = "Robin <robin@example.org>"
    msg["To"] = USER
    msg["Subject"] = "Invoice copy"
    msg["Message-ID"] = "<imap-1@example.org>"
    msg.set_content("Could you send me a copy of my last invoice?")
    dovecot.deliver(USER, msg.as_bytes())

    services = start(config, "all")
    try:
        deadline = time.monotonic() + 20
        message = None
        while message is None and time.monotonic() < deadline:
            with services.runtime.unit_of_work() as session:
                message = session.scalar(
                    select(Message).where(Message.email_message_id == "<imap-1@example.org>")
                )
            time.sleep(0.1)
        assert message is not None, "IMAP mail was not ingested"
        assert message.text == "Could you send me a copy of my last invoice?"
    finally:
        services.stop()

    path = tmp_path / "gateway.toml"
    path.write_text(text)
    env = dict(os.environ, TEST_IMAP_PASSWORD=dovecot.users[USER])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "--config",
            str(path),
            "channels",
            "imap-status",
            "support",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"on_server": 1, "ingested": 1, "missing": []}
