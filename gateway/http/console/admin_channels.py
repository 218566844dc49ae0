"""The admin's channel pages: `/admin/channels` (the list, adding one, how to connect a mailbox)
and `/admin/channels/{id}` (edit, disable or enable, the DNS records to publish, and the
end-to-end check, whose steps the page shows as they end).

Everything goes through gateway.channel_admin, as the admin API does: passwords are given by
value, sealed, never shown back; hosts are held to what the operator allows the app. The old
setup page (`tickets.email_check.SETUP_PATH`, where the convert warning links) leads here.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import FormData

from gateway import channel_admin, channel_runs
from gateway.channel_dns import channel_records
from gateway.http.auth import work
from gateway.http.console.pages import render
from gateway.http.console.session import AdminDep, FormDep, Viewer, ViewerDep
from gateway.http.deps import RuntimeDep
from gateway.http.schemas import ImapIn, SmtpIn
from gateway.runtime import Runtime
from tickets.email_check import SETUP_PATH
from tickets.errors import DomainError, NotFound
from tickets.models import Agent, Channel, Role

router = APIRouter(include_in_schema=False)

Id = Annotated[int, Path(ge=1, le=2**31 - 1)]
SAVED = {
    "added": "The channel is added. Run its test to verify it.",
    "saved": "Your changes are saved. Run the test again to verify the channel.",
    "disabled": "The channel is disabled: mail to its addresses is refused from now on.",
    "enabled": "The channel is enabled again.",
}


def _relay(runtime: Runtime, channel: dict[str, Any]) -> str:
    if channel["smtp"]:
        return f"{channel['smtp']['host']}:{channel['smtp']['port']} (the channel's own relay)"
    out = runtime.config.outbound
    if out.transport == "smtp":
        return f"{out.host}:{out.port} (the server's relay)"
    return "none: outgoing mail is written to files (transport file)"


def _view(runtime: Runtime, channel: Channel) -> dict[str, Any]:
    shown = channel_admin.channel_json(channel)
    shown["relay"] = _relay(runtime, shown)
    return shown


def _list_page(
    request: Request,
    runtime: Runtime,
    viewer: Viewer,
    status: int = 200,
    problem: str | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    with work(runtime, viewer.caller) as w:
        rows = w.session.scalars(
            select(Channel).where(Channel.app_id == w.app.id).order_by(Channel.id)
        )
        channels = [_view(runtime, c) for c in rows]
    return render(
        request,
        "admin_channels.html",
        viewer,
        status=status,
        channels=channels,
        problem=problem,
        form=form or {},
        smtp=runtime.config.smtp,
        file_transport=runtime.config.outbound.transport == "file",
    )


def _channel_page(
    request: Request,
    runtime: Runtime,
    viewer: Viewer,
    channel_id: int,
    status: int = 200,
    problem: str | None = None,
) -> HTMLResponse:
    with work(runtime, viewer.caller) as w:
        channel = _get(w.session, w.app, channel_id)
        shown = _view(runtime, channel)
        records = channel_records(runtime.config, channel)
    run = channel_runs.current(viewer.caller.app_id, channel_id)
    return render(
        request,
        "admin_channel.html",
        viewer,
        status=status,
        channel=shown,
        records=records,
        check=_check_state(run, shown["last_test"]),
        problem=problem,
        saved=SAVED.get(request.query_params.get("done", "")),
    )


def _get(session: Any, app: Any, channel_id: int) -> Channel:
    try:
        return channel_admin.get_channel(session, app, channel_id)
    except NotFound:
        raise HTTPException(404, "there is no such channel in your app") from None


def _label(name: str) -> str:
    """A step's name as a heading: "imap tls" -> "IMAP TLS", "round trip" -> "Round trip"."""
    words = [_ACRONYMS.get(w, w) for w in name.split()]
    return " ".join(words)[:1].upper() + " ".join(words)[1:]


_ACRONYMS = {"imap": "IMAP", "smtp": "SMTP", "tls": "TLS"}


def _check_state(run: channel_runs.Run | None, last_test: Any) -> dict[str, Any]:
    """What the check panel shows: the run of this process while it goes, else the stored
    result of the last one (which may have run anywhere)."""
    if run is not None and (run.running or last_test is None):
        state = run.as_json()
    elif last_test is None:
        state = {"running": False, "steps": [], "result": None}
    else:
        state = {"running": False, "steps": last_test.get("steps", []), "result": last_test}
    state["steps"] = [{**step, "label": _label(step["name"])} for step in state["steps"]]
    return state


# --- reading the forms ------------------------------------------------------------------


