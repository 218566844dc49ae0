"""What the customer can see of a conversation, and nothing else.

`CustomerView` is built from public messages only, with display names and timestamps. It holds
plain values, not ORM objects, so a template or a JSON encoder handed a view cannot walk from it
to the ticket layer or the notes: there is no attribute that leads there.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from tickets.models import App, AuthorType, Conversation


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


def customer_view(
    app: App, conversation: Conversation, *, new_ids: Collection[int] = ()
) -> CustomerView:
    """The customer's view; messages whose id is in `new_ids` are flagged `new` (the ids
    themselves stay behind)."""
    customer_name = customer_display_name(conversation)
    messages = []
    for message in conversation.messages:
        if message.author_type == AuthorType.CUSTOMER:
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
    )
