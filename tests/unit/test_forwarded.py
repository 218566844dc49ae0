"""Reading the forwarded message out of a forward (channels/email/forwarded.py), on other
people's mail first: quotequail's forward samples with its own answers, talon's Gmail forwards,
then the client formats of tests/support/forwards.py and the dates clients write."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from channels.email.forwarded import parse_date, parse_forwarded, read_address
from channels.email.strip import html_to_text
from tests.support.forwards import FORWARDED_AT, STYLES, WRITTEN_AT, Original, forwarded_body

CORPORA = Path(__file__).resolve().parents[1] / "corpora"
QUOTEQUAIL = json.loads((CORPORA / "quotequail/unwrap_forwards.json").read_text())


@pytest.mark.parametrize("case", sorted(QUOTEQUAIL))
def test_quotequail_forwards_read_as_upstream_reads_them(case):
    expected = QUOTEQUAIL[case]
    text = (CORPORA / "quotequail/cases" / f"{case}.txt").read_text()
    found = parse_forwarded(text)
    assert found is not None
    assert (found.from_name, found.from_address) == read_address(expected.get("from", ""))
    assert found.subject == expected.get("subject", "")
    assert found.text == expected["text"]
    assert found.note == expected.get("text_top", "")
    assert found.date_text == expected.get("date", "")
    if "date" in expected:
        assert found.date is not None, expected["date"]


def test_talon_gmail_forwards():
    plain = CORPORA / "talon/cases/plain_dont_parse_quotations_for_forwarded_messages.txt"
    found = parse_forwarded(plain.read_text())
    assert found is not None
    assert (found.note, found.from_address, found.text) == ("FYI", "bob@example.com", "Text")
    assert found.subject == "Two line subject"  # wrapped by the client
    assert found.date == dt.datetime(2012, 9, 4, 13, 35, tzinfo=dt.UTC)

    html = (CORPORA / "talon/cases/html_gmail_forwarded_msg.html").read_text()
    found = parse_forwarded(html_to_text(html))
    assert found is not None
    assert (found.from_name, found.from_address) == ("Bob", "bob@example.com")
    assert (found.subject, found.text, found.note) == ("Bob WFH today", "eom", "")


@pytest.mark.parametrize("style", [s for s in STYLES if s not in ("attachment", "outlook-web")])
def test_client_formats(style):
    original = Original("Sam Customer", "sam@customer.test", "Paket 4711", "Wo ist es?\nSam")
    body = forwarded_body(style, "Bitte erstatten.\n\n--\nAna", original, "ana@agents.test")
    found = parse_forwarded(body, FORWARDED_AT)
    assert found is not None
    assert (found.from_name, found.from_address) == ("Sam Customer", "sam@customer.test")
    assert (found.subject, found.text) == ("Paket 4711", "Wo ist es?\nSam")
    assert found.note == "Bitte erstatten.\n\n--\nAna"
    assert found.date == WRITTEN_AT


def test_no_forward_and_prose_with_colons():
    assert parse_forwarded("Hello,\nFrom: the warehouse, today.\nThanks") is None
    assert parse_forwarded("Where is my parcel?") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Fri, 19 Jun 2009 19:16:04 +0200", "2009-06-19T19:16:04+02:00"),
        ("Fri, Apr 26, 2013 at 8:13 PM", "2013-04-26T20:13:00+01:00"),
        ("Thursday, March 7, 2013 7:09:41 PM", "2013-03-07T19:09:41+01:00"),
        ("Mo., 30. Nov. 2026 um 09:15 Uhr", "2026-11-30T09:15:00+01:00"),
        ("lundi 30 novembre 2026 09:15", "2026-11-30T09:15:00+01:00"),
        ("lunes, 30 de noviembre de 2026 9:15", "2026-11-30T09:15:00+01:00"),
        ("14 novembre 2015 15:14:53 UTC+1", "2015-11-14T15:14:53+01:00"),
        ("2014-10-17 11:28 GMT+03:00", "2014-10-17T11:28:00+03:00"),
        ("yesterday", None),
        ("31 February 2020 10:00", None),
        ("1 December 2027 10:00", None),  # after the forward itself: not believed
    ],
)
def test_dates_as_clients_write_them(text, expected):
    # A date without a zone is in the zone of the forward's own Date.
    when = parse_date(text, FORWARDED_AT)
    assert (when.isoformat() if when else None) == expected


def test_addresses_as_clients_write_them():
    assert read_address("Sam [mailto:sam@x.test]") == ("Sam", "sam@x.test")
    assert read_address("Sam <sam@x.test<mailto:sam@x.test>>") == ("Sam", "sam@x.test")
    assert read_address('"Lee, Sam" <Sam@X.test>') == ("Lee, Sam", "sam@x.test")
    assert read_address("Sam Customer") == ("Sam Customer", "")
