"""Tests for SLA business-time arithmetic: concrete calendar cases, DST edge cases in several zones,
config parsing errors, and Hypothesis properties that must hold for any start and duration."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tickets.business_time import (
    ALWAYS,
    END_OF_DAY,
    WEEKDAY_KEYS,
    Calendar,
    add_business_time,
    business_time_between,
    is_business_time,
    parse_duration,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")
WORKDAYS = ("mon", "tue", "wed", "thu", "fri")
TICK = timedelta(microseconds=1)


def h(hours: float) -> timedelta:
    return timedelta(hours=hours)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def office(tz: str = "Europe/Berlin", holidays: tuple[str, ...] = ()) -> Calendar:
    return Calendar.from_config("office", tz, dict.fromkeys(WORKDAYS, "09:00-17:00"), holidays)


def daily(tz: str, hours: str | list[str]) -> Calendar:
    return Calendar.from_config("daily", tz, dict.fromkeys(WEEKDAY_KEYS, hours), [])


# --- concrete cases ---------------------------------------------------------------------------


class TestOfficeHours:
    def test_friday_afternoon_rolls_over_weekend(self) -> None:
        # 2026-06-05 is a Friday.
        due = add_business_time(office(), datetime(2026, 6, 5, 16, tzinfo=BERLIN), h(2))
        assert due == datetime(2026, 6, 8, 10, tzinfo=BERLIN)
        assert due.tzinfo is UTC

    def test_holiday_is_skipped(self) -> None:
        # 2026-12-25 is a Friday: Thursday 16:00 + 2h lands on Monday 10:00.
        cal = office(holidays=("2026-12-25",))
        due = add_business_time(cal, datetime(2026, 12, 24, 16, tzinfo=BERLIN), h(2))
        assert due == datetime(2026, 12, 28, 10, tzinfo=BERLIN)
        assert not is_business_time(cal, datetime(2026, 12, 25, 12, tzinfo=BERLIN))

    def test_lunch_break_splits_the_day(self) -> None:
        cal = Calendar.from_config(
            "lunch", "Europe/Berlin", {"mon": ["09:00-12:00", "13:00-17:00"]}, []
        )
        monday = datetime(2026, 6, 8, 11, tzinfo=BERLIN)
        assert add_business_time(cal, monday, h(2)) == monday.replace(hour=14)
        assert business_time_between(cal, monday, monday.replace(hour=14)) == h(2)
        assert not is_business_time(cal, monday.replace(hour=12, minute=30))

    def test_exact_day_ends_at_closing_not_next_opening(self) -> None:
        monday = datetime(2026, 6, 8, 9, tzinfo=BERLIN)
        assert add_business_time(office(), monday, h(8)) == monday.replace(hour=17)
        assert (
            add_business_time(office(), monday, h(8) + TICK)
            == datetime(2026, 6, 9, 9, tzinfo=BERLIN) + TICK
        )

    def test_start_outside_hours_waits_for_opening(self) -> None:
        saturday = datetime(2026, 6, 6, 10, tzinfo=BERLIN)
        assert add_business_time(office(), saturday, h(1)) == datetime(
            2026, 6, 8, 10, tzinfo=BERLIN
        )
        early = datetime(2026, 6, 8, 7, tzinfo=BERLIN)
        assert add_business_time(office(), early, timedelta(minutes=30)) == early.replace(
            hour=9, minute=30
        )

    def test_zero_duration_returns_start_in_utc(self) -> None:
        saturday = datetime(2026, 6, 6, 10, tzinfo=BERLIN)
        due = add_business_time(office(), saturday, timedelta(0))
        assert due == saturday
        assert due.tzinfo is UTC

    def test_three_days_of_business_time_is_72_working_hours(self) -> None:
        # 2026-01-01 is a Thursday; 72 h at 8 h/day = 9 working days, ending Tue 13 Jan 17:00.
        due = add_business_time(office(), datetime(2026, 1, 1, tzinfo=BERLIN), parse_duration("3d"))
        assert due == datetime(2026, 1, 13, 17, tzinfo=BERLIN)

    def test_between(self) -> None:
        friday = datetime(2026, 6, 5, 16, tzinfo=BERLIN)
        monday = datetime(2026, 6, 8, 10, tzinfo=BERLIN)
        assert business_time_between(office(), friday, monday) == h(2)
        assert business_time_between(office(), monday, friday) == timedelta(0)
        assert business_time_between(office(), friday, friday) == timedelta(0)
        week = datetime(2026, 6, 1, tzinfo=BERLIN), datetime(2026, 6, 8, tzinfo=BERLIN)
        assert business_time_between(office(), *week) == h(40)

    def test_is_business_time_boundaries(self) -> None:
        monday = datetime(2026, 6, 8, 9, tzinfo=BERLIN)
        assert is_business_time(office(), monday)
        assert not is_business_time(office(), monday - TICK)
        assert is_business_time(office(), monday.replace(hour=17) - TICK)
        assert not is_business_time(office(), monday.replace(hour=17))

    def test_inputs_in_any_zone_give_the_same_answer(self) -> None:
        start = datetime(2026, 6, 5, 16, tzinfo=BERLIN)
        in_tokyo = start.astimezone(ZoneInfo("Asia/Tokyo"))
        assert add_business_time(office(), in_tokyo, h(2)) == add_business_time(
            office(), start, h(2)
        )

    def test_whole_day_until_midnight(self) -> None:
        cal = Calendar.from_config(
            "weekend", "UTC", {"sat": "00:00-24:00", "sun": "00:00-24:00"}, []
        )
        saturday = utc(2026, 6, 6)
        assert cal.hours[5] == ((time(0), END_OF_DAY),)
        assert business_time_between(cal, saturday, saturday + h(72)) == h(48)
        assert is_business_time(cal, utc(2026, 6, 7, 23, 59, 59, 999999))
        assert not is_business_time(cal, utc(2026, 6, 8))
        # Saturday 24:00 and Sunday 00:00 meet: the weekend is one interval, not two.
        assert add_business_time(cal, saturday, h(30)) == utc(2026, 6, 7, 6)

    def test_round_the_clock_with_a_past_holiday_is_not_endless(self) -> None:
        # Regression: consecutive whole days must not be collected into one never-ending interval.
        cal = daily("Europe/Berlin", "00:00-24:00")
        cal = Calendar(cal.name, cal.timezone, cal.hours, frozenset({date(2027, 12, 25)}))
        start = utc(2027, 12, 28)
        assert add_business_time(cal, start, timedelta(days=8)) == start + timedelta(days=8)
        assert add_business_time(cal, utc(2027, 12, 24), h(48)) == utc(2027, 12, 27)


class TestAlways:
    def test_equals_plain_addition_across_dst(self) -> None:
        # Compare in UTC: `+` on a zoned datetime is wall-clock arithmetic, not elapsed time.
        start = datetime(2026, 3, 28, 12, tzinfo=BERLIN).astimezone(UTC)
        assert add_business_time(ALWAYS, start, h(24)) == start + h(24)
        assert add_business_time(ALWAYS, start, h(24)) == datetime(2026, 3, 29, 13, tzinfo=BERLIN)
        assert business_time_between(ALWAYS, start, start + h(24)) == h(24)
        assert is_business_time(ALWAYS, start)

    def test_from_config_always_is_round_the_clock(self) -> None:
        cal = Calendar.from_config("always", "Europe/Berlin", {}, [])
        start = datetime(2026, 10, 24, 12, tzinfo=BERLIN).astimezone(UTC)
        assert add_business_time(cal, start, h(100)) == start + h(100)

    def test_always_rejects_hours(self) -> None:
        with pytest.raises(ValueError, match="round the clock"):
            Calendar.from_config("always", "UTC", {"mon": "09:00-17:00"}, [])

    def test_long_durations_are_not_bounded(self) -> None:
        start = utc(2026, 1, 1)
        assert add_business_time(ALWAYS, start, timedelta(days=3650)) == start + timedelta(
            days=3650
        )


class TestDaylightSaving:
    """Working hours are local wall-clock time; business time is real elapsed time inside them."""

    def test_berlin_spring_forward_night_window_is_two_hours(self) -> None:
        # 2026-03-29 02:00 CET -> 03:00 CEST.
        cal = daily("Europe/Berlin", "01:00-04:00")
        day = datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN)
        assert business_time_between(cal, *day) == h(2)
        assert add_business_time(cal, day[0], h(2)) == utc(2026, 3, 29, 2)  # 04:00 CEST

    def test_berlin_fall_back_night_window_is_four_hours(self) -> None:
        # 2026-10-25 03:00 CEST -> 02:00 CET: 02:00-03:00 happens twice and both count.
        cal = daily("Europe/Berlin", "01:00-04:00")
        day = datetime(2026, 10, 25, tzinfo=BERLIN), datetime(2026, 10, 26, tzinfo=BERLIN)
        assert business_time_between(cal, *day) == h(4)
        assert add_business_time(cal, day[0], h(3)) == utc(2026, 10, 25, 2)  # 03:00 CET
        assert is_business_time(cal, datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=0))
        assert is_business_time(cal, datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1))

    def test_berlin_range_starting_inside_the_overlap_counts_both_passes(self) -> None:
        # 02:30-03:00 CEST, then the clock reads 02:00 again; 02:30-05:00 CET: 0.5 h + 2.5 h.
        cal = daily("Europe/Berlin", "02:30-05:00")
        day = datetime(2026, 10, 25, tzinfo=BERLIN), datetime(2026, 10, 26, tzinfo=BERLIN)
        assert business_time_between(cal, *day) == h(3)
        assert not is_business_time(cal, utc(2026, 10, 25, 1, 15))  # 02:15 CET, between passes

    def test_berlin_range_inside_the_gap_does_not_exist(self) -> None:
        cal = daily("Europe/Berlin", "02:15-02:45")
        day = datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN)
        assert business_time_between(cal, *day) == timedelta(0)
        assert add_business_time(cal, day[0], h(0.5)) == datetime(2026, 3, 30, 2, 45, tzinfo=BERLIN)

    def test_berlin_office_day_stays_eight_local_hours(self) -> None:
        after_spring = datetime(2026, 3, 30, tzinfo=BERLIN)
        after_fall = datetime(2026, 10, 26, tzinfo=BERLIN)
        for monday in (after_spring, after_fall):
            assert business_time_between(office(), monday, monday + h(24)) == h(8)
        friday = datetime(2026, 3, 27, 16, tzinfo=BERLIN)
        assert add_business_time(office(), friday, h(2)) == utc(2026, 3, 30, 8)  # 10:00 CEST
        friday = datetime(2026, 10, 23, 16, tzinfo=BERLIN)
        assert add_business_time(office(), friday, h(2)) == utc(2026, 10, 26, 9)  # 10:00 CET

    def test_new_york_spring_forward_and_fall_back(self) -> None:
        # 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
        cal = daily("America/New_York", "01:00-04:00")
        spring = datetime(2026, 3, 8, tzinfo=NEW_YORK), datetime(2026, 3, 9, tzinfo=NEW_YORK)
        fall = datetime(2026, 11, 1, tzinfo=NEW_YORK), datetime(2026, 11, 2, tzinfo=NEW_YORK)
        assert business_time_between(cal, *spring) == h(2)
        assert business_time_between(cal, *fall) == h(4)

        ny = office("America/New_York")
        assert add_business_time(ny, datetime(2026, 3, 6, 16, tzinfo=NEW_YORK), h(2)) == utc(
            2026, 3, 9, 14
        )
        assert add_business_time(ny, datetime(2026, 10, 30, 16, tzinfo=NEW_YORK), h(2)) == utc(
            2026, 11, 2, 15
        )

    def test_lord_howe_half_hour_shift(self) -> None:
        # DST ends 2026-04-05 02:00 (+11) -> 01:30 (+10:30); starts 2026-10-04 02:00 -> 02:30.
        cal = daily("Australia/Lord_Howe", "01:00-03:00")
        april = datetime(2026, 4, 5, tzinfo=LORD_HOWE), datetime(2026, 4, 6, tzinfo=LORD_HOWE)
        october = datetime(2026, 10, 4, tzinfo=LORD_HOWE), datetime(2026, 10, 5, tzinfo=LORD_HOWE)
        assert business_time_between(cal, *april) == h(2.5)
        assert business_time_between(cal, *october) == h(1.5)
        assert add_business_time(cal, april[0], h(2)) == utc(2026, 4, 4, 16)  # 02:30 +10:30
        assert add_business_time(cal, october[0], h(1.5)) == utc(2026, 10, 3, 16)  # 03:00 +11

    def test_santiago_fall_back_at_midnight_makes_a_25_hour_saturday(self) -> None:
        # 2026-04-05 00:00 -04... the clock goes from Saturday 24:00 back to Saturday 23:00.
        cal = Calendar.from_config("sat", "America/Santiago", {"sat": "00:00-24:00"}, [])
        assert business_time_between(cal, utc(2026, 4, 1), utc(2026, 4, 8)) == h(25)

    def test_havana_spring_forward_at_midnight_makes_a_23_hour_sunday(self) -> None:
        cal = Calendar.from_config("sun", "America/Havana", {"sun": "00:00-24:00"}, [])
        assert business_time_between(cal, utc(2026, 3, 5), utc(2026, 3, 12)) == h(23)


class TestErrors:
    def test_naive_datetimes_are_rejected(self) -> None:
        naive = datetime(2026, 6, 8, 9)
        with pytest.raises(ValueError, match="timezone-aware"):
            add_business_time(office(), naive, h(1))
        with pytest.raises(ValueError, match="timezone-aware"):
            business_time_between(office(), naive, utc(2026, 6, 9))
        with pytest.raises(ValueError, match="end must be timezone-aware"):
            business_time_between(office(), utc(2026, 6, 9), naive)
        with pytest.raises(ValueError, match="timezone-aware"):
            is_business_time(office(), naive)

    def test_negative_duration(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            add_business_time(office(), utc(2026, 6, 8), -h(1))

    def test_calendar_without_hours_raises_instead_of_looping(self) -> None:
        empty = Calendar.from_config("none", "Europe/Berlin", {}, [])
        with pytest.raises(ValueError, match="no working hours"):
            add_business_time(empty, utc(2026, 6, 8), h(1))
        assert business_time_between(empty, utc(2026, 1, 1), utc(2027, 1, 1)) == timedelta(0)

    def test_calendar_whose_hours_are_all_holidays_raises(self) -> None:
        first = date(2026, 1, 1)
        holidays = [(first + timedelta(days=i)).isoformat() for i in range(366 * 6)]
        cal = Calendar.from_config("closed", "UTC", {"mon": "09:00-10:00"}, holidays)
        with pytest.raises(ValueError, match="no business time"):
            add_business_time(cal, utc(2026, 1, 1), h(1))

    def test_answer_just_before_a_long_closure_is_still_found(self) -> None:
        holidays = [(date(2026, 1, 6) + timedelta(days=i)).isoformat() for i in range(366 * 6)]
        cal = Calendar.from_config("closing", "UTC", {"mon": "09:00-10:00"}, holidays)
        assert add_business_time(cal, utc(2026, 1, 1), h(1)) == utc(2026, 1, 5, 10)


class TestFromConfig:
    def test_toml_shape(self) -> None:
        doc = tomllib.loads(
            """
            [[apps.calendars]]
            name = "office"
            timezone = "Europe/Berlin"
            hours = { mon = ["09:00-12:00", "13:00-17:00"], fri = "09:00-15:00", sat = [] }
            holidays = ["2026-12-25", 2026-12-26]
            """
        )
        (raw,) = doc["apps"]["calendars"]
        cal = Calendar.from_config(raw["name"], raw["timezone"], raw["hours"], raw["holidays"])
        assert cal == Calendar(
            "office",
            "Europe/Berlin",
            {
                0: ((time(9), time(12)), (time(13), time(17))),
                4: ((time(9), time(15)),),
            },
            frozenset({date(2026, 12, 25), date(2026, 12, 26)}),
        )
        assert cal.hours[6] == ()
        assert hash(cal) == hash(cal)

    def test_ranges_are_sorted(self) -> None:
        cal = Calendar.from_config("x", "UTC", {"mon": ["13:00-17:00", "09:00-12:00"]}, [])
        assert cal.hours[0] == ((time(9), time(12)), (time(13), time(17)))

    @pytest.mark.parametrize(
        ("hours", "message"),
        [
            ({"mon": "9-17"}, "hours.mon: '9-17' is not HH:MM-HH:MM"),
            ({"mon": "09:00"}, "hours.mon: '09:00' is not HH:MM-HH:MM"),
            ({"tue": "17:00-09:00"}, "hours.tue: '17:00-09:00' does not end after it starts"),
            ({"tue": "09:00-09:00"}, "hours.tue: '09:00-09:00' does not end after it starts"),
            ({"wed": "09:00-25:00"}, "hours.wed: '09:00-25:00' ends at an invalid time"),
            ({"wed": "09:60-12:00"}, "hours.wed: '09:60-12:00' starts at an invalid time"),
            ({"wed": "24:00-24:00"}, "hours.wed: '24:00-24:00' starts at an invalid time"),
            ({"thu": ["09:00-12:00", "11:00-13:00"]}, "hours.thu: '09:00-12:00' and '11:00-13:00'"),
            ({"monday": "09:00-17:00"}, "hours.monday: unknown day"),
            ({"fri": 9}, "hours.fri: expected 'HH:MM-HH:MM' or a list of them, got 9"),
            ({"fri": ["09:00-12:00", 13]}, "hours.fri: expected"),
        ],
    )
    def test_bad_hours(self, hours: dict[str, object], message: str) -> None:
        with pytest.raises(ValueError) as info:
            Calendar.from_config("x", "UTC", hours, [])  # type: ignore[arg-type]
        assert message in str(info.value)

    @pytest.mark.parametrize("holiday", ["2026-13-01", "25.12.2026", "20261225", "", "2026-02-30"])
    def test_bad_holiday(self, holiday: str) -> None:
        with pytest.raises(ValueError, match=f"holidays: '{holiday}' is not a YYYY-MM-DD date"):
            Calendar.from_config("x", "UTC", {}, [holiday])

    def test_holidays_must_be_a_list(self) -> None:
        with pytest.raises(ValueError, match="holidays: expected a list"):
            Calendar.from_config("x", "UTC", {}, "2026-12-25")

    @pytest.mark.parametrize("tz", ["Europe/Berln", "", "../../etc/passwd", "+01:00"])
    def test_bad_timezone(self, tz: str) -> None:
        with pytest.raises(ValueError, match=r"timezone: .* is not a known IANA time zone"):
            Calendar.from_config("x", tz, {}, [])

    def test_direct_construction_is_validated(self) -> None:
        with pytest.raises(ValueError, match="weekday 7"):
            Calendar("x", "UTC", {7: ((time(9), time(17)),)}, frozenset())
        with pytest.raises(ValueError, match="does not end after it starts"):
            Calendar("x", "UTC", {0: ((time(17), time(9)),)}, frozenset())
        with pytest.raises(ValueError, match="cannot start at 24:00"):
            Calendar("x", "UTC", {0: ((END_OF_DAY, END_OF_DAY),)}, frozenset())


class TestParseDuration:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("90s", timedelta(seconds=90)),
            ("15m", timedelta(minutes=15)),
            ("4h", h(4)),
            ("3d", timedelta(days=3)),
            ("2w", timedelta(weeks=2)),
            ("1h30m", timedelta(hours=1, minutes=30)),
            (" 1h 30m ", timedelta(hours=1, minutes=30)),
            ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
            ("0s", timedelta(0)),
            ("120m", h(2)),
        ],
    )
    def test_valid(self, text: str, expected: timedelta) -> None:
        assert parse_duration(text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            "",
            " ",
            "4",
            "h",
            "1.5h",
            "-1h",
            "+1h",
            "30m1h",
            "1h1h",
            "4H",
            "4 h",
            "1y",
            "1h30",
            "\u0664h",
        ],
    )
    def test_invalid(self, text: str) -> None:
        with pytest.raises(ValueError, match="is not like '90s'"):
            parse_duration(text)

    def test_too_large(self) -> None:
        with pytest.raises(ValueError, match="too far in the future"):
            parse_duration("999999999999w")

    def test_not_a_string(self) -> None:
        with pytest.raises(ValueError, match="expected a string"):
            parse_duration(4)  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------------------------

ZONES = (
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/Havana",
    "Pacific/Chatham",
    "Asia/Kathmandu",
    "UTC",
)

HOURS: tuple[dict[str, str | list[str]], ...] = (
    dict.fromkeys(WORKDAYS, "09:00-17:00"),
    {day: ["09:00-12:00", "13:00-17:30"] for day in WORKDAYS},
    dict.fromkeys(WEEKDAY_KEYS, "01:00-04:00"),  # straddles most DST switches
    {day: ["00:00-00:30", "23:30-24:00"] for day in WEEKDAY_KEYS},  # midnight switches
    {"sat": "00:00-24:00", "sun": "00:00-24:00", "wed": "02:15-02:45"},
    dict.fromkeys(WEEKDAY_KEYS, "00:00-24:00"),
)

HOLIDAY_SETS: tuple[tuple[str, ...], ...] = (
    (),
    ("2024-12-25", "2025-12-25", "2026-12-25", "2027-12-25", "2026-03-29", "2026-10-25"),
)

MIN_START = datetime(2024, 1, 1)
MAX_START = datetime(2027, 12, 31)


@cache
def transitions(tz: str) -> tuple[datetime, ...]:
    """UTC instants (to the hour) near which `tz` changes offset in 2024-2027."""
    zone = ZoneInfo(tz)
    found = []
    t = MIN_START.replace(tzinfo=UTC)
    previous = t.astimezone(zone).utcoffset()
    while t < MAX_START.replace(tzinfo=UTC):
        t += h(1)
        offset = t.astimezone(zone).utcoffset()
        if offset != previous:
            found.append(t)
        previous = offset
    return tuple(found)


calendars = st.builds(
    lambda tz, hours, holidays: Calendar.from_config("generated", tz, hours, holidays),
    st.sampled_from(ZONES),
    st.sampled_from(HOURS),
    st.sampled_from(HOLIDAY_SETS),
)


@st.composite
def calendar_and_start(draw: st.DrawFn) -> tuple[Calendar, datetime]:
    """A calendar and a start instant, often within days of one of its zone's DST changes."""
    cal = draw(calendars)
    anywhere = st.datetimes(MIN_START, MAX_START).map(lambda d: d.replace(tzinfo=UTC))
    near = transitions(cal.timezone)
    if near:
        around = st.tuples(
            st.sampled_from(near), st.timedeltas(-timedelta(days=3), timedelta(days=3))
        ).map(lambda pair: pair[0] + pair[1])
        start = draw(st.one_of(anywhere, around))
    else:
        start = draw(anywhere)
    # Starting in another zone must not matter; vary the input representation too.
    return cal, start.astimezone(ZoneInfo(draw(st.sampled_from(ZONES))))


