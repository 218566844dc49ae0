"""flufl.bounce, asked only when none of our layouts reads a notice that is a bounce's.

Mailman's bounce detectors know layouts ours do not (SMTP32, GroupWise, Netscape, old
Exchange and AOL notices, Sina, forwarded reports, many one-off phrasings): on the public
corpora they read most of what ours miss. They look at any message, so they are only consulted
once the mail is known to come from mail software or is typed as a delivery report, like our
own free-text parsers, and they never overrule a parse of ours.

Their line-by-line matching costs about a third of a millisecond per line, and it reads every
text payload, the returned original's attachments included. A large bounce is therefore shown
to them as its headers and the first part of its notification text only.
"""

from __future__ import annotations

import logging
from email.message import Message

from flufl.bounce import all_failures

from channels.email.bounce.text import clean_addr, dedupe, raw_payload

log = logging.getLogger(__name__)

# Beyond this much payload text a notice is cut for flufl.bounce (see above).
_MAX_PAYLOAD = 32_000


def failed_recipients(msg: Message, notice: str) -> tuple[tuple[str, ...], bool] | None:
    """The recipients flufl.bounce finds and whether any failure is permanent, or None.

    `notice` is the bounce's notification text, shown in place of a large message's body.
    Only the recipients of the overall verdict are returned, so a notice that names a delayed
    address beside a failed one does not make the delayed one look dead.
    """
    try:
        temporary, permanent = all_failures(_within_budget(msg, notice))
    except Exception:
        log.debug("flufl.bounce failed on a notice", exc_info=True)
        return None
    chosen = permanent or temporary
    addresses = dedupe(
        a for a in (clean_addr(raw.decode("utf-8", "replace")) for raw in chosen) if a
    )
    return (addresses, bool(permanent)) if addresses else None


def _within_budget(msg: Message, notice: str) -> Message:
    size = 0
    for part in msg.walk():
        payload = raw_payload(part)
        if isinstance(payload, str):
            size += len(payload)
            if size > _MAX_PAYLOAD:
                break
    if size <= _MAX_PAYLOAD:
        return msg
    small = Message()
    for name, value in msg.items():
        if name.lower() not in ("content-type", "content-transfer-encoding"):
            small[name] = value
    small["Content-Type"] = "text/plain; charset=utf-8"
    small.set_payload(notice[:_MAX_PAYLOAD])
    return small
