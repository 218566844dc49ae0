"""Whole messages through `parse_message`, against the corpus in tests/fixtures/parse.

Each ``<family>/<case>.eml`` is a message as a client or MTA sends it; ``<case>.json`` says what
the gateway must make of it. Keys:

- ``expect``: keys of ``gateway parse --json`` and their exact values;
- ``limits``: ParseLimits fields for this case; ``rejected``: the exact quarantine reason;
- ``defects_include``: substrings that must each appear in some recorded defect;
  ``no_defects``: nothing may be recorded;
- ``attachment_names``, ``inline_content_ids``: the attachments kept, in order;
- ``html_contains``, ``html_excludes``: the sanitized HTML that is stored;
- ``quoted_contains``, ``subject_contains``, ``reply_text_contains``: substrings.

Families: ``charsets`` (RFC 2047/2231, unknown and broken charsets), ``mime`` (broken MIME),
``attachments`` (safe names, size limits, inline images, sanitized HTML), ``limits`` (what is
quarantined), ``clients`` (whole messages from each mail client and language, HTML and plain,
forwards and an auto-reply). ``python -m tests.corpus_report`` prints the pass rate per family.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from channels.email.parse import MessageRejected, ParseLimits, parse_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "parse"
FAMILIES = ("charsets", "mime", "attachments", "limits", "clients")


@dataclass(frozen=True)
class Case:
    family: str
    name: str
    raw: bytes
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


def load_cases() -> list[Case]:
    return [
        Case(
            path.parent.name,
            path.stem,
            path.read_bytes(),
            json.loads(path.with_suffix(".json").read_text(encoding="utf-8")),
        )
        for path in sorted(FIXTURES.glob("*/*.eml"))
    ]


CASES = load_cases()


def check(case: Case) -> list[str]:
    """What the parse of this case gets wrong; [] when it matches the case's expectations."""
    spec = case.spec
    try:
        parsed = parse_message(case.raw, ParseLimits(**spec.get("limits", {})))
    except MessageRejected as exc:
        return [] if spec.get("rejected") == str(exc) else [f"rejected: {exc}"]
    if "rejected" in spec:
        return [f"not rejected (expected {spec['rejected']!r})"]
    data = parsed.to_json()
    problems = [
        f"{key}: {data[key]!r} != {want!r}"
        for key, want in spec.get("expect", {}).items()
        if data[key] != want
    ]
    defects = " | ".join(data["defects"])
    problems += [f"no defect {d!r} in {defects!r}" for d in spec.get("defects_include", ())]
    problems = [
        p for p in problems if not (p.startswith("no defect") and p.split("'")[1] in defects)
    ]
    if spec.get("no_defects") and data["defects"]:
        problems.append(f"defects: {data['defects']}")
    if "attachment_names" in spec:
        names = [a["filename"] for a in data["attachments"]]
        if names != spec["attachment_names"]:
            problems.append(f"attachments: {names}")
    if "inline_content_ids" in spec:
        inline = [a.content_id for a in parsed.attachments if a.inline]
        if inline != spec["inline_content_ids"]:
            problems.append(f"inline: {inline}")
    html = data["html"] or ""
    problems += [f"html lacks {s!r}" for s in spec.get("html_contains", ()) if s not in html]
    problems += [f"html keeps {s!r}" for s in spec.get("html_excludes", ()) if s in html]
    for key, field in (
        ("quoted_contains", "quoted"),
        ("subject_contains", "subject"),
        ("reply_text_contains", "reply_text"),
    ):
        if key in spec and spec[key] not in data[field]:
            problems.append(f"{field} lacks {spec[key]!r}: {data[field]!r}")
    return problems


def test_corpus_covers_every_family() -> None:
    counts = {f: sum(c.family == f for c in CASES) for f in FAMILIES}
    assert all(n >= 3 for n in counts.values()), counts
    assert {c.family for c in CASES} <= set(FAMILIES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fixture(case: Case) -> None:
    assert check(case) == []


def family_report(cases: list[Case] = CASES) -> dict[str, tuple[int, int]]:
    report: dict[str, tuple[int, int]] = {}
    for case in cases:
        ok, total = report.get(case.family, (0, 0))
        report[case.family] = (ok + (not check(case)), total + 1)
    return report
