"""Business-time arithmetic for SLA deadlines.

An SLA such as "first response within 4h" counts only the time a support team is working, as
described by a `Calendar`: weekly working hours in the calendar's local time zone plus holidays.
This module answers three questions about such a calendar, as pure functions:

* `add_business_time`: when will a given amount of business time have elapsed (a due date)?
* `business_time_between`: how much business time lies between two instants (time spent)?
* `is_business_time`: is an instant inside working hours?

Definition used throughout: an instant is business time when its local wall-clock time (in the
calendar's zone) falls inside one of the working ranges of its local date, and that date is not a
holiday. Business time is the real elapsed time of such instants. Consequences across DST changes:

* a 09:00-17:00 day stays 09:00-17:00 on the wall clock, so the UTC instants shift;
* on a spring-forward day a window spanning the gap is shorter (Europe/Berlin "01:00-04:00" on the
  last Sunday of March is 2 h of real time), on a fall-back day it is longer (4 h);
* when the wall clock runs through a range twice (fall-back overlap), both passes count; when it
  skips part of a range (spring-forward gap), the skipped part does not exist and does not count.

All datetimes accepted must be timezone-aware; all datetimes returned are in UTC. Arithmetic is
exact to the microsecond (no floats), and the work done is proportional to the number of calendar
days covered, not to the duration's resolution.

Pure domain code: the only thing read from outside is the IANA time zone database via `zoneinfo`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from types import MappingProxyType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "ALWAYS",
    "ALWAYS_NAME",
    "END_OF_DAY",
    "MAX_DURATION",
    "WEEKDAY_KEYS",
    "Calendar",
    "DurationTooLong",
    "add_business_time",
    "business_time_between",
    "is_business_time",
    "parse_duration",
    "sla_duration",
    "working_day",
]

TimeRange = tuple[time, time]

# `datetime.time` cannot express 24:00, and "until midnight" is common in working hours. We use
# `time.max` as a sentinel for it: as the end of a range it means the end of the day (24:00), never
# the instant 23:59:59.999999. It is not allowed as the start of a range.
END_OF_DAY = time.max

WEEKDAY_KEYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS_NAME = "always"

_WHOLE_DAY: tuple[TimeRange, ...] = ((time.min, END_OF_DAY),)
_DAY = timedelta(days=1)
_TICK = timedelta(microseconds=1)
# Offsets are sampled this far apart to find DST transitions; real zones never change offset twice
# within a few hours, so a transition can't hide between two samples.
_PROBE = timedelta(hours=6)
# A calendar whose next working minute is further away than this is treated as having none (e.g.
# all working days are holidays); without a bound `add_business_time` would never return.
_MAX_GAP = timedelta(days=4 * 366)

_RANGE_RE = re.compile(r"(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})", re.ASCII)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_DURATION_RE = re.compile(
    r"\s*(?:(?P<w>\d+)w)?\s*(?:(?P<d>\d+)d)?\s*(?:(?P<h>\d+)h)?\s*(?:(?P<m>\d+)m)?\s*(?:(?P<s>\d+)s)?\s*",
    re.ASCII,
)
_DURATION_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
# Longer than any snooze, SLA target or retry schedule means, and far enough from the end of
# the calendar (year 9999) that "now" plus a duration can always be computed.
MAX_DURATION = timedelta(days=3653)


class DurationTooLong(ValueError):
    """A well-formed duration that reaches further than MAX_DURATION."""


def _zone(key: str) -> ZoneInfo:
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"timezone: {key!r} is not a known IANA time zone") from None


@dataclass(frozen=True)
class Calendar:
    """Weekly working hours in one time zone, minus holidays.

    `hours` maps weekday (0=Monday .. 6=Sunday) to sorted, non-overlapping `(start, end)` ranges of
    local wall-clock time, start inclusive, end exclusive. An end of `END_OF_DAY` (`time.max`)
    means 24:00. A weekday that is absent or maps to `()` has no working hours. Ranges never cross
    midnight; a night shift is two ranges on consecutive days. `holidays` are local dates on which
    no hours apply. After construction `hours` is a read-only mapping with all seven weekdays.
    """

    name: str
    timezone: str
    hours: Mapping[int, tuple[TimeRange, ...]] = field(hash=False)
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        _zone(self.timezone)
        normalized: dict[int, tuple[TimeRange, ...]] = {}
        for weekday, ranges in self.hours.items():
            if not isinstance(weekday, int) or not 0 <= weekday <= 6:
                raise ValueError(f"hours: weekday {weekday!r} is not an int 0 (Mon) .. 6 (Sun)")
            normalized[weekday] = _check_ranges(f"hours[{weekday}]", ranges)
        object.__setattr__(
            self, "hours", MappingProxyType({wd: normalized.get(wd, ()) for wd in range(7)})
        )
        for day in self.holidays:
            if not isinstance(day, date) or isinstance(day, datetime):
                raise ValueError(f"holidays: {day!r} is not a date")
        object.__setattr__(self, "holidays", frozenset(self.holidays))

    @classmethod
    def from_config(
        cls,
        name: str,
        timezone: str,
        hours: Mapping[str, str | list[str]],
        holidays: Iterable[str | date],
    ) -> Calendar:
        """Build a calendar from its config table, e.g. `hours = {mon = "09:00-17:00"}`.

        Day keys are `mon`..`sun`; a value is "HH:MM-HH:MM" or a list of them ("24:00" is allowed
        as an end). Holidays are "YYYY-MM-DD" strings (or dates, as TOML yields for unquoted
        dates). The name "always" means round the clock and takes no hours or holidays.
        Raises ValueError naming the offending key and value.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name: {name!r} is not a non-empty string")
        if not isinstance(timezone, str):
            raise ValueError(f"timezone: {timezone!r} is not a string")
        _zone(timezone)
        if isinstance(holidays, str | bytes) or not isinstance(holidays, Iterable):
            raise ValueError(f"holidays: expected a list of YYYY-MM-DD dates, got {holidays!r}")
        holiday_items = list(holidays)
        if not isinstance(hours, Mapping):
            raise ValueError(f"hours: expected a table of day = ranges, got {hours!r}")

        if name == ALWAYS_NAME:
            # Silently ignoring hours here would hide a config mistake: say what "always" means.
            if hours or holiday_items:
                raise ValueError(
                    f"calendar {ALWAYS_NAME!r} is round the clock; it takes no hours or holidays"
                )
            return cls(name, timezone, dict.fromkeys(range(7), _WHOLE_DAY), frozenset())

        parsed: dict[int, tuple[TimeRange, ...]] = {}
        for key, value in hours.items():
            if key not in WEEKDAY_KEYS:
                raise ValueError(f"hours.{key}: unknown day; use one of {', '.join(WEEKDAY_KEYS)}")
            label = f"hours.{key}"
            items = [value] if isinstance(value, str) else value
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise ValueError(
                    f"{label}: expected 'HH:MM-HH:MM' or a list of them, got {value!r}"
                )
            parsed[WEEKDAY_KEYS.index(key)] = _check_ranges(
                label, [_parse_range(label, item) for item in items]
            )
        return cls(name, timezone, parsed, frozenset(_parse_holiday(h) for h in holiday_items))


