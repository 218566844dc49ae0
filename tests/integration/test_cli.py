"""The `gateway` command as a user runs it: a real process, a data directory, JSON on stdout,
one line on stderr for a user error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.support.http import free_port
from tests.support.serve import clean_env, serve_process, stop_cleanly

PG_URL = os.environ.get("GATEWAY_TEST_DATABASE_URL")


@pytest.fixture
def gw(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["GATEWAY_DATA_DIR"] = str(tmp_path / "data")

    def run(
        *args: str, ok: bool = True, config: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "gateway"]
        if config is not None:
            cmd += ["--config", str(config)]
        proc = subprocess.run(
            [*cmd, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )
        if ok:
            assert proc.returncode == 0, proc.stderr
        return proc

    return run


def test_tables_keep_whole_lines_when_piped(gw):
    """Piped or redirected (not a terminal), a table is as wide as its rows, not cut at 80."""
    conversation_id = gw("demo", "seed").stdout.strip()
    gw("convert", conversation_id, "--by", "agent@localhost")
    subject = "Hi! My order #4411 arrived damaged, the box was crushed. Can you send a new one?"
    for args in (("conversations", "list"), ("conversations", "list", "--view", "tickets")):
        lines = gw(*args).stdout.splitlines()
        [row] = [line for line in lines if "customer@example.com" in line]
        assert subject in row and max(map(len, lines)) > 80
    shown = gw("conversations", "show", conversation_id).stdout
    assert any(subject in line for line in shown.splitlines())


def assert_user_error(proc: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0]


def test_seed_convert_note_and_the_two_views(gw):
    conversation_id = gw("demo", "seed").stdout.strip()
    inbox = json.loads(gw("conversations", "list", "--json").stdout)
    assert [c["id"] for c in inbox] == [int(conversation_id)]
    assert inbox[0]["customer"]["email"] == "customer@example.com"
    assert inbox[0]["ticket"] is None

    out = gw("convert", conversation_id, "--by", "agent@localhost", "--priority", "high").stdout
    assert "converted" in out
    tickets = json.loads(gw("conversations", "list", "--view", "tickets", "--json").stdout)
    inbox = json.loads(gw("conversations", "list", "--view", "inbox", "--json").stdout)
    assert [c["id"] for c in tickets] == [int(conversation_id)]
    assert [c["id"] for c in inbox] == [int(conversation_id)]
    assert tickets[0]["ticket"]["priority"] == "high"
    assert set(tickets[0]["ticket"]) >= {"type", "status", "priority", "assignee"}

    gw("note", conversation_id, "--by", "agent@localhost", "--text", "refund approved by Kim")
    gw("reply", conversation_id, "--by", "agent@localhost", "--text", "A new one is on its way!")
    shown = json.loads(gw("conversations", "show", conversation_id, "--json").stdout)
    assert [n["text"] for n in shown["notes"]] == ["refund approved by Kim"]
    assert [m["author_type"] for m in shown["messages"]] == ["customer", "agent"]
    assert {"id", "author_type", "via", "text", "created_at"} <= set(shown["messages"][0])
    assert {"title", "summary", "email_check", "sla"} <= set(shown["ticket"])

    raw = gw("conversations", "customer-view", conversation_id, "--json").stdout
    view = json.loads(raw)
    assert [m["text"] for m in view["messages"]] == [
        shown["messages"][0]["text"],
        "A new one is on its way!",
    ]
    assert {"author_name", "text", "created_at"} <= set(view["messages"][0])
    assert "refund approved" not in raw
    for internal in ("ticket", "priority", "high", "status", "notes", "assignee", "sla"):
        assert internal not in raw.lower()


def test_ticket_layer_commands(gw):
    cid = gw("demo", "seed").stdout.strip()
    gw("agents", "add", "bo@localhost", "--name", "Bo")
    agents = json.loads(gw("agents", "list", "--json").stdout)
    assert {a["email"] for a in agents} == {"agent@localhost", "bo@localhost"}
    gw("convert", cid, "--by", "agent@localhost")
    gw("assign", cid, "bo@localhost")
    gw("status-set", cid, "waiting_on_customer")
    gw("snooze", cid, "--until", "2d")
    ticket = json.loads(gw("conversations", "show", cid, "--json").stdout)
    assert ticket["state"] == "snoozed"
    assert ticket["ticket"]["assignee"] == "bo@localhost"
    assert ticket["ticket"]["status"] == "waiting_on_customer"
    gw("resolve", cid)
    shown = json.loads(gw("conversations", "show", cid, "--json").stdout)
    assert shown["state"] == "resolved" and shown["ticket"]["status"] == "resolved"
    kinds = [e["kind"] for e in shown["events"]]
    assert {"ticket.converted", "ticket.assigned", "conversation.snoozed"} <= set(kinds)
    status = json.loads(gw("status", "--json").stdout)
    assert status["conversations_open"] == 0
    assert status["tickets_open"] == 0
    assert set(status["inbound"]) >= {"accepted", "processed", "quarantined", "pending"}
    assert set(status["outbox"]) >= {"pending", "sent", "failed"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("conversations", "show", "999"), "no conversation 999"),
        (("conversations", "show", "abc"), "is not a conversation id"),
        (("convert", "1", "--by", "agent@localhost", "--priority", "sky"), "not a priority"),
        (("convert", "1", "--by", "nobody@localhost"), "no agent nobody@localhost"),
        (("snooze", "1", "--until", "someday"), "neither an ISO 8601 time nor a duration"),
        (("conversations", "list", "--view", "archive"), "Invalid value for '--view'"),
        (("no-such-command",), "No such command"),
        (("agents", "add", "not-an-address", "--name", "X"), "not a valid email address"),
    ],
)
def test_bad_input_gives_one_line_and_non_zero_exit(gw, args, fragment):
    gw("demo", "seed")
    assert_user_error(gw(*args, ok=False), fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("this is = not toml [", "not valid TOML"),
        ('broker_url = "kafka://x"', "broker_url: expected stub://"),
        ('[smtp]\nlisten = "nowhere"', "smtp.listen: expected HOST:PORT"),
        ('[smtp]\nlistne = "127.0.0.1:25"', "smtp.listne: unknown key"),
        (
            '[[apps]]\nname = "a"\nbrand = "A"\n[[apps.sla_policies]]\nname = "x"\n'
            'first_response = "soon"',
            "apps.0.sla_policies.0.first_response",
        ),
        (
            '[[apps]]\nname = "a"\nbrand = "A"\n[[apps.calendars]]\nname = "office"\n'
            'timezone = "Mars/Olympus"',
            "apps.0.calendars.0",
        ),
    ],
)
def test_broken_config_is_one_clear_line(gw, tmp_path, content, fragment):
    config = tmp_path / "gateway.toml"
    config.write_text(content)
    proc = gw("config", "check", ok=False, config=config)
    assert_user_error(proc, fragment)
    # Every other command refuses the same way.
    assert_user_error(gw("status", ok=False, config=config), fragment)


def test_missing_config_file(gw, tmp_path):
    assert_user_error(gw("status", ok=False, config=tmp_path / "nope.toml"), "no such file")


def test_example_config_is_valid(gw, tmp_path):
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    assert "config ok" in gw("config", "check", config=example).stdout


@pytest.mark.skipif(not PG_URL, reason="GATEWAY_TEST_DATABASE_URL not set")
def test_cli_on_postgresql(gw, tmp_path):
    from tests.conftest import reset_postgres

    assert PG_URL
    reset_postgres(PG_URL).dispose()
    config = tmp_path / "pg.toml"
    config.write_text(
        f'database_url = "{PG_URL}"\n[[apps]]\nname = "demo"\nbrand = "Demo"\n'
        '[[apps.channels]]\nname = "support"\naddresses = ["support@localhost"]\n'
    )
    cid = gw("demo", "seed", config=config).stdout.strip()
    gw("convert", cid, "--by", "agent@localhost", "--priority", "urgent", config=config)
    tickets = json.loads(
        gw("conversations", "list", "--view", "tickets", "--json", config=config).stdout
    )
    assert [t["ticket"]["priority"] for t in tickets] == ["urgent"]


def test_serve_starts_and_stops_on_sigterm(tmp_path):
    env = clean_env(GATEWAY_DATA_DIR=str(tmp_path / "data"))
    # The embedded default, on free ports: the README's own `gateway serve` may be running.
    smtp, http = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    args = ["serve", "--smtp-listen", smtp, "--http-listen", http]
    with serve_process(args, cwd=tmp_path, env=env) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "running" in first, first + (proc.stderr.read() if proc.poll() is not None else "")
        stop_cleanly(proc)
    assert (tmp_path / "data" / "gateway.db").exists()


# --- gateway parse / explain -------------------------------------------------------------

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONTRACT_KEYS = {
    "message_id",
    "in_reply_to",
    "references",
    "from",
    "to",
    "subject",
    "date",
    "text",
    "html",
    "reply_text",
    "signature",
    "is_auto_reply",
    "is_bounce",
    "bounce",
    "attachments",
    "defects",
}


def write(tmp_path: Path, name: str, msg: EmailMessage | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(msg if isinstance(msg, bytes) else msg.as_bytes())
    return str(path)


def test_parse_json_has_the_contract_keys(gw):
    data = json.loads(
        gw(
            "parse", str(FIXTURES / "parse/clients/thunderbird_plain_nl_signature.eml"), "--json"
        ).stdout
    )
    assert set(data) >= CONTRACT_KEYS
    assert data["from"] == {"name": "Jan de Vries", "address": "jan@example.nl"}
    assert data["to"] == ["support@acme-help.example"]
    assert data["reply_text"] == "Dank je, dat klopt."
    assert data["signature"] == "-- \nJan de Vries\nTel. 06-12345678"
    assert data["is_bounce"] is False and data["bounce"] is None
    assert data["date"] == "2024-03-12T09:30:00+01:00"


def test_parse_json_of_a_bounce(gw):
    data = json.loads(
        gw("parse", str(FIXTURES / "bounces/exim/dsn_multipart_two_addresses.eml"), "--json").stdout
    )
    expected = json.loads((FIXTURES / "bounces/exim/dsn_multipart_two_addresses.json").read_text())
    assert data["is_bounce"] is True
    assert data["bounce"]["permanent"] is expected["permanent"]
    assert data["bounce"]["recipients"] == expected["recipients"]


def test_parse_of_a_message_over_a_limit_is_one_line(gw, tmp_path):
    inner = EmailMessage()
    inner.set_content("deep")
    for _ in range(60):
        outer = EmailMessage()
        outer["From"] = "a@example.com"
        outer.make_mixed()
        outer.attach(inner)
        inner = outer
    proc = gw("parse", write(tmp_path, "deep.eml", inner), "--json", ok=False)
    assert_user_error(proc, "would be quarantined: MIME nesting deeper than 50")
    assert_user_error(gw("parse", str(tmp_path / "missing.eml"), ok=False), "missing.eml")


def test_explain_names_the_rule_the_conversation_and_the_filter(gw, tmp_path):
    first = EmailMessage()
    first["From"] = "Carol <carol@example.com>"
    first["To"] = "support@localhost"
    first["Subject"] = "Parcel never arrived"
    first["Message-ID"] = "<carol-1@example.com>"
    first.set_content("Order 1234 has not arrived.")
    gw("import", write(tmp_path, "first.eml", first))

    reply = EmailMessage()
    reply["From"] = "carol@example.com"
    reply["To"] = "support@localhost"
    reply["Subject"] = "Re: Invoice address"
    reply["Message-ID"] = "<carol-2@example.com>"
    reply["References"] = "<carol-1@example.com>"
    reply["Auto-Submitted"] = "auto-replied"
    reply.set_content("I am away until Monday.")
    out = gw("explain", write(tmp_path, "reply.eml", reply)).stdout
    # Nothing is stored, so the outcome names no message number that will never exist.
    assert "outcome: would be added to conversation 1 (references)" in out
    assert "stored as" not in out and "message " not in out.split("\n")[0]
    assert "threading rule: references" in out
    assert "conversation: 1 (Parcel never arrived)" in out
    assert "auto-reply: Auto-Submitted: auto-replied" in out
    assert 'flag: possible_new_topic {"previous_subject": "Parcel never arrived"}' in out
    # Explain stores nothing: the same mail explained again threads the same way, not as a
    # duplicate, and the conversation still has one message.
    assert "threading rule: references" in gw("explain", str(tmp_path / "reply.eml")).stdout
    shown = json.loads(gw("conversations", "show", "1", "--json").stdout)
    assert len(shown["messages"]) == 1

    other = EmailMessage()
    other["From"] = "dan@example.com"
    other["To"] = "support@localhost"
    other["Subject"] = "Where is my refund?"
    other.set_content("Hello, I am still waiting.")
    out = gw("explain", write(tmp_path, "new.eml", other)).stdout
    assert "outcome: would start a new conversation with this message" in out
    assert "stored as" not in out
    assert len(json.loads(gw("conversations", "list", "--json").stdout)) == 1

    out = gw("explain", str(FIXTURES / "bounces/postfix/modern_dsn.eml")).stdout
    assert "outcome: bounce (permanent, postfix)" in out and "filter: bounce" in out

    spam = EmailMessage()
    spam["From"] = "x@spam.example"
    spam["Subject"] = "win"
    spam["X-Spam-Flag"] = "YES"
    spam.set_content("prize")
    out = gw("explain", write(tmp_path, "spam.eml", spam)).stdout
    assert "outcome: quarantined: flagged as spam by the upstream filter" in out
    assert "pipeline step: spam" in out
