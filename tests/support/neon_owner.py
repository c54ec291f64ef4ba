"""A role shaped like the one Neon hands a project, on a server the tests are given.

Neon's ``neondb_owner`` is no superuser: ``LOGIN CREATEROLE CREATEDB BYPASSRLS``, a
member of the group role ``neon_superuser`` (``CREATEDB CREATEROLE NOLOGIN REPLICATION
BYPASSRLS``, itself a member of ``pg_read_all_data``, ``pg_write_all_data``,
``pg_signal_backend``, ``pg_monitor`` and, on PostgreSQL 16+,
``pg_create_subscription``), and the owner of its database, so of ``public`` through
``pg_database_owner`` on PostgreSQL 15+. On PostgreSQL 16+ it manages only the roles
it created itself (or holds ``WITH ADMIN OPTION``); a role made through Neon's console
is made by Neon's own superuser, and is not the owner's.

:func:`make_owner` makes such a pair of roles, named for one test run, as a superuser;
the tests then connect as the owner for everything production does as it (migrations,
the review, the Neon stand-in's branches). :func:`drop_owner` drops them again.
``python -m tests.support.neon_owner create|drop ADMIN_URL`` does the same from a shell, for
trying the repository as Neon runs it.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from todo_database.deploy import database

#: What Neon's ``neon_superuser`` is a member of (its compute's own SQL).
NEON_SUPERUSER_MEMBERSHIPS = (
    "pg_read_all_data",
    "pg_write_all_data",
    "pg_signal_backend",
    "pg_monitor",
)
#: Added on PostgreSQL 16+, where it exists.
NEON_SUPERUSER_MEMBERSHIPS_16 = ("pg_create_subscription",)


@dataclass(frozen=True)
class NeonOwner:
    """The two roles: the login owner and its ``neon_superuser``-like group."""

    name: str
    group: str
    password: str

    def url(self, server: URL, database_name: str | None = None) -> URL:
        """`server`'s URL, logged in as the owner (to `database_name` when given)."""
        url = server.set(username=self.name, password=self.password)
        return url.set(database=database_name) if database_name else url


def is_superuser(connection: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    return row.fetchone() == (True,)


def make_owner(superuser: URL, name: str, group: str) -> NeonOwner:
    """Create the owner `name` and its group `group` on the server behind `superuser`
    (a superuser's URL), with a password of their own."""
    owner = NeonOwner(name, group, secrets.token_hex(16))
    with database.admin_connection(superuser) as connection:
        version = int(str(connection.execute("SHOW server_version_num").fetchone()[0]))  # type: ignore[index]
        memberships = list(NEON_SUPERUSER_MEMBERSHIPS)
        if version >= 160000:
            memberships += NEON_SUPERUSER_MEMBERSHIPS_16
        connection.execute(
            sql.SQL(
                "CREATE ROLE {} NOLOGIN CREATEDB CREATEROLE REPLICATION BYPASSRLS IN ROLE {}"
            ).format(sql.Identifier(group), sql.SQL(", ").join(map(sql.Identifier, memberships)))
        )
        connection.execute(
            sql.SQL(
                "CREATE ROLE {} LOGIN CREATEROLE CREATEDB BYPASSRLS PASSWORD {} IN ROLE {}"
            ).format(sql.Identifier(name), sql.Literal(owner.password), sql.Identifier(group))
        )
    return owner


def let_manage(superuser: URL, owner: str, roles: Iterable[str]) -> list[str]:
    """As if `owner` had created them: ``GRANT role TO owner WITH ADMIN OPTION`` for each
    of `roles` that exists and that `owner` may not manage yet (PostgreSQL 16+ gives a
    CREATEROLE role only the roles it created). Returns the roles granted so."""
    granted = []
    with database.admin_connection(superuser) as connection:
        for role in roles:
            manageable = connection.execute(
                "SELECT pg_has_role(%s, oid, 'MEMBER WITH ADMIN OPTION') OR rolsuper "
                "FROM pg_roles WHERE rolname = %s",
                [owner, role],
            ).fetchone()
            if manageable is None or manageable[0] or not _admin_needed(connection):
                continue
            # What CREATE ROLE gives its creator: ADMIN, and neither INHERIT nor SET.
            connection.execute(
                sql.SQL("GRANT {} TO {} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE").format(
                    sql.Identifier(role), sql.Identifier(owner)
                )
            )
            granted.append(role)
    return granted


def _admin_needed(connection: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Before PostgreSQL 16, CREATEROLE manages every role but a superuser."""
    version = connection.execute("SHOW server_version_num").fetchone()
    return version is not None and int(str(version[0])) >= 160000


def drop_owner(superuser: URL, owner: NeonOwner) -> None:
    """Drop `owner` and its group, once every database it owned is gone. What it still
    holds in the databases of the server is left to their owners: only shared objects
    (memberships it was granted or granted) go with it."""
    with database.admin_connection(superuser) as connection:
        for name in (owner.name, owner.group):
            exists = connection.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
            if exists.fetchone() is None:
                continue
            # Memberships it granted (PostgreSQL 16+ records the grantor) go first.
            connection.execute(
                sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(sql.Identifier(name))
            )
            connection.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.neon_owner create|drop ADMIN_URL [--name NAME]``."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.neon_owner", description=__doc__)
    parser.add_argument("action", choices=["create", "drop"])
    parser.add_argument("admin_url", help="a superuser's URL of the server")
    parser.add_argument("--name", default="neondb_owner")
    parser.add_argument("--group", default="neon_superuser")
    parser.add_argument("--database", default="neondb", help="created owned by it")
    args = parser.parse_args(argv)
    try:
        superuser = database.parse_url(args.admin_url)
        if args.action == "create":
            owner = make_owner(superuser, args.name, args.group)
            with database.admin_connection(superuser) as connection:
                connection.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(args.database), sql.Identifier(owner.name)
                    )
                )
            url = owner.url(superuser, args.database).set(drivername="postgresql")
            print(url.render_as_string(hide_password=False))
        else:
            database.drop_database(superuser, args.database)
            drop_owner(superuser, NeonOwner(args.name, args.group, ""))
    except (database.DatabaseError, psycopg.Error) as exc:
        print(f"error: {database.first_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
