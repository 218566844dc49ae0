"""Pass rate per family of every fixture corpus of mail understanding.

    python -m tests.corpus_report

strip (quote and signature stripping per client and language), parse (charsets, broken MIME,
attachments, limits, whole client messages), bounces (per MTA family) and autoreplies. Exits
non-zero when any case fails, so it can gate a change to a heuristic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from tests.unit import test_autoreply, test_bounce, test_parse, test_strip


def _bounce_report() -> dict[str, tuple[int, int]]:
    return _by_family(test_bounce.CASES, test_bounce.test_fixture)


def _autoreply_report() -> dict[str, tuple[int, int]]:
    def family(path: Path) -> str:
        auto = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["auto"]
        return "auto-replies" if auto else "human mail"

    return _by_family(test_autoreply.CASES, test_autoreply.test_fixture, family)


def _folder(path: Path) -> str:
    return path.parent.name


def _by_family(
    paths: Iterable[Path],
    test: Callable[[Path], None],
    family: Callable[[Path], str] = _folder,
) -> dict[str, tuple[int, int]]:
    report: dict[str, tuple[int, int]] = {}
    for path in paths:
        name = family(path)
        ok, total = report.get(name, (0, 0))
        try:
            test(path)
            passed = True
        except AssertionError:
            passed = False
        report[name] = (ok + passed, total + 1)
    return report


def main() -> int:
    corpora = {
        "strip": test_strip.family_report(),
        "parse": test_parse.family_report(),
        "bounces": _bounce_report(),
        "autoreplies": _autoreply_report(),
    }
    failed = 0
    for corpus, report in corpora.items():
        ok_all = sum(ok for ok, _ in report.values())
        n_all = sum(n for _, n in report.values())
        failed += n_all - ok_all
        print(f"{corpus}: {ok_all}/{n_all}")
        for family, (ok, n) in sorted(report.items()):
            print(f"  {family:16} {ok:3}/{n:<3} {100 * ok / n:5.1f}%")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
