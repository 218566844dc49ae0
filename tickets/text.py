"""Text every store can hold: what cannot be stored is replaced, not refused.

PostgreSQL refuses NUL in text and JSON, and no UTF-8 encoder takes a lone surrogate (which a
`utf-7` body, a `\\ud800` JSON escape or a surrogateescape'd header can produce). Mail must be
stored whatever it carries, so such characters become U+FFFD, the mark for "a character was
here that could not be read", which the team sees in place; and text longer than its column
(a display name, a subject) is clipped rather than failing the whole message.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clipped(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def storable(text: str) -> str:
    """`text` with NUL and lone surrogates replaced by U+FFFD (unchanged if it has none)."""
    return _UNSTORABLE.sub(REPLACEMENT, text)
