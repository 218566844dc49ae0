"""Scores of the strip task on each public corpus (issue 14).

Each source is a folder `tests/corpora/<source>/cases/` of `<case>.txt` (a text/plain body) or
`<case>.html` (a text/html body) beside `<case>.json`, which holds the upstream's own answer:

- `"reply"`: the reply text the upstream's test expects once quotes and signatures are cut, with
  `"compare"` saying how strictly the upstream compared it:
  - `"lines"`: line by line. Line endings become LF, trailing spaces of each line and blank lines
    at either end are dropped and runs of blank lines count as one; everything else (words,
    punctuation, line breaks, leading indentation) must be equal.
  - `"nospace"`: the upstream compared with all whitespace removed (talon's HTML tests, whose
    answer is HTML), so we do too; from an HTML body our rendering's `> ` blockquote prefixes are
    dropped as well, since they are our way of drawing the same text.
  - `"snippets"`: the upstream only asserted that its answer contains the `"contains"` phrases
    and none of the `"excludes"` phrases (planer's example files); compared the same way.
- `"forward": true`: the upstream cuts a forwarded message as history; our contract keeps a
  forward whole and flags it, so the case is right when `Stripped.forwarded` is set. Where the
  upstream also names the text above the forwarded block (quotequail's `unwrap` calls every
  header block a forward, Outlook's replies too), a reply equal to that text is right as well.
- `"signature": "kept"`: the upstream cuts quotes only and leaves signatures in its answer
  (talon's and planer's `extract_from_*`, quotequail), so our reply is compared with the signature
  we cut put back below it (one line break or one blank line between, as in the body).

Beside ours, talon (mailgun's stripper, the best library that installs here: `test` extra) runs on
the same bodies: `extract_from_plain` on text and `extract_from_html` on HTML, whose HTML answer is
rendered to text with the same whitespace-blind comparison its own tests use.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from typing import Any

from channels.email.strip import strip_reply
from tests.understanding.score import CORPORA, Score, tally

try:
    import talon
    from talon import quotations as talon_quotations
except ImportError:  # the test extra is not installed: the table shows ours alone
    talon = None

TARGET = 0.95
LIBRARY = "talon 1.4"

_SPACE_RE = re.compile(r"\s+")
_QUOTE_PREFIX_RE = re.compile(r"^(?:> ?)+", re.MULTILINE)


@dataclass(frozen=True)
class Case:
    html: bool
    body: str
    answer: dict[str, Any]


def sources() -> list[str]:
    """The corpora of replies, not of bounces or auto-replies: their answers say how to compare."""
    return sorted(
        folder.parent.name
        for folder in CORPORA.glob("*/cases")
        if any('"compare"' in p.read_text(encoding="utf-8") for p in folder.glob("*.json"))
    )


def load(source: str) -> list[tuple[str, Case]]:
    cases = []
    for meta in sorted((CORPORA / source / "cases").glob("*.json")):
        answer = json.loads(meta.read_text(encoding="utf-8"))
        html = meta.with_suffix(".html")
        body_path = html if html.exists() else meta.with_suffix(".txt")
        with body_path.open(encoding="utf-8", newline="") as fh:
            body = fh.read()
        cases.append((meta.stem, Case(html=html.exists(), body=body, answer=answer)))
    return cases


def normalise_lines(text: str) -> str:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n")


def _same(case: Case, reply: str, forwarded: bool, *, ours: bool, signature: str = "") -> bool:
    if case.answer.get("forward") and forwarded:
        return True
    if "reply" not in case.answer and "contains" not in case.answer:
        return False
    if signature and case.answer.get("signature") == "kept":
        return any(
            _same(case, f"{reply}{gap}{signature}", False, ours=ours) for gap in ("\n", "\n\n")
        )
    if case.answer["compare"] == "snippets":
        flat = _SPACE_RE.sub(" ", reply)
        return all(x in flat for x in case.answer["contains"]) and not any(
            x in flat for x in case.answer["excludes"]
        )
    expected: str = case.answer["reply"]
    if case.answer["compare"] == "nospace":
        if case.html and ours:
            reply = _QUOTE_PREFIX_RE.sub("", reply)
        return _SPACE_RE.sub("", reply) == _SPACE_RE.sub("", expected)
    return normalise_lines(reply) == normalise_lines(expected)


def ours(case: Case) -> bool:
    result = strip_reply(None, case.body) if case.html else strip_reply(case.body)
    return _same(case, result.reply_text, result.forwarded, ours=True, signature=result.signature)


class _Text(HTMLParser):
    """Text of an HTML answer, for the whitespace-blind comparison."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.skip += tag in ("head", "style", "script", "title")
        self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self.skip -= self.skip > 0 and tag in ("head", "style", "script", "title")
        self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def _html_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


@cache
def _talon() -> Any:
    talon.init()
    return talon_quotations


def theirs(case: Case) -> bool:
    with warnings.catch_warnings():
        # html5lib, under talon, warns about every Outlook namespace it meets.
        warnings.simplefilter("ignore")
        return _theirs(case)


def _theirs(case: Case) -> bool:
    quotations = _talon()
    if case.html:
        reply = _html_text(quotations.extract_from_html(case.body))
        # talon keeps a forward whole: that is its way of recognising one.
        forwarded = _SPACE_RE.sub("", reply) == _SPACE_RE.sub("", _html_text(case.body))
    else:
        reply = quotations.extract_from_plain(case.body)
        forwarded = normalise_lines(reply) == normalise_lines(case.body)
    return _same(case, reply, forwarded, ours=False)


def scores() -> list[Score]:
    judge = theirs if talon is not None else None
    return [
        tally(Score("strip", source, TARGET, library=LIBRARY), load(source), ours, judge)
        for source in sources()
    ]