durations = st.one_of(
    st.timedeltas(timedelta(0), timedelta(days=8)),
    st.integers(0, 60 * 24 * 4).map(lambda m: timedelta(minutes=m)),  # boundaries sit on minutes
)

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(calendar_and_start(), durations)
def test_between_inverts_add(cs: tuple[Calendar, datetime], d: timedelta) -> None:
    cal, start = cs
    due = add_business_time(cal, start, d)
    assert due.tzinfo is UTC
    assert due >= start
    assert business_time_between(cal, start, due) == d


@PROPERTY_SETTINGS
@given(calendar_and_start(), durations, durations)
def test_add_is_monotonic_and_additive(
    cs: tuple[Calendar, datetime], d1: timedelta, d2: timedelta
) -> None:
    cal, start = cs
    small, large = sorted((d1, d2))
    assert add_business_time(cal, start, small) <= add_business_time(cal, start, large)
    assert add_business_time(cal, add_business_time(cal, start, d1), d2) == add_business_time(
        cal, start, d1 + d2
    )


@PROPERTY_SETTINGS
@given(calendar_and_start(), durations)
def test_due_is_inside_business_time_or_at_its_end(
    cs: tuple[Calendar, datetime], d: timedelta
) -> None:
    cal, start = cs
    assume(d > timedelta(0))
    due = add_business_time(cal, start, d)
    # The last microsecond counted is business time; `due` itself may be a closing boundary.
    assert is_business_time(cal, due - TICK)
    # And nothing earlier would do: one microsecond less is one microsecond short.
    assert business_time_between(cal, start, due - TICK) == d - TICK