def form_text(form: FormData, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _addresses(form: FormData) -> list[str]:
    return [a for a in form_text(form, "addresses").replace(",", "\n").split() if a]


def _port(form: FormData, key: str, default: int) -> int:
    value = form_text(form, key)
    if not value:
        return default
    if not value.isdigit():
        raise DomainError(f"the port must be a number, not {value!r}")
    return int(value)


def _imap(form: FormData) -> dict[str, Any] | None:
    if not form_text(form, "imap_host"):
        return None
    security = form_text(form, "imap_security") or "ssl"
    values = {
        "host": form_text(form, "imap_host"),
        "port": _port(form, "imap_port", 993 if security == "ssl" else 143),
        "ssl": security == "ssl",
        "starttls": security == "starttls",
        "username": form_text(form, "imap_username"),
        "password": form_text(form, "imap_password") or None,
        "folder": form_text(form, "imap_folder") or "INBOX",
    }
    return _checked(ImapIn, "IMAP", values)


def _smtp(form: FormData) -> dict[str, Any] | None:
    if not form_text(form, "smtp_host"):
        return None
    security = form_text(form, "smtp_security") or "starttls"
    values = {
        "host": form_text(form, "smtp_host"),
        "port": _port(form, "smtp_port", 465 if security == "tls" else 587),
        "starttls": security == "starttls",
        "tls": security == "tls",
        "username": form_text(form, "smtp_username") or None,
        "password": form_text(form, "smtp_password") or None,
    }
    return _checked(SmtpIn, "relay", values)


def _checked(model: type[ImapIn] | type[SmtpIn], what: str, values: dict[str, Any]) -> Any:
    """The section as the admin API would take it (the same limits), as a dict."""
    try:
        return model.model_validate(values).model_dump()
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"]) or "settings"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise DomainError(f"{what} {field.replace('_', ' ')}: {message}") from None


def _kept(form: FormData) -> dict[str, str]:
    """What the admin typed, to fill the form again after a refusal; never a password."""
    return {k: v for k, v in form.items() if isinstance(v, str) and "password" not in k}


# --- pages and forms --------------------------------------------------------------------


@router.get("/admin/channels", response_class=HTMLResponse)
def channels_page(request: Request, runtime: RuntimeDep, viewer: AdminDep) -> HTMLResponse:
    return _list_page(request, runtime, viewer)


@router.get(SETUP_PATH, response_class=HTMLResponse)
def setup_page(request: Request, runtime: RuntimeDep, viewer: ViewerDep) -> Response:
    """Where the convert warning links: an admin goes on to the channel setup; an agent, who
    cannot set up channels, learns which admins can."""
    if viewer.is_admin:
        return RedirectResponse("/admin/channels#setup", status_code=303)
    with runtime.reading() as session:
        admins = [
            (a.name, a.email)
            for a in session.scalars(
                select(Agent).where(
                    Agent.app_id == viewer.caller.app_id,
                    Agent.role == Role.ADMIN,
                    Agent.active.is_(True),
                )
            )
        ]
    return render(request, "setup_ask_admin.html", viewer, admins=admins)


@router.post("/admin/channels")
def add_channel(request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep) -> Response:
    try:
        with work(runtime, viewer.caller) as w:
            channel = channel_admin.create_channel(
                w.session,
                w.app,
                form_text(form, "name"),
                _addresses(form),
                w.now,
                imap=_imap(form),
                smtp=_smtp(form),
                box=runtime.secret_box,
                policy=runtime.config.host_policy(w.app.name),
            )
            channel_id = channel.id
    except DomainError as exc:
        return _list_page(request, runtime, viewer, 400, str(exc), _kept(form))
    return RedirectResponse(f"/admin/channels/{channel_id}?done=added", status_code=303)


@router.get("/admin/channels/{channel_id}", response_class=HTMLResponse)
def channel_page(
    request: Request, runtime: RuntimeDep, viewer: AdminDep, channel_id: Id
) -> HTMLResponse:
    return _channel_page(request, runtime, viewer, channel_id)


@router.post("/admin/channels/{channel_id}")
def edit_channel(
    request: Request, runtime: RuntimeDep, viewer: AdminDep, form: FormDep, channel_id: Id
) -> Response:
    clear = tuple(k for k in ("imap", "smtp") if form.get(f"{k}_remove"))
    try:
        with work(runtime, viewer.caller) as w:
            channel = _get(w.session, w.app, channel_id)
            channel_admin.update_channel(
                w.session,
                channel,
                addresses=_addresses(form),
                imap=None if "imap" in clear else _imap(form),
                smtp=None if "smtp" in clear else _smtp(form),
                clear=clear,
                box=runtime.secret_box,
                policy=runtime.config.host_policy(w.app.name),
            )
    except DomainError as exc:
        return _channel_page(request, runtime, viewer, channel_id, 400, str(exc))
    return RedirectResponse(f"/admin/channels/{channel_id}?done=saved", status_code=303)


def _set_enabled(runtime: Runtime, viewer: Viewer, channel_id: int, on: bool) -> Response:
    with work(runtime, viewer.caller) as w:
        _get(w.session, w.app, channel_id).enabled = on
    done = "enabled" if on else "disabled"
    return RedirectResponse(f"/admin/channels/{channel_id}?done={done}", status_code=303)


@router.post("/admin/channels/{channel_id}/disable")
def disable(runtime: RuntimeDep, viewer: AdminDep, form: FormDep, channel_id: Id) -> Response:
    return _set_enabled(runtime, viewer, channel_id, False)


@router.post("/admin/channels/{channel_id}/enable")
def enable(runtime: RuntimeDep, viewer: AdminDep, form: FormDep, channel_id: Id) -> Response:
    return _set_enabled(runtime, viewer, channel_id, True)


@router.post("/admin/channels/{channel_id}/test")
def run_test(runtime: RuntimeDep, viewer: AdminDep, form: FormDep, channel_id: Id) -> Response:
    with work(runtime, viewer.caller) as w:
        _get(w.session, w.app, channel_id)
    channel_runs.start(runtime, viewer.caller.app_id, channel_id)
    return RedirectResponse(f"/admin/channels/{channel_id}#check", status_code=303)


@router.get("/admin/channels/{channel_id}/test")
def test_progress(runtime: RuntimeDep, viewer: AdminDep, channel_id: Id) -> JSONResponse:
    """The check's steps so far, for the page's script to show while it runs."""
    with work(runtime, viewer.caller) as w:
        last_test = _get(w.session, w.app, channel_id).last_test
    run = channel_runs.current(viewer.caller.app_id, channel_id)
    return JSONResponse(_check_state(run, last_test), headers={"Cache-Control": "no-store"})
