"""Rate limits on what anonymous widget visitors can make the gateway do.

New visitors, messages and mailed confirmation links are counted per client address and per
conversation (`[rate_limits]` in the config, COUNT/PERIOD each). Over a limit the answer is 429
with `Retry-After` and a JSON `detail`, before any work is done.

The counts live in the database (`rate_windows`), not in the process: several gateway processes
behind one load balancer share them, and a restart does not reset them. Each key is a fixed
window (at most twice a limit can pass around a window's edge, which is fine for abuse
control); the key is a hash, so no client address is stored. Counting costs one short
transaction per limited request, which the widget's own writes outweigh.

The client address is the TCP peer. Only when the peer is one of `[http] trusted_proxies` is
X-Forwarded-For read, from the right, skipping the trusted proxies: the first other address is
the client. Otherwise a visitor could name any address it likes and never be limited.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import math
import random
from functools import cache

from fastapi import HTTPException, Request
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.config import parse_rate
from gateway.runtime import Runtime
from tickets.models import RateWindow

# What a limit is about, for the answer ("too many new chats from your network").
_WHAT = {
    "new_visitors_per_ip": "new chats from your network",
    "messages_per_ip": "messages from your network",
    "messages_per_conversation": "messages in this chat",
    "email_links_per_ip": "email addresses given from your network",
    "email_links_per_conversation": "email addresses given in this chat",
    "sign_in_per_ip": "sign-in attempts from your network",
    "sign_in_per_address": "sign-in attempts for this address",
}
# Now and then a new window clears windows that ended long ago, so the table stays small.
_CLEANUP_CHANCE = 0.01
_KEEP = dt.timedelta(days=2)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(proxies: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(request: Request, trusted_proxies: list[str]) -> str:
    """The visitor's address: the peer, or what trusted proxies say it is (see the module)."""
    peer = request.client.host if request.client else "unknown"
    networks = _networks(tuple(trusted_proxies))
    if not networks or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for v in request.headers.getlist("x-forwarded-for") for h in v.split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _trusted(hop, networks):
            return hop
    return peer


def _hit(
    session: Session, key: str, count: int, period: dt.timedelta, now: dt.datetime
) -> float | None:
    """Count one request; the seconds until the window ends when it is over the limit."""
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    start = epoch + ((now - epoch) // period) * period
    row = session.get(RateWindow, key, with_for_update=True)
    if row is None:
        try:
            with session.begin_nested():
                session.add(RateWindow(key=key, window_start=start, count=1))
        except IntegrityError:  # another process counted the same key first: count on theirs
            row = session.get(RateWindow, key, with_for_update=True, populate_existing=True)
            assert row is not None
        else:
            if random.random() < _CLEANUP_CHANCE:
                session.execute(delete(RateWindow).where(RateWindow.window_start < now - _KEEP))
            return None
    if row.window_start != start:
        row.window_start, row.count = start, 1
        return None
    if row.count >= count:
        return (start + period - now).total_seconds()
    row.count += 1
    return None


def enforce(runtime: Runtime, request: Request, *checks: tuple[str, str]) -> None:
    """Count the request under each (limit, subject); 429 when one of them is used up.

    `subject` is what is counted: "ip" for the client address, else a conversation's token or
    an address signed in with.
    """
    limits = runtime.config.rate_limits
    now = runtime.clock()
    with runtime.unit_of_work() as session:
        for name, subject in checks:
            rate = parse_rate(getattr(limits, name))
            if rate is None:
                continue
            if subject == "ip":
                subject = client_address(request, runtime.config.http.trusted_proxies)
            key = hashlib.sha256(f"{name}\0{subject}".encode()).hexdigest()
            wait = _hit(session, key, *rate, now)
            if wait is not None:
                seconds = max(1, math.ceil(wait))
                raise HTTPException(
                    429,
                    f"too many {_WHAT[name]}; try again in {seconds} seconds",
                    headers={"Retry-After": str(seconds)},
                )
