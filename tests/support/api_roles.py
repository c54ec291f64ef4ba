"""Login roles of the API's own, made as a deployment makes them.

A login role that is a member of ``todo_app`` carries the limits declared for the API's
sessions (``Role.login_settings``); one without them is drift that ``alembic check``
reports, on every database of the server, since roles are the cluster's. So a test's
login role gets its settings first and its membership last: no other test's check can
see it half made.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import sql

from models.security import declared_role


def create_login_role(
    connection: psycopg.Connection[Any], name: str, member_of: str, password: str | None = None
) -> None:
    """``CREATE ROLE name LOGIN``, with `password`, the settings `member_of` declares for
    its login members (those the server knows), then ``GRANT member_of TO name``."""
    role = sql.Identifier(name)
    statement = sql.SQL("CREATE ROLE {} LOGIN").format(role)
    if password is not None:
        statement += sql.SQL(" PASSWORD {}").format(sql.Literal(password))
    connection.execute(statement)
    for setting, value in declared_role(member_of).login_settings.items():
        known = connection.execute("SELECT 1 FROM pg_settings WHERE name = %s", [setting])
        if known.fetchone() is not None:
            connection.execute(
                sql.SQL("ALTER ROLE {} SET {} = {}").format(
                    role, sql.Identifier(setting), sql.Literal(value)
                )
            )
    connection.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(member_of), role))


def drop_login_role(connection: psycopg.Connection[Any], name: str, attempts: int = 5) -> None:
    """``DROP ROLE IF EXISTS name``, tried again when a migration of another database,
    setting the limits of every login member of the API's role, wrote the role's
    settings at that very moment ("tuple concurrently updated")."""
    for attempt in range(attempts):
        try:
            connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
            return
        except psycopg.errors.InternalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
