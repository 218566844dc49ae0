"""Strip a plain-text body: cut the quoted history found by `markers`, then the signature."""

from __future__ import annotations

from dataclasses import dataclass

from channels.email.strip.markers import _clean_line, _first_marker, _is_quoted, _is_rule_line
from channels.email.strip.vocab import (
    _MAX_MOBILE_LINE,
    _MAX_SIGNATURE_LINES,
    _MOBILE_DEVICE_RE,
    _MOBILE_GENERIC_RE,
    _MOBILE_PREFIX_RE,
)


@dataclass(frozen=True)
class Stripped:
    reply_text: str  # the new text only, trimmed
    quoted: str  # the cut quoted history ('' if none)
    signature: str  # the cut signature ('' if none)
    forwarded: bool  # True if the message was recognised as a forward (then nothing is cut)


def _is_mobile_line(line: str, last: bool = False) -> bool:
    cleaned = _clean_line(line)
    return (
        len(cleaned) <= _MAX_MOBILE_LINE
        and _MOBILE_PREFIX_RE.match(cleaned) is not None
        and (
            _MOBILE_DEVICE_RE.search(cleaned) is not None
            or (last and _MOBILE_GENERIC_RE.match(cleaned) is not None)
        )
    )


def _split_signature(lines: list[str]) -> tuple[list[str], list[str]]:
    """Split reply lines into (body, signature)."""
    start: int | None = None
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    if last < 0:
        return lines, []
    # A phone client writes its "Sent from my ..." line below what was typed: anything after
    # it is the history the client appended (Outlook for Android, without a marker).
    first_text = next(i for i, x in enumerate(lines) if x.strip())
    start = next(
        (i for i in range(first_text + 1, last + 1) if _is_mobile_line(lines[i], i == last)), None
    )
    if start is not None:
        start = _rule_above(lines, start)
    # Last delimiter wins: an earlier "--" is more likely part of the content.
    for i in range(last, -1, -1):
        if lines[i].rstrip() == "--" and lines[i].strip() == "--":
            after = sum(1 for x in lines[i + 1 : last + 1] if x.strip())
            if after <= _MAX_SIGNATURE_LINES:
                start = i if start is None else min(start, i)
            break
    if start is None:
        return lines, []
    return lines[:start], lines[start:]


# A rule ("_____") at most this many short lines above a "Sent from" line opens the signature
# that ends with it (name, company, then the phone line).
_MAX_RULED_SIGNATURE_LINES = 4
_MAX_RULED_SIGNATURE_LINE = 40


def _rule_above(lines: list[str], start: int) -> int:
    """Where a signature drawn under a rule starts, given the "Sent from" line it ends with."""
    short = 0
    for i in range(start - 1, -1, -1):
        line = lines[i].strip()
        if not line:
            continue
        if _is_rule_line(line):
            return i
        short += 1
        if short > _MAX_RULED_SIGNATURE_LINES or len(line) > _MAX_RULED_SIGNATURE_LINE:
            break
    return start


