"""Where quoted history starts in a plain-text body: attribution lines, header blocks, forwards.

Every check is line based with length-bounded patterns, so the scan stays linear in the size of
the message whatever it contains.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from channels.email.strip.vocab import (
    _ATTRIBUTION_RE,
    _COLONLESS_ATTRIBUTION_RE,
    _DATE_HEADER_KEYS,
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


def _is_attribution(cleaned: str, quote_follows: bool = False) -> bool:
    """True for a reply attribution line ("On <date>, <name> wrote:" and its kin).

    ``quote_follows`` (the next non-blank line is '>'-quoted) is the evidence that lets the
    colon-less forms count: "2011/4/7 Name <addr>" and Android's "---- Name wrote ----".
    """
    framed = cleaned.startswith("--") and cleaned.endswith("--")
    line = cleaned.strip("*_ -")
    # Yahoo's mobile app runs the quoted text on after "wrote:" in the same line.
    run_on = line.find(" wrote:  ", 0, _MAX_MARKER_LINE)
    if run_on > 0:
        line = line[: run_on + len(" wrote:")]
    if len(line) > _MAX_MARKER_LINE or len(line) < 5:
        return False
    has_at = "@" in line
    if not line.endswith((":", "：")):
        return _is_colonless_attribution(line, has_at, quote_follows, framed)
    # A date or an address is what separates an attribution from prose like
    # "On the phone my colleague wrote:".
    if not has_at and _DIGIT_RE.search(line) is None:
        return False
    if _ATTRIBUTION_RE.match(line):
        return True
    if not (has_at or _TIME_RE.search(line)):
        return False
    if quote_follows and _OPENER_RE.match(" " + line, 1) and _DIGIT_RE.search(line):
        # "El <date>, <name> (<addr>) <verb>:" over a quote, whatever the verb's spelling
        # (a client's charset, or a language not listed).
        return True
    return _is_addressed_attribution(line) or _UNANCHORED_ATTRIBUTION_RE.match(line) is not None


def _is_colonless_attribution(line: str, has_at: bool, quote_follows: bool, framed: bool) -> bool:
    if line[-5:].lower() == "wrote":
        if quote_follows and framed:
            return True
        dated = _DIGIT_RE.search(line) is not None and (has_at or _TIME_RE.search(line))
        return bool(dated) and _COLONLESS_ATTRIBUTION_RE.match(line) is not None
    return quote_follows and _is_addressed_attribution(line + ":")


def _is_addressed_attribution(line: str) -> bool:
    """Gmail in languages without a verb (e.g. Russian): "<date> <time>, Name <addr>:".

    Checked by hand: as one regex the two open-ended parts backtrack quadratically.
    """
    if not line.endswith((">:", "> :", ">>:")):
        return False
    start = line.rfind("<")
    addr = line[start + 1 : line.find(">", start)].strip()
    if addr.startswith("mailto:"):
        addr = addr[len("mailto:") :]
    return (
        start > 3
        and "@" in addr
        and not any(ch.isspace() for ch in addr)
        and _YEAR_RE.search(line, 0, start) is not None
    )


def _header_key(line: str) -> str | None:
    """Return the lower-cased field name of an Outlook-style 'Key: value' line."""
    idx = line.find(":", 0, 40)
    wide = line.find("：", 0, 40)  # Chinese and Japanese clients write a full-width colon
    if wide > 0 and (idx < 0 or wide < idx):
        idx = wide
    if idx <= 0:
        return None
    # Outlook's plain-text rendering of bold labels is "*From:*".
    key = line[:idx].strip(" *\t\xa0").lower()
    if not key or len(key) > 30:
        return None
    return key


def _header_value(cleaned: str) -> str:
    return cleaned.split(":", 1)[1].strip(" *") if ":" in cleaned else cleaned.split("：", 1)[1]


# A header block may have blank lines between its fields (Outlook's plain text of a
# table), but never more than this many in a row, nor more than this many lines in all.
_MAX_BLOCK_GAP = 3
_MAX_BLOCK_LINES = 14


# Field names long enough to be told from prose when they follow another field on its line.
_INLINE_KEYS = sorted((k for k in _OTHER_HEADER_KEYS if len(k) >= 4), key=len, reverse=True)
_INLINE_HEADER_RE = re.compile(
    r"(?:^|\s)(?:" + "|".join(map(re.escape, _INLINE_KEYS)) + r")\s?:", re.IGNORECASE
)


# Every field name long enough to be told from prose, for headers collapsed onto one line,
# where clients may glue a name to the value before it ("... 13:46Nadawca: ...").
_ANY_KEYS = sorted((k for k in _HEADER_FIELDS if len(k) >= 4), key=len, reverse=True)
_GLUED_HEADER_RE = re.compile(
    r"(?:^|[\s\d*\"])(" + "|".join(map(re.escape, _ANY_KEYS)) + r")\s?:", re.IGNORECASE
)
# "-------- Ursprüngliche Nachricht --------Von: ..." on one line.
_RUN_ON_SEPARATOR_RE = re.compile(r"^-{2,}\s?([^-]{3,60}?)\s?-{2,}\s?(\S.{0,400})$")


def _collapsed_header(cleaned: str) -> bool:
    """A whole header block on one line: three fields or more, one a sender, and a date."""
    key = _header_key(cleaned)
    if key not in _HEADER_FIELDS or _DIGIT_RE.search(cleaned) is None:
        return False
    keys = [key, *(m.lower() for m in _GLUED_HEADER_RE.findall(cleaned, len(key)))]
    return len(keys) >= 3 and any(k in _FROM_KEYS for k in keys)


def _run_on_original_message(cleaned: str) -> bool:
    m = _RUN_ON_SEPARATOR_RE.match(cleaned)
    if m is None or m.group(1).strip().lower() not in _ORIGINAL_MESSAGE_PHRASES:
        return False
    rest = m.group(2)
    return _collapsed_header(rest) or _header_key(rest) in _FROM_KEYS


def _header_block_at(lines: list[str], i: int) -> bool:
    """True if a header block of a quoted message starts at line i.

    Either "From: <sender>" with two more fields of the same block (Outlook, in any of the
    languages), or a dated "Date:"/"Sent:" with another field, one of them naming an address
    (Hotmail and ticket systems start with the date).
    """
    cleaned = _clean_line(lines[i])
    key = _header_key(cleaned)
    is_from = key in _FROM_KEYS
    is_date = key in _DATE_HEADER_KEYS
    if not (is_from or is_date):
        return False
    value = _header_value(cleaned)
    if not value or (is_date and not is_from and _DIGIT_RE.search(value) is None):
        return False
    others, gap, addressed = 0, 0, "@" in value
    if is_from:
        # Outlook's header collapsed onto one line: "From: <sender> Sent: <date> To: ...".
        others = len(_INLINE_HEADER_RE.findall(value))
        if others >= 1 and _DIGIT_RE.search(value) is not None:
            return True
    prev_continued = False
    dated_from = False
    end = len(lines)
    for j in range(i + 1, min(i + _MAX_BLOCK_LINES, len(lines))):
        line = _clean_line(lines[j])
        if not line:
            gap += 1
            if gap > _MAX_BLOCK_GAP:
                break
            continue
        gap = 0
        other = _header_key(line)
        if other not in _OTHER_HEADER_KEYS and other not in _FROM_KEYS:
            if "@" in line and len(line) <= 120 and not prev_continued:
                # A long sender wrapped onto the next line ("From: Name\n<addr>").
                prev_continued = True
                continue
            end = j
            break
        prev_continued = False
        others += 1
        dated_from = is_from and others == 1 and other in _DATE_HEADER_KEYS
        addressed = addressed or "@" in line
        if is_from and others >= 2:
            return True
        if is_date and addressed and others >= 1:
            return True
    # Outlook's shortest block, "From: <addr>" and "Sent: <date>", counts only where nothing
    # but '>'-quoted lines follows it: text below could be the customer's.
    rest = (k for k in range(i + 1, len(lines)) if k >= end and lines[k].strip())
    return dated_from and addressed and all(_is_quoted(lines[k]) for k in rest)


def _block_top(lines: list[str], i: int) -> int:
    """Walk up from a header block over the rules and dated lines clients put above it.

    ("________", "====", "-----Original Message-----", "Message du : <date>".)
    """
    top = i
    j = i - 1
    while j >= 0:
        cleaned = _clean_line(lines[j])
        if not cleaned:
            j -= 1
            if top - j > _MAX_BLOCK_GAP:
                break
            continue
        key = _header_key(cleaned)
        dated_line = key in _DATE_HEADER_KEYS and _DIGIT_RE.search(cleaned) is not None
        # outlook.com starts its block with "To:"; only next to the block, not across a gap.
        field_above = key in _OTHER_HEADER_KEYS and top - j == 1 and len(cleaned) <= 200
        if _ATTRIBUTION_RE.match(cleaned.rstrip(":") + ":") and _DIGIT_RE.search(cleaned):
            # "Am <date> um <time> schrieb <name>" without its colon, over the block it heads.
            return j
        if not (
            _is_rule_line(cleaned) or _is_original_message(cleaned) or dated_line or field_above
        ):
            break
        top = j
        j -= 1
    return top


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
    """A line drawn with one character ("_____", "=====", "-----")."""
    return len(cleaned) >= 3 and cleaned[0] in "_=-~*" and not cleaned.strip(cleaned[0])


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
    prefix: str = ""  # reply text that shares the attribution's line ("reply On ... wrote:")


# A wrapped attribution spans at most this many lines (Polymail: "On <date> <name>",
# blank, "<", "mailto:<name> <addr>", "> wrote:").
_WRAP_LINES = 5
# The words an attribution starts with, for finding one that follows reply text on its line.
_OPENER_RE = re.compile(r"(?:(?<=\s)|(?<=-))(?:On|Am|Le|El|Em|Il|Op|På|Den|In data|W dniu)\s")


def _ends_marker(line: str) -> bool:
    tail = line.rstrip(" -*")
    return tail.endswith((":", "：")) or tail[-5:].lower() == "wrote"


def _quote_follows(lines: list[str], quoted: list[bool], j: int) -> bool:
    """True if the first non-blank line from j on is '>'-quoted."""
    for k in range(j, min(j + 4, len(lines))):
        if lines[k].strip():
            return quoted[k]
    return False


def _wrapped_attribution(lines: list[str], quoted: list[bool], i: int) -> int:
    """Width of an attribution that starts at line i and wraps over following lines, or 0."""
    n = len(lines)
    parts = [_clean_line(lines[i])]
    if _DIGIT_RE.search(parts[0]) is None and not _starts_attribution(parts[0]):
        return 0
    total = len(parts[0])
    for j in range(i + 1, min(i + _WRAP_LINES, n)):
        line = lines[j]
        if quoted[j]:
            # Inside an attribution, a line may start with the '>' that closes the address
            # the line above opened ("... <addr" / "> a écrit :"), or be Polymail's "> wrote:".
            head = " ".join(parts)
            inner = line.strip().lstrip(">").strip()
            if head.count("<") > head.count(">") and len(line) <= 120:
                line = "> " + inner
            elif len(inner) > 12 or not _ends_marker(inner):
                return 0
            else:
                line = inner
        cleaned = _clean_line(line)
        if not cleaned:
            # Only Polymail breaks an attribution with a blank line, before a lone "<".
            if j + 1 < n and lines[j + 1].strip() != "<":
                return 0
            continue
        parts.append(cleaned)
        total += len(cleaned) + 1
        if total > _MAX_MARKER_LINE:
            return 0
        # Android's "<date> Name <" wrapped before "<addr>", with no verb, ends at the ">";
        # Polymail's "> wrote:" on the next line would still belong to it.
        address_end = cleaned.endswith(">") and not (j + 1 < n and _ends_marker(lines[j + 1]))
        if not (_ends_marker(cleaned) or address_end):
            continue
        follows = _quote_follows(lines, quoted, j + 1)
        if not _is_attribution(" ".join(parts), follows):
            continue
        # The attribution may start on a later line: "Lorem" above "Den ... skrev:" is reply.
        if any(
            _starts_attribution(parts[k]) and _is_attribution(" ".join(parts[k:]), follows)
            for k in range(1, len(parts))
        ):
            return 0
        return j - i + 1
    return 0


def _starts_attribution(cleaned: str) -> bool:
    """True if a line begins the way attributions do: a date, or an opener word."""
    if cleaned[:1].isdigit() or _OPENER_RE.match(" " + cleaned, 1) is not None:
        return True
    # Gmail starts with the weekday in many languages ("ons 4 dec. 2024 kl. 20:42 skrev").
    return cleaned[:1].isalpha() and _YEAR_RE.search(cleaned, 0, 40) is not None


def _split_run_on(cleaned: str) -> str | None:
    """The reply text before an attribution that shares its line, or None."""
    for m in _OPENER_RE.finditer(cleaned, 1):
        prefix = cleaned[: m.start()].rstrip(" -")
        if prefix and _is_attribution(cleaned[m.start() :], True):
            return prefix
    return None


def _first_marker(lines: list[str], quoted: list[bool]) -> _Marker | None:
    """Find the earliest line that starts history or marks a forward."""
    n = len(lines)
    # The nearest line at or after each one that ends like an attribution: a wrapped
    # attribution can only start within reach of one.
    next_end = [n] * (n + 1)
    for j in range(n - 1, -1, -1):
        tail = lines[j][-40:]
        ends = _ends_marker(tail) or tail.rstrip().endswith(">")
        next_end[j] = j if ends else next_end[j + 1]
    for i in range(n):
        line = lines[i]
        in_reach = next_end[i] < i + _WRAP_LINES
        # Every marker has a colon, a rule, an address or a line ending like an
        # attribution within reach. Cheap gates first keep the scan fast on huge bodies.
        if (
            not in_reach
            and ":" not in line
            and "--" not in line
            and "__" not in line
            and "==" not in line
            and "@" not in line
        ):
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
        if cleaned[0] == "-" and _run_on_original_message(cleaned):
            return _Marker("outlook", i)
        if _header_key(cleaned) is not None and _collapsed_header(cleaned):
            return _Marker("outlook", _block_top(lines, i))
        if _header_key(cleaned) is not None and _header_block_at(lines, i):
            return _Marker("outlook", _block_top(lines, i))
        if len(cleaned) > _MAX_MARKER_LINE + 20:
            continue
        dated = "@" in cleaned or _DIGIT_RE.search(cleaned) is not None
        if not dated and cleaned[0] not in "-*":
            continue
        ends = _ends_marker(cleaned)
        if ends or " wrote:  " in cleaned or "@" in cleaned:
            follows = _quote_follows(lines, quoted, i + 1)
            if (ends or " wrote:  " in cleaned or follows) and _is_attribution(cleaned, follows):
                return _Marker("attribution", i)
            if follows and ends:
                prefix = _split_run_on(cleaned)
                if prefix is not None:
                    return _Marker("attribution", i, prefix=prefix)
        # A line that ends like an attribution is not the first of a wrapped one.
        if not ends and in_reach:
            width = _wrapped_attribution(lines, quoted, i)
            if width:
                return _Marker("attribution", i, width)
    return None
