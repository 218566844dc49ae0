"""Parse benchmark: the gateway's parse + strip + filters beside bare mail-parser, in one run.

    python bench/parse.py [--seconds 3] [--sizes 10240,102400]

For each size, on a generated corpus of realistic messages of about that size (multipart/
alternative plain + HTML, a reply on top of quoted history in the style of Gmail, Outlook and
Apple Mail, a signature; every fourth message with a small PDF and an inline image), it prints
messages per second for:

1. `mailparser.parse_from_bytes`: bare mail-parser, the limit the gateway's parse is measured
   against (it does no stripping, no sanitizing and no filtering);
2. `parse_message`: what the gateway does per message in the calling process: mail-parser plus
   the stdlib structure check, attachment extraction, nh3 sanitizing, quote and signature
   stripping, auto-reply, bounce and spam detection;
3. `parse_isolated`, one worker: the same, in a worker process under the CPU limit, called from
   one thread; the difference to 2 is the cost of the isolation per message;
4. `parse_isolated`, two workers and four calling threads: the throughput the isolation makes
   possible on two cores, since parsing no longer holds the caller's GIL.

"caller CPU" is the CPU time per message spent in this process (the one that would run the
pipeline and the database work); for 3 and 4 the parsing itself happens in the workers.
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import formatdate

import mailparser

from channels.email.isolate import ParserPool
from channels.email.parse import ParseLimits, parse_message

LIMITS = ParseLimits()
WORDS = [
    "order",
    "parcel",
    "refund",
    "invoice",
    "delivery",
    "address",
    "tracking",
    "number",
    "please",
    "thanks",
    "account",
    "password",
    "login",
    "error",
    "payment",
    "card",
    "subscription",
    "cancel",
    "upgrade",
    "plan",
    "support",
    "help",
    "issue",
]
ATTRIBUTIONS = (
    "On Mon, 4 Mar 2024 at 10:15, Support <support@acme.example> wrote:",
    "Am 04.03.2024 um 10:15 schrieb Support <support@acme.example>:",
    "Le lun. 4 mars 2024 à 10:15, Support <support@acme.example> a écrit :",
)


def _prose(seed: int, words: int) -> str:
    out = []
    for i in range(words):
        out.append(WORDS[(seed * 7 + i * 13) % len(WORDS)])
        if i % 12 == 11:
            out[-1] += ".\n" if i % 48 == 47 else "."
    return " ".join(out)


def make_message(seed: int, size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Customer {seed} <customer{seed}@example.com>"
    msg["To"] = "support@acme.example"
    msg["Subject"] = f"Re: {' '.join(WORDS[seed % 7 : seed % 7 + 3])}"
    msg["Date"] = formatdate(1_700_000_000 + seed * 60)
    msg["Message-ID"] = f"<bench-{seed}-{size}@example.com>"
    msg["In-Reply-To"] = f"<reply-{seed}@acme.example>"
    msg["References"] = f"<first-{seed}@example.com> <reply-{seed}@acme.example>"
    reply = _prose(seed, 60)
    # Plain and HTML share the budget; the quoted history fills what the reply leaves.
    history_words = max(10, (size // 2 - 1500) // 8)
    history = _prose(seed + 1, history_words)
    quoted = "\n".join("> " + line for line in history.splitlines())
    attribution = ATTRIBUTIONS[seed % len(ATTRIBUTIONS)]
    msg.set_content(f"{reply}\n\n-- \nCustomer {seed}\n\n{attribution}\n{quoted}\n")
    html_history = "".join(f"<p>{p}</p>" for p in history.splitlines())
    msg.add_alternative(
        f'<div dir="ltr">{reply}<br><br>-- <br>Customer {seed}</div>'
        f'<div class="gmail_quote"><div class="gmail_attr">{attribution}</div>'
        f'<blockquote class="gmail_quote">{html_history}</blockquote></div>',
        subtype="html",
    )
    if seed % 4 == 0:
        msg.add_attachment(b"%PDF-1.4\n" + bytes(1200), "application", "pdf", filename="scan.pdf")
        msg.add_attachment(
            base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"),
            "image",
            "png",
            filename="logo.png",
            disposition="inline",
            cid="<logo@example.com>",
        )
    return msg.as_bytes()


def corpus(size: int, count: int = 64) -> list[bytes]:
    return [make_message(seed, size) for seed in range(count)]


def measure(
    fn: Callable[[bytes], object], messages: list[bytes], seconds: float
) -> tuple[float, float]:
    """(messages/s, caller CPU ms/message) over at least `seconds`."""
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        for raw in messages:
            fn(raw)
        done += len(messages)
    wall = time.perf_counter() - start
    return done / wall, (time.process_time() - cpu) * 1000 / done


def measure_threads(
    fn: Callable[[bytes], object], messages: list[bytes], seconds: float, threads: int
) -> tuple[float, float]:
    with ThreadPoolExecutor(threads) as pool:
        done = 0
        start, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            list(pool.map(fn, messages))
            done += len(messages)
        wall = time.perf_counter() - start
    return done / wall, (time.process_time() - cpu) * 1000 / done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure")
    parser.add_argument("--sizes", default="10240,102400")
    args = parser.parse_args()
    one, two = ParserPool(1), ParserPool(2)
    try:
        for raw in corpus(1024, 4):  # start the workers outside the timed part
            one.parse(raw, LIMITS)
            two.parse(raw, LIMITS)
        print(f"{'size':>8} {'what':<44} {'msgs/s':>9} {'vs bare':>8} {'caller CPU ms/msg':>18}")
        for size in (int(s) for s in args.sizes.split(",")):
            messages = corpus(size)
            average = sum(map(len, messages)) // len(messages)
            bare, bare_cpu = measure(mailparser.parse_from_bytes, messages, args.seconds)
            rows = [
                ("mailparser.parse_from_bytes (limit)", bare, bare_cpu),
                (
                    "parse_message (parse+strip+filters)",
                    *measure(parse_message, messages, args.seconds),
                ),
                (
                    "parse_isolated, 1 worker, 1 thread",
                    *measure(lambda r: one.parse(r, LIMITS), messages, args.seconds),
                ),
                (
                    "parse_isolated, 2 workers, 4 threads",
                    *measure_threads(lambda r: two.parse(r, LIMITS), messages, args.seconds, 4),
                ),
            ]
            for what, rate, cpu in rows:
                print(f"{average:>8} {what:<44} {rate:>9.0f} {rate / bare:>7.2f}x {cpu:>18.2f}")
    finally:
        one.close()
        two.close()


if __name__ == "__main__":
    main()
