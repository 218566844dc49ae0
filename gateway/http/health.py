"""`/healthz`: is the process up and can it reach its database."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from gateway.http.deps import RuntimeDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
def healthz(runtime: RuntimeDep) -> JSONResponse:
    try:
        with runtime.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        # A load balancer takes the node out of rotation; the reason is for the operator.
        body = Health(status="unavailable", database=type(exc).__name__)
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(status="ok", database="ok").model_dump())
