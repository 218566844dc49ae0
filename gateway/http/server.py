"""Run the HTTP app with uvicorn in a background thread, stoppable from the main thread.

The listening socket is bound here, in the caller's thread, so a port already in use fails
`gateway serve` at start with a clear error instead of in a thread nobody watches, and port 0
(tests) gives the real port at once.
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from fastapi import FastAPI


class HttpError(RuntimeError):
    """The HTTP server could not start."""


def _bind(listen: str) -> socket.socket:
    host, _, port = listen.rpartition(":")
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    try:
        return socket.create_server((host.strip("[]"), int(port)), family=family, backlog=512)
    except OSError as exc:
        raise HttpError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc


class HttpServer:
    def __init__(self, app: FastAPI, listen: str) -> None:
        self._sock = _bind(listen)
        config = uvicorn.Config(
            app,
            # The gateway's logging setup stays in charge; requests are not access-logged
            # because URLs can carry tokens.
            log_config=None,
            access_log=False,
            # request.client stays the TCP peer: X-Forwarded-For is read only from the
            # operator's trusted proxies (gateway/http/rate_limits.py), never by default.
            proxy_headers=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="http", daemon=True
        )

    @property
    def address(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._sock.close()
                raise HttpError(f"the HTTP server on {self.address} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        # Finishes requests in flight (up to the graceful timeout), then closes the socket.
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
