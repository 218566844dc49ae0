"""What share of other people's mail the gateway understands, per source and task.

    python bench/understanding.py [--task strip|bounces|autoreplies|forwards] [--misses]

Reads the public corpora under `tests/corpora/<source>/` (each written by another project and
kept with its licence, the upstream's expected answers as the truth) and prints, for each task
and source, the share we get right next to the best library we could install, measured on the
same files in the same run, and the target. Exits non-zero when a source is below its target.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.understanding import autoreplies, bounces, forwards, strip
from tests.understanding.score import Score

TASKS = {
    "strip": strip.scores,
    "bounces": bounces.scores,
    "autoreplies": autoreplies.scores,
    "forwards": forwards.scores,
}


def _pct(share: float | None) -> str:
    return "   n/a" if share is None else f"{100 * share:5.1f}%"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS))
    parser.add_argument("--misses", action="store_true", help="list the cases we get wrong")
    args = parser.parse_args()
    below: list[Score] = []
    print(f"{'task':12} {'source':28} {'cases':>5} {'ours':>6} {'target':>6}  best library")
    for task, scores in TASKS.items():
        if args.task and task != args.task:
            continue
        for s in scores():
            mark = "" if s.meets_target else "  <- below target"
            print(
                f"{s.task:12} {s.source:28} {s.total:5} {_pct(s.share)} {_pct(s.target)}"
                f"  {s.library or '-'} {_pct(s.their_share)}{mark}"
            )
            if args.misses:
                for name in s.misses:
                    print(f"{'':14}miss: {name}")
            if not s.meets_target:
                below.append(s)
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