def add_business_time(cal: Calendar, start: datetime, duration: timedelta) -> datetime:
    """Return the UTC instant at which `duration` of business time has elapsed after `start`.

    A zero duration returns `start` itself (in UTC), even outside working hours. For a positive
    duration the result is the end of the last business moment counted, so it may be exactly the
    end of a working range (e.g. 17:00), never the start of one.
    Raises ValueError for a naive `start`, a negative duration, or a calendar with no business
    time within a few years of `start`.
    """
    at = _naive_utc(start, "start")
    if duration < timedelta(0):
        raise ValueError(f"duration must not be negative, got {duration}")
    if not duration:
        return at.replace(tzinfo=UTC)
    try:
        if _is_round_the_clock(cal):
            return (at + duration).replace(tzinfo=UTC)
        if not any(cal.hours.values()):
            raise ValueError(f"calendar {cal.name!r} has no working hours")
        remaining = duration
        for lo, hi in _business_intervals(cal, at, None):
            if hi - lo >= remaining:
                return (lo + remaining).replace(tzinfo=UTC)
            remaining -= hi - lo
    except OverflowError:
        raise ValueError(
            f"{duration} of business time after {start.isoformat()} is beyond year 9999"
        ) from None
    raise AssertionError("unreachable: business intervals end only by raising")


def business_time_between(cal: Calendar, start: datetime, end: datetime) -> timedelta:
    """Return the business time elapsed in [start, end); zero if `end <= start`."""
    lo, hi = _naive_utc(start, "start"), _naive_utc(end, "end")
    if hi <= lo:
        return timedelta(0)
    if _is_round_the_clock(cal):
        return hi - lo
    if not any(cal.hours.values()):
        return timedelta(0)
    return sum((b - a for a, b in _business_intervals(cal, lo, hi)), timedelta(0))


