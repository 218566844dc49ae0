"""The channel setup page, /admin/channels/email/setup: how to connect a mailbox, and the state
and last check of the caller's channels. The convert-time warning links here.

The steps are the same for everyone; the channels' state is shown only to a request that
carries an agent's API token (the console sends it), since it belongs to one app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, Security
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select

import templates
from channels.email.dkim_record import DkimKeyError, dkim_record
from gateway.api_tokens import agent_for_token
from gateway.channel_admin import channel_json
from gateway.http.auth import optional_bearer
from gateway.http.deps import RuntimeDep
from tickets.email_check import SETUP_PATH
from tickets.models import Channel

router = APIRouter(tags=["admin"])

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(templates.__file__).parent / "admin")),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _channels(runtime: RuntimeDep, token: str | None) -> list[dict[str, Any]] | None:
    if not token:
        return None
    with runtime.unit_of_work() as session:
        agent = agent_for_token(session, token)
        if agent is None:
            return None
        rows = session.scalars(
            select(Channel).where(Channel.app_id == agent.app_id).order_by(Channel.id)
        )
        return [{**channel_json(c), **_dkim(c)} for c in rows]


def _dkim(channel: Channel) -> dict[str, Any]:
    """The exact TXT record to publish when the gateway signs this channel's mail itself."""
    settings = channel.settings.get("dkim")
    if not settings:
        return {"dkim": None, "dkim_error": None}
    try:
        record = dkim_record(settings["selector"], settings["domain"], settings["private_key_file"])
    except DkimKeyError as exc:
        return {"dkim": None, "dkim_error": str(exc)}
    return {"dkim": record, "dkim_error": None}


@router.get(SETUP_PATH, response_class=HTMLResponse)
def channel_setup(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(optional_bearer)],
) -> HTMLResponse:
    channels = _channels(runtime, credentials.credentials if credentials else None)
    addresses = [a for c in channels or [] for a in c["addresses"]]
    smtp = runtime.config.smtp
    html = _env.get_template("channel_setup.html").render(
        channels=channels,
        addresses=addresses,
        domains=sorted({a.rpartition("@")[2] for a in addresses}),
        smtp_listen=smtp.listen,
        smtp_hostname=smtp.hostname,
    )
    return HTMLResponse(html)
