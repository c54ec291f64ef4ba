"""The managed roles are managed whole: their attributes and their memberships among
managed roles are declared (``models.security.ROLES``), and a role that differs is
reported by ``alembic check``, repaired by the revision autogenerate writes, and
refused, in one line, by a migration that would build on it.

Roles are cluster-wide, so these tests change them on a cluster of their own
(:mod:`tests.support.own_server`), never on the shared test server, where a
``todo_app`` made BYPASSRLS would switch isolation off for every test beside it. They
act on the declared roles the chain creates, by name: the point is what happens to
*those* roles when someone changes them by hand.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from models.security import APP_ROLE, AUTH_ROLE, IDENTITY_ROLE
from tests.support.evolution import Project
from tests.support.own_server import own_server
from todo_database.deploy import database

#: (what someone does to a managed role, what ``alembic check`` then reports, the SQL
#: that undoes it).
DRIFTS = [
    pytest.param(
        f"ALTER ROLE {APP_ROLE} BYPASSRLS",
        "alter_role",
        f"ALTER ROLE {APP_ROLE} NOBYPASSRLS",
        id="bypassrls",
    ),
    pytest.param(
        f"ALTER ROLE {APP_ROLE} LOGIN", "alter_role", f"ALTER ROLE {APP_ROLE} NOLOGIN", id="login"
    ),
    pytest.param(
        f"ALTER ROLE {IDENTITY_ROLE} CREATEROLE",
        "alter_role",
        f"ALTER ROLE {IDENTITY_ROLE} NOCREATEROLE",
        id="createrole",
    ),
    pytest.param(
        f"ALTER ROLE {APP_ROLE} NOINHERIT",
        "alter_role",
        f"ALTER ROLE {APP_ROLE} INHERIT",
        id="noinherit",
    ),
    pytest.param(
        f"GRANT {AUTH_ROLE} TO {APP_ROLE}",
        "revoke_role",
        f"REVOKE {AUTH_ROLE} FROM {APP_ROLE}",
        id="member-of-auth",
    ),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[URL]:
    with own_server() as server:
        yield server.url()


def execute(admin: URL, database_name: str, statement: str) -> None:
    url = admin.set(database=database_name, drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as c:
        c.execute(statement.encode())


@pytest.fixture(scope="module")
def project(cluster: URL, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A copy of the repository whose database, on the private cluster, is at head."""
    url = database.create_database(cluster, "roles_at_head")
    project = Project.copy(
        Path(tmp_path_factory.mktemp("roles")) / "project", url.render_as_string(False)
    )
    project.succeed(["upgrade", "head"])
    return project


def failed_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("FAILED:")]
    assert "Traceback" not in output, output
    return line


def test_role_drift_is_reported_and_repaired(cluster: URL, project: Project) -> None:
    """Changed by hand, every way at once, the roles are reported by ``alembic check``;
    the revision autogenerate writes puts each back, and its downgrade restores the
    drift."""
    drifts = [
        (str(drift), str(repair), str(undo)) for drift, repair, undo in (p.values for p in DRIFTS)
    ]
    before = project.revision_files()
    (head,) = project.succeed(["heads"])
    for drift, _, _ in drifts:
        execute(cluster, "roles_at_head", drift)
    try:
        (checked,) = project.alembic(["check"])
        assert checked.code != 0, checked
        line = failed_line(checked.output)
        for drift, repair, _ in drifts:
            assert repair in line, (drift, line)
        assert line.count("alter_role") == 2, "one per role, its attributes together"

        project.succeed(["revision", "--autogenerate", "-m", "put the roles back"])
        (written,) = project.revision_files() - before
        text = written.read_text()
        for drift, repair, _ in drifts:
            assert f"op.{repair}(" in text, drift
        project.succeed(["upgrade", "head"], ["check"])
        project.succeed(["downgrade", "-1"])
        written.unlink()  # the models are unchanged: at the revision before, it drifts again
        (after_downgrade,) = project.alembic(["check"])
        assert failed_line(after_downgrade.output) == line
    finally:
        for _, _, undo in drifts:
            execute(cluster, "roles_at_head", undo)
        project.succeed(["stamp", "--purge", head.stdout.split()[0]])
        for path in project.revision_files() - before:
            path.unlink()
    project.succeed(["check"])


