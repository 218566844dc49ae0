"""Why an inbound email is where it is: the lines `gateway explain` prints about a message's
threading rule and flags, read the same way from a processing record (before storing) and from
a stored message (`Message.flags`, where the store step keeps the rule under `thread_rule`), so
the CLI and the console's "Why is this here" say the same thing.
"""

from __future__ import annotations

import json
from typing import Any

# Flags that explain a decision, printed with their value (a dict or a reason).
_DETAILED = ("possible_new_topic", "answers_conversation_of_someone_else")
# Flags printed when set.
_WHEN_SET = (
    "duplicate_message_id",
    "reply_token_rejected",
    "forwarded",
    "forwarded_by",
    "forward_not_followed",
)


def rule_line(rule: str | None) -> str | None:
    return f"threading rule: {rule}" if rule else None


def flag_lines(flags: dict[str, Any], auto_reply: str | None = None) -> list[str]:
    """The auto-reply line (if it is one) and one line per flag that explains the threading."""
    lines = []
    if auto_reply:
        lines.append(f"auto-reply: {auto_reply} (stored; reopens, wakes and answers nothing)")
    for key in _DETAILED:
        if key in flags:
            lines.append(f"flag: {key} {json.dumps(flags[key], ensure_ascii=False)}")
    for key in _WHEN_SET:
        if flags.get(key):
            lines.append(f"flag: {key} {json.dumps(flags[key])}")
    return lines


def stored_lines(flags: dict[str, Any]) -> list[str]:
    """The same lines for a stored message, from its flags alone."""
    first = rule_line(flags.get("thread_rule"))
    return ([first] if first else []) + flag_lines(flags, flags.get("auto_reply"))
