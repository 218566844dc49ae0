"""Each public auto-reply corpus at its target, and no person's mail flagged (issue 14).

The sources and their upstream verdicts are read by tests/understanding/autoreplies.py;
`python bench/understanding.py --task autoreplies --misses` prints the same table.
"""

from __future__ import annotations

import pytest

from tests.understanding import autoreplies
from tests.understanding.score import Score

SCORES = autoreplies.scores()


@pytest.mark.parametrize("score", SCORES, ids=lambda s: s.source)
def test_source_meets_its_target(score: Score) -> None:
    assert score.total > 0
    assert score.meets_target, (
        f"{score.source}: {score.ours}/{score.total} right, below {score.target:.0%}; "
        f"misses: {score.misses}"
    )


def test_every_source_is_scored_and_human_mail_is_its_own_row() -> None:
    sources = {s.source for s in SCORES}
    assert autoreplies.HUMAN_SOURCE in sources
    assert len(sources) >= 3
    human = next(s for s in SCORES if s.source == autoreplies.HUMAN_SOURCE)
    assert human.target == 1.0
