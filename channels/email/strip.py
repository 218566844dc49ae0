"""Separate the new text of an inbound email from quoted history and signatures.

Support agents and the chat thread only need what the customer wrote this time,
not the whole conversation that every mail client appends below (or above) the
reply. This module finds the start of the quoted history in plain text and in
HTML bodies from the common clients (Gmail, Outlook desktop/web/mobile, Apple
Mail, Thunderbird, Yahoo, phone clients) in a dozen languages, and cuts the
RFC 3676 ``-- `` signature and "Sent from my iPhone"-style lines.

Nothing is ever thrown away: what was cut is returned next to the reply so an
agent can always expand it. The heuristics are deliberately conservative --
keeping a few lines of history is cheap, losing a customer's sentence is not --
so forwards, inline (interleaved) replies and anything ambiguous are kept whole.

All matching is line based with length-bounded patterns, so the cost stays
linear in the size of the message whatever it contains.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from html.parser import HTMLParser

__all__ = ["Stripped", "html_to_text", "strip_reply"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stripped:
    reply_text: str  # the new text only, trimmed
    quoted: str  # the cut quoted history ('' if none)
    signature: str  # the cut signature ('' if none)
    forwarded: bool  # True if the message was recognised as a forward (then nothing is cut)


# Longer lines are never attribution or header lines; skipping them keeps every
# regex below working on short strings only.
_MAX_MARKER_LINE = 400

# --- reply attribution lines ("On <date>, <name> wrote:") -------------------------------

# Each client/language writes the attribution differently; the verb is the
# reliable part. Patterns run on one line, or on two lines joined by a space
# because Gmail and Outlook wrap long attributions.
_ATTRIBUTION_RE = re.compile(
    "|".join(
        (
            r"^On\s.{3,300}\swrote\s?:$",  # English
            r"^Am\s.{3,300}\sschrieb(?:\s.{1,300})?:$",  # German
            r"^Le\s.{3,300}\sa\sécrit\s?:$",  # French
            r"^El\s.{3,300}\sescribió\s?:$",  # Spanish
            r"^(?:Em|No dia)\s.{3,300}\sescreveu\s?:$",  # Portuguese
            r"^Il\s.{3,300}\sha\sscritto\s?:$",  # Italian
            r"^Op\s.{3,300}\s(?:schreef(?:\s.{1,300})?|geschreven)\s?:$",  # Dutch
        )
    ),
    re.IGNORECASE,
)

# These languages have no fixed first word (Gmail starts with the weekday), so
# they also need a time or an address before they count.
_UNANCHORED_ATTRIBUTION_RE = re.compile(
    "|".join(
        (
            r"^.{3,300}\snapisał(?:\(a\)|a)?\s?:$",  # Polish
            r"^Wiadomość napisana przez\s.{3,300}:$",  # Polish, Apple Mail
            r"^.{3,300}\sskrev(?:\s.{1,300})?\s?:$",  # Swedish, Danish, Norwegian
            r"^.{3,300}\s(?:написал(?:\(а\)|а)?|пишет)\s?:$",  # Russian
        )
    ),
    re.IGNORECASE,
)

_TIME_RE = re.compile(r"\d{1,2}[:.]\d{2}")
_DIGIT_RE = re.compile(r"\d")
_YEAR_RE = re.compile(r"\d{4}")

# --- Outlook header blocks ----------------------------------------------------------------

_FROM_KEYS = frozenset(
    {"from", "von", "de", "van", "från", "fra", "od", "от", "da", "lähettäjä", "feladó"}
)
_OTHER_HEADER_KEYS = frozenset(
    {
        # en
        "sent", "date", "to", "subject", "cc", "bcc", "reply-to",
        # de
        "gesendet", "datum", "an", "betreff", "antwort an",
        # fr
        "envoyé", "à", "objet", "répondre à",
        # es / pt
        "enviado", "enviada", "enviado el", "fecha", "para", "asunto", "assunto", "data",
        # it
        "inviato", "a", "oggetto",
        # nl
        "verzonden", "aan", "onderwerp",
        # sv / da / no
        "skickat", "till", "ämne", "sendt", "dato", "til", "emne", "kopi",
        # pl
        "wysłano", "wysłane", "do", "temat", "dw",
        # ru
        "отправлено", "дата", "кому", "тема", "копия",
    }
)  # fmt: skip

_ORIGINAL_MESSAGE_PHRASES = frozenset(
    {
        "original message",
        "ursprüngliche nachricht",
        "message d'origine",
        "message d’origine",
        "mensaje original",
        "mensagem original",
        "messaggio originale",
        "oorspronkelijk bericht",
        "originalmeddelande",
        "ursprungligt meddelande",
        "oprindelig meddelelse",
        "opprinnelig melding",
        "wiadomość oryginalna",
        "исходное сообщение",
    }
)

# --- forwards ---------------------------------------------------------------------------

# Gmail/Thunderbird style: the phrase framed by dashes.
_FORWARD_DASHED_PHRASES = frozenset(
    {
        "forwarded message",
        "forwarded e-mail",
        "weitergeleitete nachricht",
        "message transféré",
        "mensaje reenviado",
        "mensagem encaminhada",
        "mensagem reencaminhada",
        "messaggio inoltrato",
        "doorgestuurd bericht",
        "wiadomość przekazana dalej",
        "przekazana wiadomość",
        "vidarebefordrat meddelande",
        "videresendt meddelelse",
        "videresendt melding",
        "пересылаемое сообщение",
        "переадресованное сообщение",
    }
)

# Apple Mail style: a sentence ending in a colon.
_FORWARD_INTRO_PHRASES = frozenset(
    {
        "begin forwarded message",
        "anfang der weitergeleiteten nachricht",
        "anfang der weitergeleiteten e-mail",
        "début du message réexpédié",
        "début du message transféré",
        "inicio del mensaje reenviado",
        "início da mensagem reencaminhada",
        "início da mensagem encaminhada",
        "inizio messaggio inoltrato",
        "begin doorgestuurd bericht",
        "początek przekazywanej wiadomości",
        "vidarebefordrat brev",
        "start på videresendt besked",
        "start på videresendt melding",
        "videresendt melding",
        "начало переадресованного сообщения",
        "начало пересылаемого сообщения",
    }
)

# --- signatures -------------------------------------------------------------------------

_MOBILE_PREFIX_RE = re.compile(
    r"^(?:sent from|sent with|get outlook for|von meinem|gesendet von|gesendet mit|"
    r"outlook für|envoyé de|envoyé depuis|obtenir outlook|enviado desde|enviado do|"
    r"enviado de|obtener outlook|inviato da|verzonden (?:vanaf|met|van)|wysłane z|"
    r"skickat från|sendt fra|отправлено с|отправлено из)\b",
    re.IGNORECASE,
)
# A device or app name must also appear, so "Sent from the warehouse today" survives.
_MOBILE_DEVICE_RE = re.compile(
    r"iphone|ipad|android|samsung|galaxy|pixel|huawei|xiaomi|blackberry|mobile|"
    r"smartphone|handy|tablet|outlook|yahoo|mail|telefon|teléfono|móvil|celular|"
    r"cellulare|телефон|ios\b|aol|proton|gmx|web\.de",
    re.IGNORECASE,
)
_MAX_MOBILE_LINE = 120
# A "-- " block longer than this is more likely content than a signature.
_MAX_SIGNATURE_LINES = 15


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


# --- HTML -------------------------------------------------------------------------------

_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip
_SKIP_TAGS = frozenset({"head", "script", "style", "title", "template", "noscript"})
_BLOCK_TAGS = frozenset(
    {"address", "article", "aside", "blockquote", "body", "center", "dd", "div", "dl", "dt",
     "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
     "hr", "html", "li", "main", "nav", "ol", "p", "pre", "section", "table", "tbody",
     "td", "tfoot", "th", "thead", "tr", "ul"}
)  # fmt: skip
_WS_RE = re.compile(r"[ \t\n\r\f\v\xa0\u200b]+")


class _Node:
    __slots__ = ("attrs", "children", "parent", "tag")

    def __init__(self, tag: str, attrs: dict[str, str], parent: _Node | None) -> None:
        self.tag = tag
        self.attrs = attrs
        self.parent = parent
        self.children: list[_Node | str] = []


class _TreeBuilder(HTMLParser):
    """Builds a forgiving element tree; mail HTML is rarely well formed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("#root", {}, None)
        self.stack: list[_Node] = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = _Node(tag, {k: v or "" for k, v in attrs}, self.stack[-1])
        self.stack[-1].children.append(node)
        if tag not in _VOID_TAGS:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(_Node(tag, {k: v or "" for k, v in attrs}, self.stack[-1]))

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching open element; stray end tags are ignored.
        for k in range(len(self.stack) - 1, 0, -1):
            if self.stack[k].tag == tag:
                del self.stack[k:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def _parse_html(html: str) -> _Node:
    builder = _TreeBuilder()
    try:
        builder.feed(html)
        builder.close()
    except AssertionError:
        # html.parser asserts on unknown "<![keyword[" sections; neutralise them and retry.
        builder = _TreeBuilder()
        builder.feed(html.replace("<!", "&lt;!"))
        builder.close()
    return builder.root


_IN_PLACE = "in-place"
_TO_END = "to-end"


def _container_kind(node: _Node) -> str | None:
    """Classify known quote containers of the mail clients."""
    classes = node.attrs.get("class", "").split()
    node_id = node.attrs.get("id", "")
    if node_id in ("divRplyFwdMsg", "appendonsend"):
        # Outlook web: the header block is a sibling of the quoted body, so
        # everything from here to the end of the document is history.
        return _TO_END
    if (
        "gmail_quote" in classes
        or "gmail_quote_container" in classes
        or "moz-cite-prefix" in classes
        or "yahoo_quoted" in classes
        or node_id.startswith("yahoo_quoted")
        or node_id == "mail-editor-reference-message-container"
        or (node.tag == "blockquote" and node.attrs.get("type", "").lower() == "cite")
    ):
        return _IN_PLACE
    return None


class _Sink:
    """Accumulates rendered text lines, prefixing quote depth like a text client."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.parts: list[str] = []
        self.depth = 0

    def text(self, data: str, depth: int, pre: bool) -> None:
        if pre:
            chunks = data.replace("\r\n", "\n").split("\n")
            for k, chunk in enumerate(chunks):
                if k:
                    self.newline(depth)
                if chunk:
                    self._add(chunk, depth)
            return
        collapsed = _WS_RE.sub(" ", data)
        if not self.parts:
            collapsed = collapsed.lstrip(" ")
        if collapsed:
            self._add(collapsed, depth)
        elif "\xa0" in data:
            # Outlook and Gmail write empty paragraphs as "&nbsp;": a blank line.
            self._add("", depth)

    def _add(self, chunk: str, depth: int) -> None:
        if not self.parts:
            self.depth = depth
        self.parts.append(chunk)

    def newline(self, depth: int) -> None:
        d = self.depth if self.parts else depth
        body = "".join(self.parts).strip()
        self.lines.append(("> " * d + body).rstrip() if d else body)
        self.parts = []

    def ensure_newline(self, depth: int) -> None:
        if self.parts:
            self.newline(depth)

    def result(self) -> str:
        self.ensure_newline(0)
        # Stacked <br>s and empty divs would otherwise leave tall gaps in a chat view.
        out: list[str] = []
        for line in self.lines:
            if line.strip(" >") or not out or out[-1].strip(" >"):
                out.append(line)
        return "\n".join(out)


@dataclass(frozen=True)
class _HtmlRender:
    reply: str
    quoted: str
    has_container: bool
    interleaved: bool


def _render(root: _Node, remove: bool) -> _HtmlRender:
    """Render the tree to text, routing known quote containers to a second sink.

    With remove=False everything goes to the reply sink (used for forward
    detection and for interleaved replies).
    """
    reply, quoted = _Sink(), _Sink()
    sink = reply
    to_end = False
    has_container = False
    interleaved = False
    reply_text_since_container = False  # answer text after a removed container
    removed_any = False
    # Explicit stack instead of recursion: hostile HTML can nest very deeply.
    # Entries: (node, entering, container_started_here)
    stack: list[tuple[_Node | str, bool, bool]] = [(root, True, False)]
    depth = 0
    pre = 0
    container_depth = 0
    while stack:
        item, entering, started = stack.pop()
        if isinstance(item, str):
            sink.text(item, depth, pre > 0)
            if sink is reply and removed_any and item.strip():
                reply_text_since_container = True
            continue
        node = item
        tag = node.tag
        if entering:
            if tag in _SKIP_TAGS:
                continue
            kind = _container_kind(node)
            here = False
            if kind is not None:
                has_container = True
            if remove and kind == _TO_END and not to_end:
                to_end = True
                reply.ensure_newline(depth)
                sink = quoted
            elif remove and kind == _IN_PLACE and container_depth == 0 and not to_end:
                if reply_text_since_container:
                    # Text between two quote containers: an inline answer.
                    interleaved = True
                here = True
                container_depth += 1
                reply.ensure_newline(depth)
                sink = quoted
            if tag == "br":
                sink.newline(depth)
                continue
            if tag in _BLOCK_TAGS:
                sink.ensure_newline(depth)
            if tag == "blockquote":
                depth += 1
            if tag == "pre":
                pre += 1
            if tag in _VOID_TAGS:
                continue
            stack.append((node, False, here))
            stack.extend((child, True, False) for child in reversed(node.children))
        else:
            if tag == "blockquote":
                depth -= 1
            if tag == "pre":
                pre -= 1
            if tag in _BLOCK_TAGS:
                sink.ensure_newline(depth)
            if started:
                container_depth -= 1
                quoted.ensure_newline(depth)
                quoted.lines.append("")
                removed_any = True
                reply_text_since_container = False
                if not to_end:
                    sink = reply
    return _HtmlRender(
        reply=reply.result(),
        quoted=quoted.result().strip(),
        has_container=has_container,
        interleaved=interleaved,
    )


def _container_has_inline_answers(root: _Node) -> bool:
    """Gmail keeps inline answers inside its gmail_quote div, between blockquotes."""
    stack: list[_Node] = [root]
    while stack:
        node = stack.pop()
        classes = node.attrs.get("class", "").split()
        if node.tag == "div" and ("gmail_quote" in classes or "gmail_quote_container" in classes):
            seen_quote = False
            for child in node.children:
                if isinstance(child, str):
                    if seen_quote and child.strip():
                        return True
                elif child.tag == "blockquote":
                    seen_quote = True
                elif seen_quote and _has_text(child):
                    return True
            continue
        stack.extend(c for c in node.children if isinstance(c, _Node))
    return False


def _has_text(node: _Node) -> bool:
    stack: list[_Node | str] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if item.strip():
                return True
        elif item.tag not in _SKIP_TAGS:
            stack.extend(item.children)
    return False


def _strip_html(html: str) -> tuple[Stripped, bool]:
    """Strip an HTML body; also report whether it had a known quote container."""
    root = _parse_html(html)
    full = _render(root, remove=False)
    whole = _strip_text(full.reply)
    if whole.forwarded or not full.has_container:
        return whole, full.has_container
    split = _render(root, remove=True)
    if split.interleaved or _container_has_inline_answers(root):
        return whole, True
    inner = _strip_text(split.reply)
    if inner.forwarded:
        return whole, True
    reply_text = inner.reply_text
    if not reply_text or not split.reply.strip():
        return _keep_all(full.reply), True
    quoted = "\n\n".join(part for part in (inner.quoted, split.quoted) if part)
    return Stripped(reply_text, quoted, inner.signature, False), True


def html_to_text(html: str) -> str:
    """Render an HTML body to plain text the way the stripper sees it."""
    return _render(_parse_html(html), remove=False).reply.strip()


def _strip_reply_impl(text: str | None, html: str | None) -> Stripped:
    if text is not None and text.strip():
        from_text = _strip_text(text)
        if from_text.quoted or from_text.forwarded or not html:
            return from_text
        # The text alternative of some clients drops the quote markers that the
        # HTML part still carries in its containers.
        from_html, has_container = _strip_html(html)
        if has_container and (from_html.quoted or from_html.forwarded):
            return from_html
        return from_text
    if html:
        return _strip_html(html)[0]
    return _keep_all(text or "")


# The first prefix of a forward's subject, as the clients of the languages above write it.
# Outlook writes its "-----Original Message-----" block for a forward as for a reply, so the
# subject is the only sign. ("VS" is a forward in Danish and Norwegian Outlook.)
_FORWARD_SUBJECT_RE = re.compile(
    r"^\s*(?:fwd?|wg|tr|rv|enc|vs|vb|doorst|pd|пересл)\s*(?:\[\d+\])?\s*:", re.IGNORECASE
)


def is_forward_subject(subject: str | None) -> bool:
    return bool(subject and _FORWARD_SUBJECT_RE.match(subject))


def strip_reply(text: str | None, html: str | None = None, subject: str | None = None) -> Stripped:
    """Split an inbound message body into new text, quoted history and signature.

    ``text`` (the text/plain part) is preferred; ``html`` is used when there is
    no text, or when only the HTML carries a recognisable quote container. A
    ``subject`` that marks a forward keeps the whole body: what looks like
    quoted history is the forwarded message the customer wants us to read.
    """
    try:
        result = _strip_reply_impl(text, html)
        if result.quoted and is_forward_subject(subject):
            whole = text if text is not None and text.strip() else html_to_text(html or "")
            return _keep_all(whole, forwarded=True)
        return result
    except Exception:
        # A stripping bug must never drop an inbound message: fall back to the
        # unstripped body and leave a trace for fixing the heuristic.
        log.exception("strip_reply failed; keeping the whole body")
        if text is not None and text.strip():
            return _keep_all(text)
        return _keep_all(html or "")
