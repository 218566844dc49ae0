"""A flood of customer mail, for tests/security/test_mail_bombing.py and bench/notifications.py:
customer `s` writes the `k`-th mail of their own thread (the first opens it, the rest answer it
by In-Reply-To), so every customer's mails land in one conversation."""

from __future__ import annotations

from email.message import EmailMessage


def thread_mail(s: int, k: int, to: str, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = f"Customer {s} <customer{s}@example.com>"
    msg["To"] = to
    msg["Subject"] = f"Order {s}" if k == 0 else f"Re: Order {s}"
    msg["Message-ID"] = f"<thread-{s}-{k}@example.com>"
    if k:
        msg["In-Reply-To"] = msg["References"] = f"<thread-{s}-0@example.com>"
    msg.set_content(text)
    return msg