def is_business_time(cal: Calendar, at: datetime) -> bool:
    """Return whether the instant `at` lies inside the calendar's working hours."""
    _naive_utc(at, "at")
    local = at.astimezone(_zone(cal.timezone))
    day = local.date()
    if day in cal.holidays:
        return False
    # Not `_since_midnight`: a wall clock at 23:59:59.999999 is just that, not the 24:00 sentinel.
    clock = datetime.combine(date.min, local.time()) - datetime.min
    ranges = cal.hours.get(day.weekday(), ())
    return any(_since_midnight(s) <= clock < _since_midnight(e) for s, e in ranges)


def parse_duration(text: str) -> timedelta:
    """Parse an SLA duration such as "90s", "15m", "4h", "3d", "2w" or "1h30m".

    Units are w, d, h, m, s, each at most once and largest first; whitespace between parts is
    allowed. Here "d"/"w" are plain 24 h / 168 h, which is right for wall-clock uses (snooze for
    "2d"). SLA targets are read with `sla_duration`, where a day is a working day of the calendar.
    """
    if not isinstance(text, str):
        raise ValueError(f"duration: expected a string like '4h', got {text!r}")
    match = _DURATION_RE.fullmatch(text)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(
            f"duration: {text!r} is not like '90s', '15m', '4h', '3d', '2w' or '1h30m' "
            "(whole numbers; units w, d, h, m, s, largest first)"
        )
    try:
        duration = timedelta(
            **{_DURATION_UNITS[unit]: int(n) for unit, n in match.groupdict().items() if n}
        )
    except OverflowError:
        duration = None
    if duration is None or duration > MAX_DURATION:
        raise DurationTooLong(
            f"duration: {text!r} is too far in the future (at most 10 years, '520w')"
        )
    return duration


def working_day(cal: Calendar) -> timedelta:
    """The business time of one working day: the weekly hours shared out over the working days.

    24 h round the clock; 8 h for a Monday-to-Friday 09:00-17:00 calendar. Nominal wall-clock
    hours (a DST day does not change it); ValueError for a calendar with no working hours.
    """
    days = [ranges for ranges in cal.hours.values() if ranges]
    if not days:
        raise ValueError(f"calendar {cal.name!r} has no working hours")
    week = sum(
        (_since_midnight(e) - _since_midnight(s) for ranges in days for s, e in ranges),
        timedelta(0),
    )
    return week / len(days)


def sla_duration(text: str, cal: Calendar) -> timedelta:
    """An SLA target in business time of `cal`: "4h" is four working hours, "3d" three working days.

    Decision: a support team that writes `resolution = "3d"` against office hours means "within
    three working days", not 72 working hours (nine working days). So "d" is one `working_day` of
    the calendar, "w" its whole working week, and h/m/s are taken as they are. Round the clock
    both readings agree (3d = 72 h). A target stays one amount of business time, which is what
    pausing and resuming a timer needs.
    """
    plain = parse_duration(text)
    match = _DURATION_RE.fullmatch(text)
    assert match is not None  # parse_duration accepted it
    days = int(match["d"] or 0)
    weeks = int(match["w"] or 0)
    if not days and not weeks:
        return plain
    rest = plain - timedelta(days=days, weeks=weeks)
    day = working_day(cal)
    working_days_per_week = sum(1 for ranges in cal.hours.values() if ranges)
    return rest + day * days + day * working_days_per_week * weeks


# --- internals --------------------------------------------------------------------------------


def _naive_utc(value: datetime, label: str) -> datetime:
    # Internals work on naive UTC: its arithmetic is plain and exact, with no tzinfo surprises.
    if not isinstance(value, datetime):
        raise TypeError(f"{label} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{label} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC).replace(tzinfo=None)


def _since_midnight(t: time) -> timedelta:
    if t == END_OF_DAY:
        return _DAY
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)


def _fmt(t: time) -> str:
    return "24:00" if t == END_OF_DAY else t.isoformat(timespec="minutes")


def _parse_range(label: str, text: str) -> TimeRange:
    match = _RANGE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{label}: {text!r} is not HH:MM-HH:MM")
    sh, sm, eh, em = (int(g) for g in match.groups())
    if sh > 23 or sm > 59:
        raise ValueError(f"{label}: {text!r} starts at an invalid time")
    if (eh, em) == (24, 0):
        end = END_OF_DAY
    elif eh > 23 or em > 59:
        raise ValueError(f"{label}: {text!r} ends at an invalid time (24:00 is the latest)")
    else:
        end = time(eh, em)
    return time(sh, sm), end


