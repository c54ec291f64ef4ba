"""The connection a migration run uses.

A test or tool may hand one in through ``config.attributes["connection"]`` (an
Engine or a Connection, as pytest-alembic does); otherwise the database is
resolved by :mod:`todo_database.deploy.database` and announced with its password masked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from todo_database.deploy import database
from todo_database.deploy import runner as deploy

log = logging.getLogger("migrations")


@contextmanager
def migration_connection(
    config: Config, settings: deploy.Settings | None = None
) -> Iterator[Connection]:
    """Yield the connection to migrate through; failures become one-line errors. A
    connection of its own keeps TCP keepalives (`settings`), so that a deployer whose
    server vanished stops waiting for it."""
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        yield given
        return
    if given is not None:  # an Engine, or an engine-like wrapper (pytest-alembic uses one)
        with given.connect() as connection:
            yield connection
        return

    try:
        target = database.resolve()
    except database.DatabaseError as exc:
        raise CommandError(str(exc)) from None
    deploy.refuse_pooled_host(target.url.host)
    log.info("Using database %s", target.describe())
    keepalives = (settings or deploy.Settings()).libpq_keepalives()
    engine = database.create_engine(target.url, keepalives=keepalives, poolclass=pool.NullPool)
    try:
        try:
            connection = engine.connect()
        except DBAPIError as exc:
            raise CommandError(str(database.explain_connect_error(exc, target.url))) from None
        with connection:
            yield connection
    finally:
        engine.dispose()
