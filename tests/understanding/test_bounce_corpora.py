"""Each public bounce corpus, per source and family, meets the bounces target (issue 14).

What counts as right is in `tests/understanding/bounces.py`; the table with flufl.bounce beside
us is `python bench/understanding.py --task bounces`.
"""

from __future__ import annotations

import pytest

from tests.understanding import bounces
from tests.understanding.score import Score

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
