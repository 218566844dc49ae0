"""Dependencies shared by the routers: the runtime the app was built with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.runtime import Runtime


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
