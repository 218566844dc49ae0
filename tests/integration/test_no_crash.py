"""No input crashes the processor: random and mutated messages, and nesting and size bombs.

Every message goes the way real mail does (stored in `inbound_mail`, then processed by the
gateway with its configured limits, parsing in the worker processes) and must end either as
stored mail (a message, or a recorded decision such as a bounce or a duplicate) or as a
quarantine row with a reason: never still pending, never an unexplained failure.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import GatewayConfig, embedded_default
from gateway.inbound import process_inbound, store_batch
from gateway.runtime import Runtime
from tickets.inbound import IncomingMail
from tickets.models import InboundMail, InboundState, Message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SEEDS = sorted(FIXTURES.rglob("*.eml"))


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    path = tmp_path_factory.mktemp("nocrash")
    base = embedded_default()
    config: GatewayConfig = base.model_copy(
        update={
            "database_url": f"sqlite:///{path / 'gw.db'}",
            "data_dir": str(path),
            "limits": base.limits.model_copy(update={"parse_cpu_seconds": 1.0}),
        }
    )
    rt = Runtime.create(config)
    yield rt
    rt.close()


def run(runtime: Runtime, raw: bytes) -> InboundMail:
    [row_id] = store_batch(
        runtime,
        [
            IncomingMail(
                raw=raw,
                source="smtp",
                envelope_from="sender@example.com",
                envelope_to=["support@localhost"],
            )
        ],
    )
    process_inbound(runtime, row_id)
    with runtime.unit_of_work() as session:
        row = session.get(InboundMail, row_id)
        assert row is not None
        session.expunge(row)
    assert_accounted_for(runtime, row)
    return row


def assert_accounted_for(runtime: Runtime, row: InboundMail) -> None:
    assert row.state in (InboundState.PROCESSED, InboundState.QUARANTINED), row.state
    assert row.reason, "every outcome says what happened"
    if row.state == InboundState.PROCESSED and row.message_id is not None:
        with runtime.unit_of_work() as session:
            assert session.get(Message, row.message_id) is not None
    elif row.state == InboundState.PROCESSED:
        assert row.reason.startswith(("bounce", "duplicate", "dropped")), row.reason


def mutate(raw: bytes, rnd: random.Random) -> bytes:
    """One of the ways mail arrives broken: cut, bit rot, lost lines, garbage charsets."""
    data = bytearray(raw)
    for _ in range(rnd.randint(1, 4)):
        kind = rnd.randrange(7)
        if not data:
            break
        at = rnd.randrange(len(data))
        if kind == 0:
            del data[at:]
        elif kind == 1:
            data[at] = rnd.randrange(256)
        elif kind == 2:
            end = data.find(b"\n", at)
            del data[at : end if end != -1 else len(data)]
        elif kind == 3:
            data[at:at] = rnd.randbytes(rnd.randint(1, 40))
        elif kind == 4:
            data = bytearray(
                bytes(data).replace(b"charset=", b"charset=x-" + rnd.randbytes(3).hex().encode())
            )
        elif kind == 5:
            data = bytearray(bytes(data).replace(b"boundary=", b"boundary=x", 1))
        else:
            line_end = data.find(b"\n", at)
            line_start = data.rfind(b"\n", 0, at) + 1
            line = bytes(data[line_start : line_end if line_end != -1 else len(data)])
            data[line_start:line_start] = line * rnd.randint(2, 50)
    return bytes(data)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seed=st.sampled_from(SEEDS), mutation=st.randoms(use_true_random=False))
def test_mutated_messages_end_stored_or_quarantined(runtime, seed, mutation):
    run(runtime, mutate(seed.read_bytes(), mutation))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    raw=st.one_of(
        st.binary(max_size=3000),
        st.text(max_size=2000).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.lists(
            st.sampled_from(
                [
                    b"From: a@example.com\r\n",
                    b"From: =?utf-8?b?////?= <>\r\n",
                    b"Subject: =?x-bogus?q?=FF=FE?=\r\n",
                    b"Content-Type: multipart/mixed; boundary=b\r\n",
                    b"Content-Type: text/html; charset=utf-7\r\n",
                    b"Content-Transfer-Encoding: base64\r\n",
                    b"Content-Transfer-Encoding: quoted-printable\r\n",
                    b"Content-Disposition: attachment; filename*=utf-8''%FF%2e%2e%2f\r\n",
                    b"Message-ID: <x@y>\r\n",
                    b"In-Reply-To: <x@y>\r\n",
                    b"Auto-Submitted: auto-replied\r\n",
                    b"\r\n",
                    b"--b\r\n",
                    b"--b--\r\n",
                    b"=\r\n",
                    b"<div><blockquote>",
                    b"On Mon, 1 Jan 2024, A <a@b.c> wrote:\r\n",
                    b"> quoted\r\n",
                    b"\xff\xfe\x00",
                ]
            ),
            max_size=60,
        ).map(b"".join),
    )
)
def test_random_bytes_end_stored_or_quarantined(runtime, raw):
    run(runtime, raw)


def _nested(depth: int, kind: str) -> bytes:
    inner = EmailMessage()
    inner["From"] = "a@example.com"
    inner.set_content("deep down")
    for level in range(depth):
        outer = EmailMessage()
        outer["From"] = "a@example.com"
        outer["Subject"] = f"level {level}"
        if kind == "rfc822":
            outer.set_content(inner)
        else:
            outer.make_mixed()
            outer.attach(inner)
        inner = outer
    return inner.as_bytes()


def _many_parts(count: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Subject"] = "parts"
    msg.set_content("hello")
    for i in range(count):
        msg.add_attachment(b"x", maintype="application", subtype="octet-stream", filename=f"{i}")
    return msg.as_bytes()


HEADER = b"From: a@example.com\r\nSubject: bomb\r\nMessage-ID: <bomb@example.com>\r\n"

BOMBS = {
    "multipart nested 200 deep": (_nested(200, "mixed"), "MIME nesting deeper than 50"),
    "message/rfc822 nested 200 deep": (_nested(200, "rfc822"), "MIME nesting deeper than 50"),
    "3000 parts": (_many_parts(3000), "more than 1000 MIME parts"),
    "300 KB of headers": (
        b"X-Filler: "
        + b"y" * 998
        + b"\r\n" * 1
        + (b"X-Filler: " + b"y" * 998 + b"\r\n") * 300
        + HEADER
        + b"\r\nbody\r\n",
        "header section larger than 102400 bytes",
    ),
    "30 MB body": (
        HEADER + b"\r\n" + b"a" * (30 * 1024 * 1024),
        "message larger than 26214400 bytes",
    ),
    "HTML nested 200 000 deep": (
        HEADER + b"Content-Type: text/html\r\n\r\n" + b"<div><b>x</b>" * 200_000,
        "parsing took more than 1 s of CPU time",
    ),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_bombs_are_quarantined_with_the_reason(runtime, name):
    raw, reason = BOMBS[name]
    row = run(runtime, raw)
    assert row.state == InboundState.QUARANTINED
    assert row.reason == reason


def test_a_big_but_legal_message_is_stored(runtime):
    msg = EmailMessage()
    msg["From"] = "Big Sender <big@example.com>"
    msg["Subject"] = "logs"
    msg["Message-ID"] = "<big@example.com>"
    msg.set_content("The logs you asked for.")
    msg.add_attachment(bytes(8 * 1024 * 1024), "application", "gzip", filename="../../logs.tar.gz")
    row = run(runtime, msg.as_bytes())
    assert row.state == InboundState.PROCESSED
    with runtime.unit_of_work() as session:
        message = session.get(Message, row.message_id)
        assert message is not None and message.text == "The logs you asked for."
        [attachment] = message.attachments
        assert attachment.filename == "logs.tar.gz" and attachment.size == 8 * 1024 * 1024
