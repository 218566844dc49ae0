"""The CPU limit per parsed message: worker processes that a pathological message cannot stall."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from channels.email.isolate import ParserPool, ParseTimeout
from channels.email.parse import MessageRejected, ParseLimits, parse_message

LIMITS = ParseLimits()


def message(body: bytes, ctype: str = "text/plain") -> bytes:
    return (
        b"From: Ann <ann@example.com>\r\nTo: support@example.com\r\nSubject: Hello\r\n"
        b"Message-ID: <m-1@example.com>\r\n"
        b"Content-Type: " + ctype.encode() + b"; charset=utf-8\r\n\r\n" + body
    )


NORMAL = message(b"Hi there\r\n\r\nOn Mon, 1 Jan 2024 at 10:00, Bob <b@x.com> wrote:\r\n> old\r\n")
# Unclosed nested <div>s: the HTML sanitizer's time grows with the square of the depth, inside
# native code where no Python signal handler can run.
NESTED_HTML = message(b"<div><b>x</b>" * 100_000, "text/html")


@pytest.fixture(scope="module")
def pool() -> Iterator[ParserPool]:
    p = ParserPool(size=2)
    yield p
    p.close()


def test_pool_parses_like_the_parser(pool: ParserPool) -> None:
    assert pool.parse(NORMAL, LIMITS).to_json() == parse_message(NORMAL).to_json()
    assert pool.parse(NORMAL, LIMITS).stripped.reply_text == "Hi there"


def test_a_limit_reason_comes_back_from_the_worker(pool: ParserPool) -> None:
    with pytest.raises(MessageRejected, match="header section larger than 10 bytes"):
        pool.parse(NORMAL, ParseLimits(max_header_bytes=10))


def test_stuck_in_native_code_is_stopped_by_the_kernel(pool: ParserPool) -> None:
    started = time.monotonic()
    with pytest.raises(ParseTimeout, match=r"more than 0.3 s of CPU time"):
        pool.parse(NESTED_HTML, LIMITS, cpu_seconds=0.3)
    # ceil(CPU used + budget) + 1 s at most, plus scheduling on a shared machine.
    assert time.monotonic() - started < 20
    assert pool.parse(NORMAL, LIMITS).stripped.reply_text == "Hi there"


def test_slow_python_code_is_stopped_by_the_timer(pool: ParserPool) -> None:
    huge = message(b"a line of a very long message\r\n" * 400_000)
    with pytest.raises(ParseTimeout):
        pool.parse(huge, LIMITS, cpu_seconds=0.05)
    assert pool.parse(huge, LIMITS, cpu_seconds=30).text.startswith("a line")


def test_a_worker_killed_while_idle_is_replaced(pool: ParserPool) -> None:
    pool.parse(NORMAL, LIMITS)
    for worker in list(pool._workers):
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
    assert pool.parse(NORMAL, LIMITS).stripped.reply_text == "Hi there"


def test_threads_share_the_pool(pool: ParserPool) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as threads:
        texts = list(threads.map(lambda _: pool.parse(NORMAL, LIMITS).text, range(30)))
    assert set(texts) == {parse_message(NORMAL).text}
    assert len(pool._workers) <= 2


def test_works_from_a_script_without_a_main_guard(tmp_path) -> None:
    # multiprocessing's spawn would import (and so run) such a script again in every worker.
    script = tmp_path / "script.py"
    script.write_text(
        "from channels.email.isolate import ParserPool\n"
        "from channels.email.parse import ParseLimits\n"
        "print('script ran')\n"
        "pool = ParserPool(1)\n"
        "print(pool.parse(b'From: a@example.com\\r\\n\\r\\nhello\\r\\n', ParseLimits()).text)\n"
        "pool.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.split() == ["script", "ran", "hello"]
