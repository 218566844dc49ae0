"""The running gateway's shared pieces: config, engine, sessions, and the config-to-database sync.

Every entry point (CLI command, `serve`, a worker process, a test) builds one `Runtime` from a
config; actors and handlers reach the database only through it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from channels.email.tokens import Keyring
from gateway.config import AppConfig, GatewayConfig
from gateway.db import make_engine, reading_engine, session_factory, upgrade, utcnow
from gateway.secret_box import SECRETS, SecretBox, SecretUnreadable
from tickets import domains, services
from tickets.models import App, Channel, ChannelAddress
from tickets.sla import policy_json


@dataclass
class Runtime:
    config: GatewayConfig
    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def create(cls, config: GatewayConfig, *, migrate: bool = True) -> Runtime:
        engine = make_engine(config.resolved_database_url)
        runtime = cls(config=config, engine=engine, sessions=session_factory(engine))
        if migrate:
            runtime.migrate()
        runtime.sync_config()
        runtime.reseal_secrets()
        return runtime

    @cached_property
    def keyring(self) -> Keyring:
        """Read once: processing verifies a reply token per message."""
        return self.config.keyring()

    @cached_property
    def secret_box(self) -> SecretBox:
        """Seals the channel passwords given through the API (key from the secret key)."""
        return SecretBox(self.config.secret_key(), self.config.previous_secret_keys())

    def clock(self) -> dt.datetime:
        return utcnow()

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One session, one transaction: committed on success, rolled back on any error."""
        with self.sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for reads only, rolled back at the end. On SQLite it reads a snapshot
        without queuing for the write lock, so looking up what to do next never waits for
        (or holds up) a transaction that writes."""
        with self.sessions(bind=self._reading_engine) as session:
            try:
                yield session
            finally:
                session.rollback()

    @cached_property
    def _reading_engine(self) -> Engine:
        return reading_engine(self.engine)

    def migrate(self) -> None:
        if self.engine.dialect.name == "postgresql":
            # Several nodes may start at once; one migrates, the others wait for it.
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(741852)"))
                try:
                    upgrade(self.engine)
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(741852)"))
                    conn.commit()
        else:
            upgrade(self.engine)

    def sync_config(self) -> None:
        """Make the apps and channels of the config exist in the database (never deletes them),
        and its domain grants the database's exactly."""
        now = self.clock()
        with self.unit_of_work() as session:
            for app_config in self.config.apps:
                app = services.ensure_app(
                    session,
                    app_config.name,
                    app_config.brand,
                    now,
                    default_locale=app_config.default_locale,
                )
                _sync_channels(session, app, app_config, now)
                app.sla_policies = _sla_policies(app_config)
            domains.sync_config_grants(
                session, {a.name: list(a.domains) for a in self.config.apps}, now
            )

    def reseal_secrets(self) -> int:
        """Seal every stored channel password under the current key: the cleartext of older
        versions, and values sealed under a key that has since become a previous one. Returns
        how many channels changed; a value no configured key opens is left for the check and
        sending to report."""
        with self.reading() as session:
            stale = [
                c.id
                for c in session.scalars(select(Channel))
                if any(not self.secret_box.is_current(v) for v in _sealed(c).values())
            ]
        for channel_id in stale:
            with self.unit_of_work() as session:
                channel = session.get(Channel, channel_id, with_for_update=True)
                if channel is None:
                    continue
                fresh = dict(_sealed(channel))
                for key, value in fresh.items():
                    try:
                        fresh[key] = self.secret_box.reseal(value)
                    except SecretUnreadable:
                        continue
                channel.settings = {**channel.settings, SECRETS: fresh}
        return len(stale)

    def close(self) -> None:
        self.engine.dispose()


def _sealed(channel: Channel) -> dict[str, Any]:
    return dict(channel.settings.get(SECRETS) or {})


def _sla_policies(app_config: AppConfig) -> list[Any]:
    calendars = {c.name: c for c in app_config.calendars}
    out = []
    for policy in app_config.sla_policies:
        cal = calendars.get(policy.calendar)
        out.append(
            policy_json(
                policy.name,
                priorities=list(policy.priorities),
                categories=list(policy.categories),
                durations={
                    "first_response": policy.first_response,
                    "next_response": policy.next_response,
                    "resolution": policy.resolution,
                },
                calendar=cal.model_dump() if cal is not None else None,
                warn_at=policy.warn_at,
            )
        )
    return out


def _sync_channels(session: Session, app: App, app_config: AppConfig, now: dt.datetime) -> None:
    for channel_config in app_config.channels:
        channel = session.scalar(
            select(Channel).where(Channel.app_id == app.id, Channel.name == channel_config.name)
        )
        settings = channel_config.model_dump(exclude={"name", "addresses"})
        settings["source"] = "config"
        if channel is None:
            channel = Channel(app_id=app.id, name=channel_config.name, created_at=now)
            session.add(channel)
        channel.settings = settings
        wanted = list(channel_config.addresses)
        have = {a.address: a for a in channel.addresses}
        for address in wanted:
            if address not in have:
                existing = session.scalar(
                    select(ChannelAddress).where(ChannelAddress.address == address)
                )
                if existing is not None:
                    # The config moved the address to this channel.
                    session.delete(existing)
                    session.flush()
                channel.addresses.append(ChannelAddress(address=address))
        for address, row in have.items():
            if address not in wanted:
                channel.addresses.remove(row)
    session.flush()
