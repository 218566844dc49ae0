"""Strip a plain-text body: cut the quoted history found by `markers`, then the signature."""

from __future__ import annotations

from dataclasses import dataclass

from channels.email.strip.markers import _clean_line, _first_marker, _is_quoted
from channels.email.strip.vocab import (
    _MAX_MOBILE_LINE,
    _MAX_SIGNATURE_LINES,
    _MOBILE_DEVICE_RE,
    _MOBILE_PREFIX_RE,
)


@dataclass(frozen=True)
class Stripped:
    reply_text: str  # the new text only, trimmed
    quoted: str  # the cut quoted history ('' if none)
    signature: str  # the cut signature ('' if none)
    forwarded: bool  # True if the message was recognised as a forward (then nothing is cut)


def _is_mobile_line(line: str) -> bool:
    cleaned = _clean_line(line)
    return (
        len(cleaned) <= _MAX_MOBILE_LINE
        and _MOBILE_PREFIX_RE.match(cleaned) is not None
        and _MOBILE_DEVICE_RE.search(cleaned) is not None
    )


def _split_signature(lines: list[str]) -> tuple[list[str], list[str]]:
    """Split reply lines into (body, signature)."""
    start: int | None = None
    last = len(lines) - 1
    while last >= 0 and not lines[last].strip():
        last -= 1
    if last < 0:
        return lines, []
    if _is_mobile_line(lines[last]):
        start = last
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


def _join(lines: list[str]) -> str:
    return "\n".join(lines).strip()


def _keep_all(text: str, forwarded: bool = False) -> Stripped:
    return Stripped(reply_text=text.strip(), quoted="", signature="", forwarded=forwarded)


def _split_quote_blocks(lines: list[str], quoted: list[bool]) -> tuple[list[str], list[str]] | None:
    """Handle '>' quoting without attribution: one block at the end or at the start.

    Returns (reply, quoted) or None when the quoting is interleaved with answers,
    which we keep whole because the answers make no sense without the questions.
    """
    text_idx = [i for i, line in enumerate(lines) if line.strip() and not quoted[i]]
    quote_idx = [i for i, q in enumerate(quoted) if q]
    if not quote_idx or not text_idx:
        return None
    first_t, last_t = text_idx[0], text_idx[-1]
    if quote_idx[0] > last_t:
        return lines[: last_t + 1], lines[last_t + 1 :]
    if quote_idx[-1] < first_t:
        return lines[first_t:], lines[:first_t]
    return None


def _strip_text(text: str) -> Stripped:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    quoted = [_is_quoted(line) for line in lines]
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
        rest = range(h + w, len(lines))
        first = next((j for j in rest if lines[j].strip()), None)
        if first is None or not quoted[first]:
            # Unprefixed history (Outlook, Yahoo) or nothing: all of it is quoted.
            reply, cut = lines[:h], lines[h:]
        else:
            end = next((j for j in rest if j > first and lines[j].strip() and not quoted[j]), None)
            if end is None:
                reply, cut = lines[:h], lines[h:]
            elif not any(x.strip() for x in lines[:h]) and not any(quoted[end:]):
                # Bottom-posting: history on top, the answer below it.
                reply, cut = lines[end:], lines[:end]
            # Otherwise the reply is interleaved with the quote: keep everything.
    else:
        blocks = _split_quote_blocks(lines, quoted)
        if blocks is not None:
            reply, cut = blocks

    body, signature = _split_signature(reply)
    reply_text = _join(body)
    if not reply_text:
        return _keep_all(text)
    return Stripped(
        reply_text=reply_text, quoted=_join(cut), signature=_join(signature), forwarded=False
    )
