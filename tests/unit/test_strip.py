"""Tests for channels.email.strip against the fixture corpus in tests/fixtures/strip.

Each case is ``<family>/<case>.txt`` and/or ``<case>.html`` (the text/plain and
text/html parts), ``<case>.expected.txt`` (the exact expected reply_text) and
``<case>.cut`` (which parts must have been cut: any of ``quoted``, ``signature``,
``forwarded``, or ``none`` when nothing may be cut).

Run ``python -m tests.unit.test_strip`` for a pass rate per family.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.email.strip import Stripped, _strip_reply_impl, strip_reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "strip"
CUT_TOKENS = {"quoted", "signature", "forwarded", "none"}


@dataclass(frozen=True)
class Case:
    family: str
    name: str
    text: str | None
    html: str | None
    expected: str
    cut: frozenset[str]

    @property
    def id(self) -> str:
        return f"{self.family}/{self.name}"


def _read(path: Path) -> str | None:
    if not path.exists():
        return None
    # newline="" keeps CRLF fixtures byte-exact.
    with path.open(encoding="utf-8", newline="") as fh:
        return fh.read()


def load_cases() -> list[Case]:
    cases = []
    for expected_path in sorted(FIXTURES.glob("*/*.expected.txt")):
        name = expected_path.name.removesuffix(".expected.txt")
        folder = expected_path.parent
        expected = expected_path.read_text(encoding="utf-8").rstrip("\n")
        cut_path = folder / f"{name}.cut"
        cut = frozenset(cut_path.read_text(encoding="utf-8").split()) if cut_path.exists() else None
        cases.append(
            Case(
                family=folder.name,
                name=name,
                text=_read(folder / f"{name}.txt"),
                html=_read(folder / f"{name}.html"),
                expected=expected,
                cut=cut if cut is not None else frozenset(),
            )
        )
    return cases


CASES = load_cases()


def check(case: Case, result: Stripped) -> list[str]:
    """Return the list of mismatches between a result and the case's expectations."""
    problems = []
    if result.reply_text != case.expected:
        problems.append(f"reply_text: {result.reply_text!r} != {case.expected!r}")
    if "quoted" in case.cut and not result.quoted:
        problems.append("expected quoted history to be cut")
    if "signature" in case.cut and not result.signature:
        problems.append("expected a signature to be cut")
    if ("forwarded" in case.cut) != result.forwarded:
        problems.append(f"forwarded is {result.forwarded}")
    if "none" in case.cut and (result.quoted or result.signature):
        problems.append(f"nothing should be cut: {result.quoted!r} / {result.signature!r}")
    return problems


def test_corpus_is_well_formed() -> None:
    assert len(CASES) >= 60
    for case in CASES:
        assert case.text is not None or case.html is not None, case.id
        assert case.cut and case.cut <= CUT_TOKENS, case.id


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fixture(case: Case) -> None:
    result = strip_reply(case.text, case.html)
    assert check(case, result) == []


def test_cut_parts_are_kept() -> None:
    attribution = "On Mon, Mar 4, 2024 at 10:15 AM Bob <b@example.com> wrote:"
    result = strip_reply(f"Thanks!\n\n-- \nAnn\n\n{attribution}\n> hi\n")
    assert result == Stripped("Thanks!", f"{attribution}\n> hi", "-- \nAnn", False)


@pytest.mark.parametrize(
    ("text", "html"),
    [(None, None), ("", None), (None, ""), ("   ", "   "), ("\n\n", None)],
)
def test_empty_inputs(text: str | None, html: str | None) -> None:
    result = strip_reply(text, html)
    assert result.reply_text == ""
    assert not result.quoted and not result.signature and not result.forwarded


def test_only_html_gives_text_without_tags() -> None:
    result = strip_reply(None, "<p>Hello <b>there</b> &amp; welcome</p><script>x()</script>")
    assert result.reply_text == "Hello there & welcome"


def test_malformed_html_marked_section() -> None:
    result = strip_reply(None, "<div>Hi<![foo[ bar ]]></div><blockquote type=cite>old</blockquote>")
    assert "Hi" in result.reply_text


PATHOLOGICAL = [
    "On " * 350_000,
    ("On 1 " * 80 + "wrote:\n") * 2_500,
    "> " * 500_000,
    ("From: a\nSent: b\nTo: c\n" * 50_000),
    ("-- \n" * 250_000),
    "a" * 1_000_000,
    ("Am 1 schrieb " * 30 + ":\n") * 2_500,
    ("x <a@b" * 170_000) + ">:",
    "x:\n" * 330_000,
    "On 1:\n" * 160_000,
    ("1" * 300 + " 10:15 <a@b x:\n") * 3_000,
    ("2024 " * 70 + "<a@b.c>:\n") * 2_500,
]


@pytest.mark.parametrize("text", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_pathological_text_completes(text: str) -> None:
    result = _strip_reply_impl(text, None)
    assert isinstance(result, Stripped)
    assert result.reply_text


def test_pathological_html_completes() -> None:
    html = "<div>" * 100_000 + "text" + "<blockquote type=cite>" * 50_000
    result = _strip_reply_impl(None, html)
    assert result.reply_text == "text"


# Alphabet biased towards the characters the heuristics look at.
_markup = st.sampled_from(
    [
        "\n",
        "\r\n",
        "> ",
        ">",
        "-- \n",
        " wrote:",
        "On ",
        "From: x\n",
        "Sent: y\n",
        "To: z\n",
        "<div>",
        "</div>",
        '<blockquote type="cite">',
        "</blockquote>",
        "<br>",
        "<![x[",
        'class="gmail_quote"',
        "---------- Forwarded message ---------",
        "Sent from my iPhone",
        "2024 10:15",
        "<a@b.c>:",
        "\xa0",
        "__________",
        ":",
    ]
)
_texts = st.lists(st.one_of(st.text(max_size=20), _markup), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.none(), _texts), html=st.one_of(st.none(), _texts))
def test_never_raises(text: str | None, html: str | None) -> None:
    result = _strip_reply_impl(text, html)
    assert isinstance(result, Stripped)
    assert result.reply_text == result.reply_text.strip()


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_never_raises_on_any_text(text: str) -> None:
    result = _strip_reply_impl(text, text)
    if text.strip():
        assert result.reply_text


def family_report(cases: list[Case] = CASES) -> dict[str, tuple[int, int]]:
    """Pass count and total per family, for tracking heuristics over time."""
    passed: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for case in cases:
        total[case.family] += 1
        if not check(case, strip_reply(case.text, case.html)):
            passed[case.family] += 1
    return {fam: (passed[fam], total[fam]) for fam in sorted(total)}


if __name__ == "__main__":
    report = family_report()
    for fam, (ok, n) in report.items():
        print(f"{fam:12} {ok:3}/{n:<3} {100 * ok / n:5.1f}%")
    ok_all = sum(v[0] for v in report.values())
    n_all = sum(v[1] for v in report.values())
    print(f"{'total':12} {ok_all:3}/{n_all:<3} {100 * ok_all / n_all:5.1f}%")
    sys.exit(0 if ok_all == n_all else 1)
