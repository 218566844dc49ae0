"""Inputs that made the agent API answer 500, replayed over a real socket on each database.

A lone surrogate in JSON, a snooze far beyond what a calendar can hold, and a page size the
OpenAPI schema allows: each gets a 4xx with a message a client can act on, or the page.
"""

from __future__ import annotations

import pytest

from tests.support.api_world import World

# JSON as an attacker writes it: the escape for a lone surrogate, which json.dumps would not
# produce from a Python str without it being there already.
LONE_SURROGATE = b'{"text": "\\ud800"}'


@pytest.mark.parametrize(
    "route",
    ["/replies", "/notes"],
)
def test_a_lone_surrogate_in_json_is_a_4xx_with_a_message(world: World, route: str) -> None:
    with world.http.client(world.agent_a) as c:
        r = c.post(
            f"/api/v1/conversations/{world.conv_a}{route}",
            content=LONE_SURROGATE,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code in (400, 422), r.text
        assert "unicode" in r.text.lower()
        # The answer itself is valid UTF-8 JSON a client can read.
        assert r.json()["detail"]
        # Nothing was stored, and the server still answers.
        shown = c.get(f"/api/v1/conversations/{world.conv_a}").json()
        assert all("\ufffd" not in m["text"] for m in shown["messages"])


def test_a_lone_surrogate_in_a_query_or_a_field_name_is_a_4xx(world: World) -> None:
    with world.http.client(world.agent_a) as c:
        r = c.post(
            f"/api/v1/conversations/{world.conv_a}/replies",
            content=b'{"\\udc80": 1}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code in (400, 422), r.text
        assert r.json()["detail"]


@pytest.mark.parametrize("duration", ["99999999d", "999999999w", "99999999999999999s"])
def test_a_snooze_beyond_any_calendar_is_a_422_saying_so(world: World, duration: str) -> None:
    with world.http.client(world.agent_a) as c:
        url = f"/api/v1/conversations/{world.conv_a}"
        r = c.post(f"{url}/snooze", json={"duration": duration})
        assert r.status_code == 422, r.text
        assert "too far in the future" in r.text
        assert c.get(url).json()["state"] == "open"
        # A sane one still works.
        assert c.post(f"{url}/snooze", json={"duration": "2d"}).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/inbox", "/api/v1/tickets", "/api/v1/search"])
def test_the_largest_page_the_schema_allows_is_served(world: World, path: str) -> None:
    with world.http.client(world.agent_a) as c:
        schema = c.get("/openapi.json").json()
        [limit] = [p for p in schema["paths"][path]["get"]["parameters"] if p["name"] == "limit"]
        largest = limit["schema"]["maximum"]
        params = {"limit": largest, **({"q": "printer"} if path.endswith("search") else {})}
        r = c.get(path, params=params)
        assert r.status_code == 200, r.text
        assert r.json()["limit"] == largest
        too_many = c.get(path, params={**params, "limit": largest + 1})
        assert too_many.status_code == 422


@pytest.mark.parametrize(
    "until", ["9999-12-31T23:59:59-12:00", "9999-12-31T23:59:59Z", "2999-01-01T00:00:00"]
)
def test_a_snooze_until_a_date_beyond_any_calendar_is_a_4xx_saying_so(
    world: World, until: str
) -> None:
    """The same bound as a duration: a time whose UTC form is past year 9999 made a 500."""
    with world.http.client(world.agent_a) as c:
        url = f"/api/v1/conversations/{world.conv_a}"
        r = c.post(f"{url}/snooze", json={"until": until})
        assert r.status_code in (400, 422), r.text
        assert "too far in the future" in r.text
        assert c.get(url).json()["state"] == "open"