def _join(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def _keep_all(text: str, forwarded: bool = False) -> Stripped:
    return Stripped(reply_text=text.strip(), quoted="", signature="", forwarded=forwarded)


def _split_quote_blocks(
    lines: list[str], quoted: list[bool], markup_quotes: bool
) -> tuple[list[str], list[str]] | None:
    """Handle '>' quoting without attribution: one block at the end or at the start.

    Returns (reply, quoted) or None when the quoting is interleaved with answers,
    which we keep whole because the answers make no sense without the questions.
    """
    text_idx = [i for i, line in enumerate(lines) if line.strip() and not quoted[i]]
    quote_idx = [i for i, q in enumerate(quoted) if q]
    if not quote_idx or not text_idx:
        return None
    first_t, last_t = text_idx[0], text_idx[-1]
    block = range(quote_idx[0], quote_idx[-1] + 1)
    # One quote block, with no answer between its lines.
    solid = not any(lines[k].strip() and not quoted[k] for k in block)
    after = lines[block.stop :]
    if solid and first_t < block.start and _only_signature(after):
        # One quote block followed only by the signature: the quote is the history.
        return lines[: block.start] + after, lines[block.start : block.stop]
    if quote_idx[0] > last_t:
        if sum(1 for i in quote_idx if lines[i].strip(" \t>")) < 2:
            return None  # One quoted line alone is thin evidence of history: keep it.
        return lines[: last_t + 1], lines[last_t + 1 :]
    if quote_idx[-1] < first_t:
        return lines[first_t:], lines[:first_t]
    above = [k for k in text_idx if k < block.start]
    if solid and markup_quotes and above and not lines[above[-1]].rstrip().endswith(":"):
        # One HTML blockquote inside the reply ("message, quote, closing words") that the
        # customer did not introduce ("Your terms say:") as a citation: the quote is history.
        return lines[: block.start] + lines[block.stop :], lines[block.start : block.stop]
    return None


def _only_signature(lines: list[str]) -> bool:
    body, signature = _split_signature(lines)
    return bool(signature) and not any(x.strip() for x in body)


def _mailing_list_footer(lines: list[str]) -> int | None:
    """Where a list server's footer ("____", "<list> mailing list") starts, if it ends the text."""
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    for i in range(last - 1, max(last - 6, 0) - 1, -1):
        rule = lines[i].strip()
        if (
            len(rule) >= 2
            and not rule.strip("_")
            and lines[i + 1].strip().lower().endswith("mailing list")
        ):
            return i
    return None


def _mark_link_debris(lines: list[str], quoted: list[bool]) -> None:
    """Count as quoted the stray pieces of a wrapped link between two quoted lines.

    Clients that wrap a long quoted URL leave its tail without the '>' prefix; taken as
    text, it would make the history look like an inline answer.
    """
    for i in range(1, len(lines) - 1):
        if quoted[i] or not quoted[i - 1] or not quoted[i + 1]:
            continue
        line = lines[i].strip()
        if "://" in line or (line and " " not in line and "=" in line):
            quoted[i] = True


def _strip_text(text: str, markup_quotes: bool = False) -> Stripped:
    """Strip a plain-text body; ``markup_quotes`` when its '>' lines were HTML blockquotes."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    footer: list[str] = []
    footer_at = _mailing_list_footer(lines)
    if footer_at is not None:
        lines, footer = lines[:footer_at], lines[footer_at:]
    quoted = [_is_quoted(line) for line in lines]
    _mark_link_debris(lines, quoted)
    marker = _first_marker(lines, quoted)

    if marker is not None and marker.kind == "forward":
        return _keep_all(text, forwarded=True)

    reply: list[str] = lines
    cut: list[str] = []
    if marker is not None and marker.kind == "outlook":
        if not any(x.strip() for x in lines[: marker.index]):
            # A header block with nothing above it is a forward without an intro.
            return _keep_all(text, forwarded=True)
        reply, cut = lines[: marker.index], lines[marker.index :]
    elif marker is not None:
        h, w = marker.index, marker.width
        above = [*lines[:h], marker.prefix] if marker.prefix else lines[:h]
        rest = range(h + w, len(lines))
        first = next((j for j in rest if lines[j].strip()), None)
        if first is None or not quoted[first]:
            # Unprefixed history (Outlook, Yahoo) or nothing: all of it is quoted.
            reply, cut = above, lines[h:]
        else:
            end = next((j for j in rest if j > first and lines[j].strip() and not quoted[j]), None)
            if end is None:
                reply, cut = above, lines[h:]
            elif any(quoted[end:]):
                pass  # The reply is interleaved with the quote: keep everything.
            elif not any(x.strip() for x in above):
                # Bottom-posting: history on top, the answer below it.
                reply, cut = lines[end:], lines[:end]
            else:
                # One quote inside the reply ("answer, quote, closing words"): cut the quote.
                reply, cut = above + lines[end:], lines[h:end]
    else:
        blocks = _split_quote_blocks(lines, quoted, markup_quotes)
        if blocks is not None:
            reply, cut = blocks

    body, signature = _split_signature(reply)
    signature += footer
    reply_text = _join(body)
    if not reply_text:
        return _keep_all(text)
    return Stripped(
        reply_text=reply_text, quoted=_join(cut), signature=_join(signature), forwarded=False
    )