def _check_ranges(label: str, ranges: Sequence[TimeRange]) -> tuple[TimeRange, ...]:
    for item in ranges:
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not all(isinstance(t, time) and t.tzinfo is None for t in item)
        ):
            raise ValueError(f"{label}: {item!r} is not a (start, end) pair of naive times")
        start, end = item
        if start == END_OF_DAY:
            raise ValueError(f"{label}: a range cannot start at 24:00")
        if start >= end:
            raise ValueError(
                f"{label}: '{_fmt(start)}-{_fmt(end)}' does not end after it starts "
                "(ranges cannot cross midnight; split a night shift over two days)"
            )
    ordered = tuple(sorted(ranges))
    for (s1, e1), (s2, e2) in pairwise(ordered):
        if s2 < e1:
            raise ValueError(
                f"{label}: '{_fmt(s1)}-{_fmt(e1)}' and '{_fmt(s2)}-{_fmt(e2)}' overlap"
            )
    return ordered


def _parse_holiday(value: str | date) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE_RE.fullmatch(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"holidays: {value!r} is not a YYYY-MM-DD date")


def _is_round_the_clock(cal: Calendar) -> bool:
    return not cal.holidays and all(cal.hours.get(wd, ()) == _WHOLE_DAY for wd in range(7))


def _utc_offset(zone: ZoneInfo, utc: datetime) -> timedelta:
    offset = utc.replace(tzinfo=UTC).astimezone(zone).utcoffset()
    assert offset is not None  # zoneinfo always knows the offset of a UTC instant
    return offset


def _constant_offset_spans(
    zone: ZoneInfo, start: datetime
) -> Iterator[tuple[datetime, datetime, timedelta]]:
    """Yield consecutive naive-UTC spans [a, b) from `start` on, each with one UTC offset."""
    a, offset_a = start, _utc_offset(zone, start)
    while True:
        b = a + _PROBE
        offset_b = _utc_offset(zone, b)
        if offset_b != offset_a:
            # Bisect to the exact microsecond the offset changes, so span edges (and therefore
            # business-time totals) agree exactly with what `astimezone` reports for any instant.
            lo, hi = a, b
            while hi - lo > _TICK:
                mid = lo + (hi - lo) // 2
                if _utc_offset(zone, mid) == offset_a:
                    lo = mid
                else:
                    hi = mid
            b, offset_b = hi, _utc_offset(zone, hi)
        yield a, b, offset_a
        a, offset_a = b, offset_b


def _business_intervals(
    cal: Calendar, start: datetime, stop: datetime | None
) -> Iterator[tuple[datetime, datetime]]:
    """Yield business intervals in [start, stop) as naive-UTC pairs, in order.

    Intervals are disjoint but not necessarily maximal (one may end where the next begins, e.g.
    at midnight or a DST change); consumers only sum them. Merging them would be wrong here: a
    round-the-clock stretch would then never be handed out until it ended.

    With `stop=None` this runs until the consumer stops, or raises ValueError once no business
    time has been seen for `_MAX_GAP`.
    """
    zone = _zone(cal.timezone)
    spans = {
        wd: tuple((_since_midnight(s), _since_midnight(e)) for s, e in cal.hours.get(wd, ()))
        for wd in range(7)
    }
    last_business = start
    # Within a span of constant offset, wall time is UTC plus that offset, a monotonic map; so
    # working ranges can be intersected in local time and mapped back. DST gaps and overlaps are
    # handled because they only ever sit at span edges.
    for a, b, offset in _constant_offset_spans(zone, start):
        if stop is not None and a >= stop:
            break
        if stop is None and a - last_business > _MAX_GAP:
            raise ValueError(
                f"calendar {cal.name!r} has no business time between {last_business:%Y-%m-%d} "
                f"and {a:%Y-%m-%d} (UTC)"
            )
        local_lo = a + offset
        local_hi = (b if stop is None else min(b, stop)) + offset
        day = local_lo.date()
        midnight = datetime.combine(day, time.min)
        while midnight < local_hi:
            if day not in cal.holidays:
                for s, e in spans[day.weekday()]:
                    lo, hi = max(midnight + s, local_lo), min(midnight + e, local_hi)
                    if lo >= hi:
                        continue
                    yield lo - offset, hi - offset
                    last_business = hi - offset
            day += _DAY
            midnight += _DAY


# Round the clock, no holidays. Defined last because constructing it runs the validators above.
ALWAYS = Calendar(ALWAYS_NAME, "UTC", dict.fromkeys(range(7), _WHOLE_DAY), frozenset())
