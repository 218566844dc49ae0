"""What every `gateway` command shares: the state of one invocation (config, runtime, the app
acted on), user errors as one line on stderr, and JSON output.

The commands live in `gateway.cli` and, a group per module, beside this one.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.runtime import Runtime
from tickets import services
from tickets.errors import DomainError
from tickets.models import App

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 1
EXIT_USAGE = 2


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    click.echo(f"gateway: {message}", err=True)
    sys.exit(code)


class State:
    def __init__(self, config_path: str | None, app_name: str | None) -> None:
        self.config_path = config_path
        self.app_name = app_name
        self._config: GatewayConfig | None = None
        self._runtime: Runtime | None = None

    @property
    def config(self) -> GatewayConfig:
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config

    def runtime(self) -> Runtime:
        if self._runtime is None:
            from gateway.broker import setup_broker

            setup_broker(self.config.broker_url, self.config.broker_namespace)
            self._runtime = Runtime.create(self.config)
        return self._runtime

    def app(self, session: Session) -> App:
        names = [a.name for a in self.config.apps]
        name = self.app_name or (names[0] if names else None)
        if name is None:
            raise DomainError("the config has no [[apps]]")
        return services.get_app(session, name)


def handle_errors(fn: F) -> F:
    """Turn the errors a user can cause into one line on stderr and a non-zero exit."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail(f"config: {exc}")
        except DomainError as exc:
            fail(str(exc))
        except OperationalError as exc:
            fail(f"database: {str(exc.orig).splitlines()[0] if exc.orig else exc}")

    return wrapper  # type: ignore[return-value]


pass_state = click.make_pass_decorator(State)


@contextmanager
def unit_of_work(state: State) -> Iterator[tuple[Session, App, dt.datetime]]:
    runtime = state.runtime()
    with runtime.unit_of_work() as session:
        yield session, state.app(session), runtime.clock()


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


# Wide enough for any row; a table is only as wide as its cells, so nothing is padded to it.
PIPE_WIDTH = 100_000


def console() -> Console:
    """Where tables and text go: the terminal at its width, else (a pipe, a file) lines as
    long as their content, since rich would otherwise cut every line at 80 columns."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPE_WIDTH)
