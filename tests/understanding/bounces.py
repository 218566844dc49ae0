"""Scores of the bounces task on each public corpus (issue 14).

Each source under `tests/corpora/` keeps an `expected.json`, extracted from the upstream's own
tests (see the source's README): per file whether it is a bounce, the recipients it reports
(None where the upstream states none) and whether the failure is only temporary. A case is
right when:

- a bounce with stated recipients is detected with exactly those recipients (compared without
  case);
- a bounce the upstream names no address for is right when we name none either;
- a bounce whose recipients the upstream does not state is detected;
- a temporary failure (a warning, "delayed") is never marked permanent: a delay must never
  mark an address undeliverable. (A permanent one marked temporary is not counted wrong: we
  deliberately keep e.g. 4.4.7 "expired" from condemning an address.)
- a mail the upstream calls no bounce is not detected; where the upstream's "bounce" means a
  permanent failure (Mail::DeliveryStatus::BounceParser: "not a bounce - transient nonfatal
  error"), its non-bounces are right unless we report a permanent failure, since a delay we
  report marks nothing.

The flufl.bounce row (one per source and family) is measured on the same files with its
`all_failures` (temporary and permanent addresses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

from flufl.bounce import all_failures

from channels.email.bounce import detect_bounce
from tests.understanding.score import CORPORA, Score, tally

TARGET = 0.98
SOURCES = ("flufl_bounce", "bounced", "baunsu", "bounceparser")


@dataclass(frozen=True)
class Case:
    path: Path
    bounce: bool
    recipients: frozenset[str] | None  # None: the upstream does not say
    temporary: bool  # the upstream calls the failure temporary
    only_permanent_is_wrong: bool = False  # a no-bounce the upstream may call a delay

    def message(self) -> Message:
        return message_from_bytes(self.path.read_bytes(), policy=policy.compat32)


def cases(source: str) -> dict[str, list[tuple[str, Case]]]:
    """The source's cases by family (the first folder of each file)."""
    root = CORPORA / source
    expected = json.loads((root / "expected.json").read_text())
    families: dict[str, list[tuple[str, Case]]] = {}
    for name, e in sorted(expected.items()):
        if e.get("disputed"):  # upstreams disagree on the answer; the README says why
            continue
        recipients = e.get("recipients")
        case = Case(
            path=root / name,
            bounce=e.get("bounce", True),
            recipients=None if recipients is None else frozenset(a.lower() for a in recipients),
            temporary=bool(e.get("temporary")),
            only_permanent_is_wrong=bool(e.get("only_permanent_is_wrong")),
        )
        families.setdefault(name.partition("/")[0], []).append((name, case))
    return families


def judge(case: Case, found: bool, recipients: set[str], permanent: bool) -> bool:
    """Whether an answer (a bounce or not, its recipients, its permanence) is right."""
    if not case.bounce:
        return not found or (case.only_permanent_is_wrong and not permanent)
    if case.recipients is not None and not case.recipients:
        return not recipients
    if not found:
        return False
    if case.recipients is not None and recipients != case.recipients:
        return False
    return not (case.temporary and permanent)


def ours(case: Case) -> bool:
    bounce = detect_bounce(case.message())
    if bounce is None:
        return judge(case, False, set(), False)
    return judge(case, True, {a.lower() for a in bounce.recipients}, bounce.permanent)


def flufl(case: Case) -> bool:
    temporary, permanent = all_failures(case.message())
    found = {a.decode("utf-8", "replace").lower() for a in temporary | permanent}
    return judge(case, bool(found), found, bool(permanent))


def scores() -> list[Score]:
    result: list[Score] = []
    for source in SOURCES:
        for family, named in cases(source).items():
            score = Score("bounces", f"{source}/{family}", TARGET, library="flufl.bounce")
            result.append(tally(score, named, ours, flufl))
    return result
