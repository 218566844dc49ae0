"""The API's conversation detail carries `convert_hints` (tickets/convert_hints.py) until the
conversation is converted, through the real HTTP server."""

from __future__ import annotations

from tests.support.api_world import World


def test_hints_on_the_detail_until_converted(world: World) -> None:
    with world.http.client(world.agent_a) as api:
        path = f"/api/v1/conversations/{world.conv_a}"
        assert api.get(path).json()["convert_hints"] == []
        reply = {"text": "Sorry about that! I'll get back to you on Tuesday with the engineer."}
        assert api.post(f"{path}/replies", json=reply).status_code == 201
        [hint] = api.get(path).json()["convert_hints"]
        assert hint.startswith("Bob promised something for another day")
        assert "Tuesday" in hint
        assert api.post(f"{path}/convert", json={}).status_code == 201
        assert api.get(path).json()["convert_hints"] is None
