"""Where quoted history starts in a plain-text body: attribution lines, header blocks, forwards.

Every check is line based with length-bounded patterns, so the scan stays linear in the size of
the message whatever it contains.
"""

from __future__ import annotations

from dataclasses import dataclass

from channels.email.strip.vocab import (
    _ATTRIBUTION_RE,
    _DIGIT_RE,
    _FORWARD_DASHED_PHRASES,
    _FORWARD_INTRO_PHRASES,
    _FROM_KEYS,
    _HEADER_FIELDS,
    _MAX_MARKER_LINE,
    _ORIGINAL_MESSAGE_PHRASES,
    _OTHER_HEADER_KEYS,
    _TIME_RE,
    _UNANCHORED_ATTRIBUTION_RE,
    _YEAR_RE,
)


def _clean_line(line: str) -> str:
    """Normalise the spacing quirks clients put into marker lines."""
    if line.isascii():
        return line.strip()
    return line.replace("\xa0", " ").replace("\u202f", " ").replace("\u200b", "").strip()


def _is_quoted(line: str) -> bool:
    return line.lstrip(" \t").startswith(">")


# The helpers below take lines already passed through _clean_line: the scan
# cleans each line once, which matters on multi-megabyte bodies.


def _is_attribution(cleaned: str) -> bool:
    line = cleaned.strip("*_ ")
    # Yahoo's mobile app runs the quoted text on after "wrote:" in the same line.
    run_on = line.find(" wrote:  ", 0, _MAX_MARKER_LINE)
    if run_on > 0:
        line = line[: run_on + len(" wrote:")]
    if len(line) > _MAX_MARKER_LINE or not line.endswith(":"):
        return False
    # A date or an address is what separates an attribution from prose like
    # "On the phone my colleague wrote:".
    if "@" not in line and _DIGIT_RE.search(line) is None:
        return False
    if _ATTRIBUTION_RE.match(line):
        return True
    if not ("@" in line or _TIME_RE.search(line)):
        return False
    return _is_addressed_attribution(line) or _UNANCHORED_ATTRIBUTION_RE.match(line) is not None


def _is_addressed_attribution(line: str) -> bool:
    """Gmail in languages without a verb (e.g. Russian): "<date> <time>, Name <addr>:".

    Checked by hand: as one regex the two open-ended parts backtrack quadratically.
    """
    if not (line.endswith(">:") or line.endswith("> :")):
        return False
    start = line.rfind("<")
    addr = line[start + 1 : line.rfind(">")]
    return (
        start > 3
        and "@" in addr
        and not any(ch.isspace() for ch in addr)
        and _YEAR_RE.search(line, 0, start) is not None
    )


def _header_key(line: str) -> str | None:
    """Return the lower-cased field name of an Outlook-style 'Key: value' line."""
    idx = line.find(":", 0, 40)
    if idx <= 0:
        return None
    # Outlook's plain-text rendering of bold labels is "*From:*".
    key = line[:idx].strip(" *\t\xa0").lower()
    if not key or len(key) > 30:
        return None
    return key


def _outlook_block_at(lines: list[str], i: int) -> bool:
    """True if a 'From:' line at i starts a block of at least three header fields."""
    cleaned = _clean_line(lines[i])
    if _header_key(cleaned) not in _FROM_KEYS:
        return False
    if not cleaned.split(":", 1)[1].strip(" *"):
        return False
    others = 0
    for j in range(i + 1, min(i + 9, len(lines))):
        if not lines[j].strip():
            break
        if _header_key(_clean_line(lines[j])) in _OTHER_HEADER_KEYS:
            others += 1
            if others >= 2:
                return True
    return False


def _dash_framed_phrase(cleaned: str) -> str | None:
    if len(cleaned) > 120 or not (cleaned.startswith("--") and cleaned.endswith("--")):
        return None
    return cleaned.strip("- ").lower()