@PROPERTY_SETTINGS
@given(calendar_and_start(), durations, durations)
def test_between_is_additive(cs: tuple[Calendar, datetime], d1: timedelta, d2: timedelta) -> None:
    cal, a = cs
    a = a.astimezone(UTC)  # so that `+` below is elapsed time, not wall-clock time
    b, c = a + d1, a + d1 + d2
    whole = business_time_between(cal, a, c)
    assert whole == business_time_between(cal, a, b) + business_time_between(cal, b, c)
    assert timedelta(0) <= whole <= c - a


@settings(max_examples=60, deadline=None)
@given(calendar_and_start(), st.integers(0, 60 * 36))
def test_between_matches_minute_by_minute_count(
    cs: tuple[Calendar, datetime], minutes: int
) -> None:
    # Every working-range edge and every offset change in these zones falls on a whole UTC minute,
    # so counting minutes with `is_business_time` is an exact, independent oracle.
    cal, start = cs
    start = start.astimezone(UTC).replace(second=0, microsecond=0)
    counted = sum(is_business_time(cal, start + timedelta(minutes=i)) for i in range(minutes))
    end = start + timedelta(minutes=minutes)
    assert business_time_between(cal, start, end) == timedelta(minutes=counted)


@given(st.datetimes(MIN_START, MAX_START).map(lambda d: d.replace(tzinfo=UTC)), durations)
def test_always_is_plain_addition(start: datetime, d: timedelta) -> None:
    assert add_business_time(ALWAYS, start, d) == start + d
    assert business_time_between(ALWAYS, start, start + d) == d
