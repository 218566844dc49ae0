"""Each public bounce corpus, per source and family, meets the bounces target (issue 14).

What counts as right is in `tests/understanding/bounces.py`; the table with flufl.bounce beside
us is `python bench/understanding.py --task bounces`.
"""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import Message
from pathlib import Path

import pytest

from channels.email.bounce import detect_bounce
from tests.understanding import bounces
from tests.understanding.score import CORPORA, Score

SCORES = bounces.scores()


@pytest.mark.parametrize("score", SCORES, ids=[s.source for s in SCORES])
def test_each_source_meets_the_target(score: Score) -> None:
    assert score.total > 0
    assert score.meets_target, (
        f"{score.source}: {score.ours}/{score.total} right, misses: {score.misses}"
    )


def test_every_family_of_the_issue_is_measured() -> None:
    families = {s.source.partition("/")[2] for s in SCORES}
    wanted = {"postfix", "exim", "qmail", "exchange", "yahoo", "sendmail", "groupwise"}
    assert wanted | {"simple-match", "warning"} <= families
    # Mail the upstreams call no bounce is measured too: detecting it would be wrong.
    assert any(s.source.endswith("not_bounces") and s.total for s in SCORES)


def test_no_automatic_reply_of_the_public_corpora_condemns_an_address() -> None:
    # Out-of-office and challenge-response replies often go to the return path, where a
    # bounce would be tied to its recipient whatever it says: none may read as a permanent
    # failure. (The corpora of the other tasks hold whole mails of this kind.)
    mails = [
        path
        for path in CORPORA.glob("*/**/*")
        if path.suffix in (".eml", ".msg")
        and path.relative_to(CORPORA).parts[0] not in bounces.SOURCES
    ]
    assert len(mails) >= 20
    condemning = [
        str(path.relative_to(CORPORA))
        for path in mails
        if (found := detect_bounce(_parse(path))) is not None and found.permanent
    ]
    assert not condemning


def _parse(path: Path) -> Message:
    return message_from_bytes(path.read_bytes(), policy=policy.compat32)
