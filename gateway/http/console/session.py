"""Who is looking at a console page: the signed-in agent of the session cookie, and the checks
every console form passes (CSRF token, same-site origin).

A page that needs a signed-in agent takes `ViewerDep` (an anonymous browser is sent to the
sign-in page and back), an admin page `AdminDep` (an agent gets 403). A form handler takes
`FormDep`: the parsed form of a viewer whose token matched and whose browser says the post
comes from our own page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from gateway.http.auth import Caller
from gateway.http.deps import RuntimeDep
from gateway.http.origin import cross_site
from gateway.runtime import Runtime
from tickets import sign_in
from tickets.models import App, Role

COOKIE = "gw_console"


class SignInRequired(Exception):
    """Raised by a page's dependency: answer with a redirect to the sign-in page."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.location = "/signin?next=" + quote(back_to, safe="/")


@dataclass(frozen=True)
class Viewer:
    """The signed-in agent of a console request; `caller` is what the API services take."""

    caller: Caller
    name: str
    email: str
    brand: str
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.caller.role == Role.ADMIN


def _viewer(runtime: Runtime, secret: str) -> Viewer | None:
    with runtime.reading() as session:
        agent = sign_in.agent_for_session(session, secret, runtime.clock())
        if agent is None:
            return None
        app = session.get(App, agent.app_id)
        assert app is not None
        return Viewer(
            Caller(agent.id, agent.app_id, agent.role),
            agent.name,
            agent.email,
            app.brand,
            sign_in.csrf_token(secret),
        )


async def optional_viewer(request: Request, runtime: RuntimeDep) -> Viewer | None:
    secret = request.cookies.get(COOKIE)
    if not secret or len(secret) > 100:
        return None
    return await run_in_threadpool(_viewer, runtime, secret)


async def current_viewer(
    request: Request, viewer: Annotated[Viewer | None, Depends(optional_viewer)]
) -> Viewer:
    if viewer is None:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(back if request.method == "GET" else "/")
    return viewer


ViewerDep = Annotated[Viewer, Depends(current_viewer)]


def require_admin(viewer: ViewerDep) -> Viewer:
    if not viewer.is_admin:
        raise HTTPException(403, "this page is for the app's admins")
    return viewer


AdminDep = Annotated[Viewer, Depends(require_admin)]


async def checked_form(request: Request, viewer: ViewerDep) -> FormData:
    """The posted form of a signed-in viewer, after the CSRF checks."""
    if cross_site(request):
        raise HTTPException(403, "this form can only be sent from the console's own page")
    form = await request.form(max_files=0, max_fields=100, max_part_size=256 * 1024)
    if form.get("csrf") != viewer.csrf:
        raise HTTPException(403, "the form is out of date; reload the page and send it again")
    return form


FormDep = Annotated[FormData, Depends(checked_form)]
