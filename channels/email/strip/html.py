"""Strip an HTML body: render it to text, routing the clients' quote containers aside.

Gmail, Outlook, Apple Mail, Thunderbird and Yahoo wrap the quoted history in containers of their
own (gmail_quote, divRplyFwdMsg, blockquote type=cite, moz-cite-prefix, yahoo_quoted...). The
rendered reply then goes through the plain-text stripper for what the containers do not mark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

from channels.email.strip.text import Stripped, _keep_all, _strip_text

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
    # Outlook's web and mobile clients prefix the ids and classes they re-render with "x_".
    node_id = node.attrs.get("id", "").removeprefix("x_")
    if node_id in ("divRplyFwdMsg", "appendonsend", "OLK_SRC_BODY_SECTION", "zwchr"):
        # Outlook web and Mac, Zimbra: the header block is a sibling of the quoted
        # body, so everything from here to the end of the document is history.
        return _TO_END
    if node.tag == "blockquote" and "gmail_quote" in classes and not _after_attribution(node):
        # Gmail's own quote button makes this too, for text the customer quotes on purpose.
        return None
    if (
        "gmail_quote" in classes
        or "gmail_quote_container" in classes
        or "protonmail_quote" in classes
        or "zmail_extra" in classes
        or "moz-cite-prefix" in classes
        or "yahoo_quoted" in classes
        or node_id.startswith("yahoo_quoted")
        or node_id == "mail-editor-reference-message-container"
        or (node.tag == "blockquote" and node.attrs.get("type", "").lower() == "cite")
    ):
        return _IN_PLACE
    return None


def _after_attribution(node: _Node) -> bool:
    """True if a Gmail blockquote follows Gmail's attribution div ("On ... wrote:")."""
    if node.parent is None or len(node.parent.children) > 1000:
        return False
    siblings = [c for c in node.parent.children if isinstance(c, _Node)]
    k = siblings.index(node)
    return k > 0 and "gmail_attr" in siblings[k - 1].attrs.get("class", "").split()


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
    whole = _strip_text(full.reply, markup_quotes=True)
    if whole.forwarded or not full.has_container:
        return whole, full.has_container
    split = _render(root, remove=True)
    if split.interleaved or _container_has_inline_answers(root):
        return whole, True
    inner = _strip_text(split.reply, markup_quotes=True)
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
