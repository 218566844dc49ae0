"""The real HTTP server on a free loopback port, and httpx clients that talk to it.

`running_http(runtime)` runs `create_app(runtime)` exactly as `gateway serve` does (uvicorn in a
thread); the `http_api` fixture gives a fresh embedded-default runtime on SQLite under the
test's tmp_path with the server already listening.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.config import GatewayConfig, embedded_default
from gateway.http.app import create_app
from gateway.http.server import HttpServer
from gateway.runtime import Runtime


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningHttp:
    runtime: Runtime
    url: str

    def client(self, token: str | None = None) -> httpx.Client:
        """A client for this server; with a token it authenticates as that token's agent."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@contextmanager
def running_http(runtime: Runtime) -> Iterator[RunningHttp]:
    server = HttpServer(create_app(runtime), "127.0.0.1:0")
    server.start()
    try:
        yield RunningHttp(runtime, server.url)
    finally:
        server.stop()


def loopback_config(tmp_path: Path) -> GatewayConfig:
    """The embedded default on its own SQLite file, listening nowhere fixed."""
    base = embedded_default()
    return base.model_copy(
        update={
            "database_url": f"sqlite:///{tmp_path / 'gw.db'}",
            "data_dir": str(tmp_path),
            "http": base.http.model_copy(update={"listen": "127.0.0.1:0"}),
            # aiosmtpd's controller cannot report a port 0 bind, so pick a free one.
            "smtp": base.smtp.model_copy(update={"listen": f"127.0.0.1:{free_port()}"}),
        }
    )


@contextmanager
def serving(config: GatewayConfig) -> Iterator[RunningHttp]:
    """A runtime of `config` with its HTTP server listening; both closed afterwards."""
    runtime = Runtime.create(config)
    try:
        with running_http(runtime) as running:
            yield running
    finally:
        runtime.close()


@pytest.fixture
def http_api(tmp_path: Path) -> Iterator[RunningHttp]:
    with serving(loopback_config(tmp_path)) as running:
        yield running
