"""One row of the understanding table: a task on one source, ours beside the best library."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

Case = TypeVar("Case")

CORPORA = Path(__file__).resolve().parent.parent / "corpora"


@dataclass
class Score:
    """The share right of one task on one source's cases."""

    task: str  # "strip", "bounces", "autoreplies"
    source: str  # the corpus folder under tests/corpora/, e.g. "email_reply_parser"
    target: float  # the share the task must reach on every source, e.g. 0.95
    total: int = 0
    ours: int = 0
    library: str = ""  # the best library we could install, measured on the same cases
    theirs: int | None = None  # its count right, None where it cannot do the task
    misses: list[str] = field(default_factory=list)  # case names we got wrong

    @property
    def share(self) -> float:
        return self.ours / self.total if self.total else 0.0

    @property
    def their_share(self) -> float | None:
        return None if self.theirs is None or not self.total else self.theirs / self.total

    @property
    def meets_target(self) -> bool:
        return self.total > 0 and self.share >= self.target


def tally(
    score: Score,
    cases: Iterable[tuple[str, Case]],
    ours: Callable[[Case], bool],
    theirs: Callable[[Case], bool] | None = None,
) -> Score:
    """Count each named case right or wrong for us and, if given, for the library.

    A case that raises counts as wrong (for the library too: a crash is not an answer).
    """
    for name, case in cases:
        score.total += 1
        if _right(ours, case):
            score.ours += 1
        else:
            score.misses.append(name)
        if theirs is not None:
            score.theirs = (score.theirs or 0) + _right(theirs, case)
    return score


def _right(judge: Callable[[Case], bool], case: Case) -> bool:
    try:
        return bool(judge(case))
    except Exception:  # noqa: BLE001 - a crash on someone else's mail is a wrong answer
        return False
