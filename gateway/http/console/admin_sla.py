"""The admin's SLA page, `/admin/sla`: the app's SLA policies in the order they are tried, each
with its targets and business calendar (time zone, weekly hours, holidays). Read only: the
policies live in the operator's config file and are synced into the app (tickets.sla).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from gateway.http.auth import work
from gateway.http.console.pages import render
from gateway.http.console.session import AdminDep
from gateway.http.deps import RuntimeDep
from tickets import sla
from tickets.business_time import END_OF_DAY, WEEKDAY_KEYS, Calendar

router = APIRouter(include_in_schema=False)

DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
TARGETS = (
    ("first_response", "First response"),
    ("next_response", "Next response"),
    ("resolution", "Resolution"),
)


def _clock(value: dt.time) -> str:
    return "24:00" if value == END_OF_DAY else value.strftime("%H:%M")


def _calendar(calendar: Calendar) -> dict[str, Any]:
    return {
        "name": calendar.name,
        "timezone": calendar.timezone,
        "always": calendar.name == "always",
        "days": [
            (DAYS[wd], ", ".join(f"{_clock(a)}–{_clock(b)}" for a, b in calendar.hours[wd]))
            for wd in range(len(WEEKDAY_KEYS))
        ],
        "holidays": sorted(d.isoformat() for d in calendar.holidays),
    }


@router.get("/admin/sla", response_class=HTMLResponse)
def sla_page(request: Request, runtime: RuntimeDep, viewer: AdminDep) -> HTMLResponse:
    with work(runtime, viewer.caller) as w:
        stored = list(w.app.sla_policies or [])
        parsed = sla.policies_of(w.app)
    policies = [
        {
            "name": item["name"],
            "priorities": item["priorities"],
            "categories": item["categories"],
            "targets": [(label, item["durations"].get(key)) for key, label in TARGETS],
            "warn_percent": round(float(item["warn_at"]) * 100),
            "calendar": policy.calendar.name,
        }
        for item, policy in zip(stored, parsed, strict=True)
    ]
    calendars = {p.calendar.name: _calendar(p.calendar) for p in parsed}
    return render(
        request,
        "admin_sla.html",
        viewer,
        policies=policies,
        calendars=list(calendars.values()),
    )