def test_a_fresh_database_refuses_a_role_that_differs(cluster: URL, project: Project) -> None:
    """A new database on a cluster where someone made the API's role BYPASSRLS: the
    revision that would grant to it fails in one line naming the difference, the
    database stays at the revision before it, and once the role is put back a rerun
    continues."""
    fresh = database.create_database(cluster, "roles_fresh").render_as_string(False)
    execute(cluster, "postgres", f"ALTER ROLE {APP_ROLE} BYPASSRLS")
    try:
        (upgrade,) = project.alembic(["upgrade", "head"], database_url=fresh)
        assert upgrade.code != 0, upgrade
        line = failed_line(upgrade.output)
        assert f"role {APP_ROLE} exists, but is BYPASSRLS (declared NOBYPASSRLS)" in line
        (current,) = project.succeed(["current"], database_url=fresh)
        assert "(head)" not in current.output
    finally:
        execute(cluster, "postgres", f"ALTER ROLE {APP_ROLE} NOBYPASSRLS")
    project.succeed(["upgrade", "head"], ["check"], database_url=fresh)


def acl(admin: URL, database_name: str, table: str) -> list[str]:
    url = admin.set(database=database_name, drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False)) as connection:
        row = connection.execute(
            "SELECT coalesce(relacl::text[], '{}') FROM pg_class WHERE relname = %s", [table]
        ).fetchone()
    assert row is not None
    return list(row[0])


def test_a_role_taken_out_of_the_declarations_loses_its_grants(
    cluster: URL, project: Project
) -> None:
    """A role retired from ROLES (its grant removed with it) has its privileges revoked
    by the next revision, like a grant made by hand to a role nobody declared; the
    downgrade gives them back."""
    retired = "todo_retired_reader"
    models = project.models()
    before = project.revision_files()
    (head,) = project.succeed(["heads"])
    # Declared the way a user adds a role, whatever ROLES holds today.
    project.append("models/security.py", f'\nROLES = (*ROLES, "{retired}")\n')
    project.replace(
        "models/todo.py",
        '{"info": {ROW_SECURITY: owned_by("user_id")}}',
        '{"info": {ROW_SECURITY: owned_by("user_id")'
        f' + RowSecurity(grants=(Grant("{retired}", READ_ONLY),))}}}}',
    )
    project.replace(
        "models/todo.py",
        "from models.security import ROW_SECURITY, owned_by",
        "from models.security import READ_ONLY, ROW_SECURITY, Grant, RowSecurity, owned_by",
    )
    try:
        project.succeed(["revision", "--autogenerate", "-m", "a reader"], ["upgrade", "head"])
        assert f"{retired}=r/" in " ".join(acl(cluster, "roles_at_head", "todo"))

        project.restore_models(models)
        project.succeed(["revision", "--autogenerate", "-m", "no reader"])
        (written,) = {p for p in project.revision_files() - before if "no_reader" in p.name}
        assert f'op.revoke_privileges("todo", "{retired}", ["SELECT"])' in written.read_text()
        project.succeed(["upgrade", "head"], ["check"])
        assert retired not in " ".join(acl(cluster, "roles_at_head", "todo"))
        project.succeed(["downgrade", "-1"])
        assert f"{retired}=r/" in " ".join(acl(cluster, "roles_at_head", "todo"))

        # The same for a grant made by hand to a role nobody declared.
        project.succeed(["upgrade", "head"])
        execute(cluster, "roles_at_head", f"GRANT SELECT ON todo TO {retired}")
        (checked,) = project.alembic(["check"])
        assert "revoke_privileges" in failed_line(checked.output), checked
    finally:
        project.restore_models(models)
        execute(cluster, "roles_at_head", f"REVOKE ALL ON todo FROM {retired}")
        project.succeed(["stamp", "--purge", head.stdout.split()[0]])
        for path in project.revision_files() - before:
            path.unlink()
