"""What the customer can see of a conversation, and nothing else.

`CustomerView` is built from public messages only, with display names and timestamps. It holds
plain values, not ORM objects, so a template or a JSON encoder handed a view cannot walk from it
to the ticket layer or the notes: there is no attribute that leads there.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from tickets.models import App, AuthorType, Conversation, Message, Via

# Words before a name that make what follows a surname: "Dr. Lopez" is not greeted "Hi Lopez".
_TITLES = frozenset(
    {"mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "herr", "frau", "fr", "hr",
     "m", "mme", "mlle", "sr", "sra", "srta", "dra"}
)  # fmt: skip
_LETTERS = re.compile(r"[^\W\d_]")


@dataclass(frozen=True, slots=True)
class CustomerMessage:
    author: str  # "customer" or "team": whether the customer wrote it
    author_name: str
    text: str
    created_at: dt.datetime
    via: str
    new: bool = False  # one of the messages a mail is about (see `customer_view(new_ids=)`)


@dataclass(frozen=True, slots=True)
class CustomerView:
    brand: str
    subject: str
    customer_name: str
    messages: tuple[CustomerMessage, ...]
    customer_first_name: str = ""  # what to greet them by; "" when their name has none
    # The conversation began by email and the customer never chatted: mail to them reads like
    # an ordinary email reply, not like the chat going on.
    started_by_email: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "brand": self.brand,
            "subject": self.subject,
            "messages": [
                {
                    "author": m.author,
                    "author_name": m.author_name,
                    "text": m.text,
                    "created_at": m.created_at.isoformat(),
                    "via": m.via,
                }
                for m in self.messages
            ],
        }


def customer_display_name(conversation: Conversation) -> str:
    customer = conversation.customer
    if customer.name:
        return customer.name
    if customer.addresses:
        return customer.addresses[0].address.split("@", 1)[0]
    return "You"


def first_name(name: str | None) -> str:
    """The first name in a display name ("Maria Lopez", "Lopez, Maria", "MARIA"), or "" when
    the name holds none (empty, an address, a title and a surname, no letters)."""
    name = " ".join((name or "").replace('"', " ").split())
    if "@" in name or any(ch.isdigit() for ch in name):
        return ""
    surname, comma, given = name.partition(",")
    words = (given if comma else surname).split()
    if not words or words[0].rstrip(".").casefold() in _TITLES or len(words[0]) > 40:
        return ""
    first = words[0].strip("'()[]")
    if not _LETTERS.search(first):
        return ""
    # "MARIA" and "maria" are written as a person writes their own name.
    return first.title() if first.isupper() or first.islower() else first


def started_by_email(conversation: Conversation) -> bool:
    """Whether the customer began this conversation by email and has never chatted in it."""
    return conversation.started_via == Via.EMAIL and not any(
        m.author_type == AuthorType.CUSTOMER and m.via == Via.CHAT for m in conversation.messages
    )


def _participant_name(conversation: Conversation, message: Message) -> str:
    """Who of the people the customer copied wrote this: their name, else their address's
    local part (as for the customer)."""
    address = message.from_address or ""
    for participant in conversation.participants:
        if participant.address == address and participant.name:
            return participant.name
    return address.split("@", 1)[0] or customer_display_name(conversation)


def customer_view(
    app: App, conversation: Conversation, *, new_ids: Collection[int] = ()
) -> CustomerView:
    """The customer's view; messages whose id is in `new_ids` are flagged `new` (the ids
    themselves stay behind)."""
    customer_name = customer_display_name(conversation)
    messages = []
    for message in conversation.messages:
        if message.author_type == AuthorType.CUSTOMER and message.flags.get("participant"):
            author, name = "customer", _participant_name(conversation, message)
        elif message.author_type == AuthorType.CUSTOMER:
            author, name = "customer", customer_name
        elif message.author_type == AuthorType.AGENT and message.agent is not None:
            author, name = "team", message.agent.name
        else:
            author, name = "team", app.brand
        messages.append(
            CustomerMessage(
                author=author,
                author_name=name,
                text=message.text,
                created_at=message.created_at,
                via=message.via.value,
                new=message.id in new_ids,
            )
        )
    return CustomerView(
        brand=app.brand,
        subject=conversation.subject,
        customer_name=customer_name,
        messages=tuple(messages),
        customer_first_name=first_name(conversation.customer.name),
        started_by_email=started_by_email(conversation),
    )
