"""The admin API of mail domains, /api/v1/admin/domains: which domains the app may use, and
its DNS proofs.

An admin may start and check a DNS proof for the app; granting a domain is the operator's
(the config file or `gateway domains grant`), and a domain another app holds cannot be claimed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from gateway import domain_proof
from gateway.http.auth import AdminDep
from gateway.http.deps import RuntimeDep
from gateway.http.schemas import DomainIn, DomainOut, problems

router = APIRouter(
    prefix="/api/v1/admin/domains", tags=["admin"], responses=problems(400, 401, 403, 404, 409)
)

DomainName = Annotated[str, Path(min_length=1, max_length=253)]


@router.get("", response_model=list[DomainOut])
def list_domains(runtime: RuntimeDep, caller: AdminDep) -> list[dict[str, Any]]:
    """The app's domains: granted, proven by DNS, or with a proof under way."""
    return domain_proof.list_for(runtime, caller.app_id)


@router.post("", response_model=DomainOut, status_code=201)
def start_proof(runtime: RuntimeDep, caller: AdminDep, body: DomainIn) -> dict[str, Any]:
    """Start a DNS proof: publish the answer's `record`, then POST .../{domain}/verify."""
    return domain_proof.start(runtime, caller.app_id, body.domain)


@router.post("/{domain}/verify", response_model=DomainOut)
def verify(runtime: RuntimeDep, caller: AdminDep, domain: DomainName) -> dict[str, Any]:
    """Look the TXT record up; when it is there, the domain is proven for the app. Addresses
    on it are accepted by SMTP from the next reload of the addresses (10 s by default)."""
    return domain_proof.verify(runtime, caller.app_id, domain)