def _is_forward_marker(cleaned: str) -> bool:
    phrase = _dash_framed_phrase(cleaned)
    if phrase is not None and phrase in _FORWARD_DASHED_PHRASES:
        return True
    if len(cleaned) > 120 or not cleaned.endswith(":"):
        return False
    return cleaned.rstrip(": ").lower() in _FORWARD_INTRO_PHRASES


def _is_original_message(cleaned: str) -> bool:
    phrase = _dash_framed_phrase(cleaned)
    return phrase is not None and phrase in _ORIGINAL_MESSAGE_PHRASES


def _is_rule_line(cleaned: str) -> bool:
    return len(cleaned) >= 10 and not cleaned.strip("_")


# --- the same markers, for readers of a forward (channels/email/forwarded.py) ---------------


def is_forward_marker(line: str) -> bool:
    """Whether this line opens a forwarded message: Gmail's and Thunderbird's dashed
    "Forwarded message", Apple Mail's "Begin forwarded message:", in the languages above."""
    return _is_forward_marker(_clean_line(line))


def is_original_message_marker(line: str) -> bool:
    """Whether this line is Outlook's "-----Original Message-----" (in the languages above)."""
    return _is_original_message(_clean_line(line))


def header_field(line: str) -> tuple[str, str] | None:
    """A quoted header line read as (field, value): field is one of from, date, to, subject,
    cc, bcc, reply-to, whatever the language of its name ("Betreff:", "*Objet :*")."""
    cleaned = _clean_line(line)
    field = _HEADER_FIELDS.get(_header_key(cleaned) or "")
    if field is None:
        return None
    return field, cleaned.split(":", 1)[1].strip(" *\t")


@dataclass(frozen=True)
class _Marker:
    kind: str  # "forward", "outlook" or "attribution"
    index: int
    width: int = 1


def _first_marker(lines: list[str], quoted: list[bool]) -> _Marker | None:
    """Find the earliest line that starts history or marks a forward."""
    n = len(lines)
    for i in range(n):
        line = lines[i]
        # Every marker has a colon, a dash rule or an underscore rule (a wrapped
        # attribution has its colon on the next line). Cheap gates first keep
        # the scan fast on huge bodies.
        nxt_colon = i + 1 < n and lines[i + 1].rstrip().endswith(":")
        if ":" not in line and "--" not in line and "__" not in line and not nxt_colon:
            continue
        cleaned = _clean_line(line)
        if not cleaned:
            continue
        if quoted[i]:
            # Apple Mail puts its forward intro inside the cite blockquote; a quoted
            # attribution seen first means the forward is only part of the history.
            inner = cleaned.lstrip(" \t>").strip()
            if _is_forward_marker(inner):
                return _Marker("forward", i)
            if inner.endswith(":") and _is_attribution(inner):
                return None
            continue
        ends_colon = cleaned.endswith(":")
        if cleaned[0] in "-_" or (ends_colon and len(cleaned) <= 120):
            if _is_forward_marker(cleaned):
                return _Marker("forward", i)
            if _is_original_message(cleaned):
                return _Marker("outlook", i)
            if _is_rule_line(cleaned):
                # Outlook puts a line of underscores above the header block.
                j = i + 1
                while j < n and j <= i + 2 and not lines[j].strip():
                    j += 1
                if j < n and _outlook_block_at(lines, j):
                    return _Marker("outlook", i)
                continue
        if _header_key(cleaned) in _FROM_KEYS and _outlook_block_at(lines, i):
            return _Marker("outlook", i)
        dated = "@" in cleaned or _DIGIT_RE.search(cleaned) is not None
        if dated and (ends_colon or " wrote:  " in cleaned) and _is_attribution(cleaned):
            return _Marker("attribution", i)
        if (
            nxt_colon
            and not ends_colon
            and not quoted[i + 1]
            and len(line) + len(lines[i + 1]) < _MAX_MARKER_LINE
            and (dated or "@" in lines[i + 1] or _DIGIT_RE.search(lines[i + 1]) is not None)
            and _is_attribution(cleaned + " " + _clean_line(lines[i + 1]))
        ):
            return _Marker("attribution", i, 2)
    return None
