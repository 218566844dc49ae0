"""Addresses from mail headers (From, To, Cc, Sender, Reply-To): identity is the address, never
the display name.

An RFC 2047 encoded-word may stand only in a display name or a comment (RFC 2047 section 5), so
a header is split into addresses while every encoded-word is still an opaque word, and only the
display names are decoded afterwards. Decoding first is how `=?utf-8?Q?alice=40victim=2Etest?=
<mallory@mallory.test>` became Alice, and how Outlook's `=?iso-8859-1?Q?M=FCller=2C_Hans?=`
became two addresses, one of them "müller".

The splitting is the stdlib's RFC 5322 parser (the one behind `email.headerregistry`: groups,
comments, quoted local parts, obsolete routes and phrases). Python 3.11 has no strict mode for
`email.utils.getaddresses`, and this parser, left to itself, decodes encoded-words inside an
address and reads `foo@bar.test <other@x.test>` as foo@bar.test; so encoded-words are masked
while it runs, and a part it could not read as a mailbox but that holds an `@` or `<` makes the
header unreadable rather than a guess.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from email import _header_value_parser as rfc5322
from email.errors import HeaderParseError
from email.message import Message

from channels.email.headers import decode_words
from tickets.text import storable

_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")
# NUL is left to `storable` (U+FFFD, so the team sees something was there).
_CONTROL = re.compile(r"[\x01-\x1f\x7f]")


@dataclass(frozen=True)
class Mailbox:
    name: str  # the display name, decoded; '' if none
    address: str  # as written (the local part keeps its case)


@dataclass(frozen=True)
class AddressField:
    mailboxes: tuple[Mailbox, ...] = ()
    # Parts that look like an address (an `@` or `<`) but are not one the parser could read.
    unreadable: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses, lowercased, each once, in order."""
        return tuple(dict.fromkeys(m.address.lower() for m in self.mailboxes))


class NoSender(ValueError):
    """The From header names no one address a conversation can belong to."""


def raw_values(msg: Message, name: str) -> list[str]:
    """Every value of header `name` as it was on the wire, unfolded; raw 8-bit bytes (RFC 6532
    UTF-8, or a broken client's Latin-1) read as UTF-8 with U+FFFD for what is not."""
    wanted = name.lower()
    values = []
    for key, value in msg.raw_items():
        if key.lower() != wanted:
            continue
        text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        values.append(storable(_CONTROL.sub(" ", _FOLD.sub("", text))))
    return values


def parse_addresses(values: Iterable[str]) -> AddressField:
    """Split raw (undecoded) header values into mailboxes; decode only the display names."""
    return _parse_addresses(tuple(values))


# One mail's From is read by the sender check, the auto-reply filter and the bounce filter, and
# the stdlib's RFC 5322 parser is slow pure Python (a third of a plain mail's parse): the same
# values are split once. The result is immutable, so sharing it is safe.
@functools.lru_cache(maxsize=1024)
def _parse_addresses(values: tuple[str, ...]) -> AddressField:
    mailboxes: list[Mailbox] = []
    unreadable: list[str] = []
    for value in values:
        masked, words = _mask(value)
        try:
            parsed, rest = rfc5322.get_address_list(masked)
        except (HeaderParseError, IndexError, ValueError, TypeError, AttributeError) as exc:
            unreadable.append(f"{value[:200]} ({type(exc).__name__})")
            continue
        if rest.strip():
            unreadable.append(_unmask(rest, words))
        for item in parsed.addresses:
            for box in item.all_mailboxes:
                text = _unmask(str(box), words).strip()
                # The parser marks a mailbox with trailing junk by its token type only.
                valid = box.token_type == "mailbox"  # noqa: S105 - a parse token, no secret
                if not valid or not box.local_part or not box.domain:
                    # A bare word before an unquoted comma ("Smith, John <j@x>") is a piece
                    # of a name; anything with an address sign in it is not to be guessed at.
                    if "@" in text or "<" in text:
                        unreadable.append(text)
                    continue
                address = _unmask(box.addr_spec, words)
                name = box.display_name or " ".join(box.comments)
                mailboxes.append(Mailbox(_display(_unmask(name, words)), address))
    return AddressField(tuple(mailboxes), tuple(unreadable))


def header_addresses(msg: Message, name: str) -> AddressField:
    return parse_addresses(raw_values(msg, name))


def sender(msg: Message) -> Mailbox:
    """The one mailbox of the From header(s); NoSender says why there is none."""
    values = raw_values(msg, "From")
    if not values:
        raise NoSender("no From header")
    field = parse_addresses(values)
    if field.unreadable:
        raise NoSender(f"From header not readable as an address: {field.unreadable[0][:200]!r}")
    if not field.mailboxes:
        raise NoSender(f"no sender address in From: {' '.join(values)[:200]!r}")
    if len(field.addresses) > 1:
        raise NoSender(f"more than one sender address in From: {', '.join(field.addresses)}")
    return field.mailboxes[0]


def _mask(value: str) -> tuple[str, dict[str, str]]:
    """`value` with each encoded-word replaced by a plain word, and the map back."""
    marker = "ew" + uuid.uuid4().hex
    words: dict[str, str] = {}

    def keep(match: re.Match[str]) -> str:
        # Digits between two letters: no placeholder is a substring of another.
        key = f"{marker}n{len(words)}n"
        words[key] = match.group(0)
        return key

    return _ENCODED_WORD.sub(keep, value), words


def _unmask(text: str, words: dict[str, str]) -> str:
    for key, word in words.items():
        text = text.replace(key, word)
    return text


def _display(name: str) -> str:
    # A decoded name may carry what no raw header can (`=0D=0A`, `=00`): it is one line of text.
    return " ".join(_CONTROL.sub(" ", storable(decode_words(name))).split())
