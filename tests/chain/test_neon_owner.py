"""The main job as Neon runs it: the chain and its roles, migrated by a fresh owner role
shaped like Neon's (``tests/support/neon_owner.py``), which is no superuser.

Every other test runs as the run's own such owner (``tests/conftest.py``); these make
one of their own, so that nothing the harness granted it helps: a new project's owner,
and a role made through Neon's console, which is Neon's superuser's and not the
owner's. They make them on a cluster of the module's own, as each Neon project has one,
whose superuser plays Neon's control plane: on the shared test server the run's other
tests keep login roles of the API in ``todo_app`` that a second owner may not manage,
and its migrations rightly refuse to go past a login member they cannot give its limits.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.util import CommandError
from psycopg import sql
from sqlalchemy.engine import URL, Engine

from models.security import APP_ROLE, BIND_SESSION, IDENTITY_ROLE, ROLES
from tests.conftest import HEAD, config_with_versions, make_alembic_config, new_engine, scalar
from tests.conftest import write_revision as write_test_revision
from tests.support import neon_owner
from tests.support.own_server import own_server
from todo_database.deploy import database
from todo_database.deploy import runner as deploy
from todo_database.operations.functions import acting_for_owner


@dataclass
class FreshOwner:
    """A new project's owner and its database, on the test server."""

    superuser: URL
    owner: neon_owner.NeonOwner
    url: URL
    version: int

    def engine(self) -> Engine:
        return new_engine(self.url)

    def memberships(self) -> set[tuple[str, bool, bool]]:
        """(role, inherits, may SET ROLE) for each role the owner is a member of; on
        PostgreSQL 15, which has no such options, both are true."""
        with database.admin_connection(self.superuser) as connection:
            columns = "m.inherit_option, m.set_option" if self.version >= 160000 else "true, true"
            rows = connection.execute(
                f"SELECT g.rolname, {columns} FROM pg_auth_members m "
                "JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = %s::regrole",
                [self.owner.name],
            ).fetchall()
        return {(str(name), bool(inherits), bool(sets)) for name, inherits, sets in rows}


@pytest.fixture(scope="module")
def project_cluster(admin_url: URL) -> Iterator[URL]:
    """The superuser's URL of a cluster of the module's own: of the test server's major
    version when that PostgreSQL's binaries are installed (Debian's layout), else of the
    embedded server's."""
    with database.admin_connection(admin_url) as connection:
        version = connection.execute("SHOW server_version_num").fetchone()
    major = int(str(version[0] if version else 0)) // 10000
    installed = Path(f"/usr/lib/postgresql/{major}/bin")
    with own_server(bin_dir=installed if (installed / "initdb").exists() else None) as server:
        yield server.url()


@pytest.fixture
def fresh(project_cluster: URL) -> Iterator[FreshOwner]:
    """A Neon-shaped owner of its own with a database it owns; the declared roles, when
    they exist already, are the owner's to manage, as if its migrations had made them."""
    run = uuid.uuid4().hex[:8]
    owner = neon_owner.make_owner(
        project_cluster, f"todo_test_owner_{run}", f"todo_test_neon_{run}"
    )
    name = f"todo_test_{run}"
    try:
        neon_owner.let_manage(project_cluster, owner.name, ROLES)
        with database.admin_connection(project_cluster) as connection:
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(owner.name)
                )
            )
            version = int(str(connection.execute("SHOW server_version_num").fetchone()[0]))  # type: ignore[index]
        yield FreshOwner(project_cluster, owner, owner.url(project_cluster, name), version)
    finally:
        database.drop_database(project_cluster, name)
        neon_owner.drop_owner(project_cluster, owner)


@pytest.fixture
def console_role(fresh: FreshOwner) -> Iterator[str]:
    """A role made as Neon's console makes one: by the superuser, not the owner."""
    raw = f"todo_test_console_{uuid.uuid4().hex[:8]}"
    name = sql.Identifier(raw)
    with database.admin_connection(fresh.superuser) as connection:
        connection.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(name))
    try:
        yield raw
    finally:
        # What it came to own (PostgreSQL 15 lets the owner give it a function) goes first.
        with database.admin_connection(fresh.superuser.set(database=fresh.url.database)) as db:
            if db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [raw]).fetchone():
                db.execute(sql.SQL("REASSIGN OWNED BY {} TO CURRENT_USER").format(name))
                db.execute(sql.SQL("DROP OWNED BY {}").format(name))
        with database.admin_connection(fresh.superuser) as connection:
            connection.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(name))


def usable(memberships: set[tuple[str, bool, bool]]) -> set[str]:
    """The roles of `memberships` whose privileges the member inherits or may SET ROLE to."""
    return {role for role, inherits, sets in memberships if inherits or sets}


def upgrade(fresh: FreshOwner, directory: Path, revision: str = "heads") -> None:
    engine = fresh.engine()
    try:
        command.upgrade(config_with_versions(engine, directory), revision)
    finally:
        engine.dispose()


def downgrade(fresh: FreshOwner, directory: Path, revision: str) -> None:
    engine = fresh.engine()
    try:
        command.downgrade(config_with_versions(engine, directory), revision)
    finally:
        engine.dispose()


def test_the_chain_runs_as_a_new_projects_owner_and_leaves_it_nothing(
    fresh: FreshOwner, tmp_path: Path
) -> None:
    """Up, check, one down and up again, as the owner of a new project: the identity's
    functions end up owned by todo_identity, and the owner is left no membership in it
    it may use (it keeps the ADMIN-only membership PostgreSQL 16+ records in a role it
    creates, by which it manages it) and todo_identity no CREATE on public, which it held
    only while they changed hands."""
    before = fresh.memberships()
    upgrade(fresh, tmp_path)
    engine = fresh.engine()
    try:
        command.check(make_alembic_config(engine))
        command.downgrade(make_alembic_config(engine), "-1")
        command.upgrade(make_alembic_config(engine), "head")
        command.check(make_alembic_config(engine))
        assert scalar(engine, "SELECT version_num FROM alembic_version") == HEAD
        owners = scalar(
            engine,
            "SELECT array_agg(DISTINCT pg_get_userbyid(proowner)) FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace",
        )
        assert owners == [IDENTITY_ROLE]
        assert (
            scalar(engine, f"SELECT has_schema_privilege('{IDENTITY_ROLE}', 'public', 'CREATE')")
            is False
        )
        assert (
            scalar(
                engine,
                "SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'",
            )
            == "pg_database_owner"
        )
    finally:
        engine.dispose()
    assert usable(fresh.memberships()) == usable(before)


def test_a_role_made_in_the_console_is_refused_in_one_line(
    fresh: FreshOwner, console_role: str, tmp_path: Path
) -> None:
    """PostgreSQL 16+ lets a CREATEROLE role manage only the roles it made (or holds
    WITH ADMIN OPTION): a declared role that exists, made by someone else, is refused
    before anything uses it, saying what to do. PostgreSQL 15's CREATEROLE manages any
    role but a superuser, so there the role is simply taken as declared."""
    upgrade(fresh, tmp_path)
    write_test_revision(tmp_path, f'op.ensure_role("{console_role}")', downgrade="pass")
    if fresh.version < 160000:
        upgrade(fresh, tmp_path)
        return
    with pytest.raises(CommandError) as refused:
        upgrade(fresh, tmp_path)
    said = str(refused.value)
    assert f"role {console_role} exists, but {fresh.owner.name} may not manage it" in said
    assert f"drop {console_role} so that the migration creates it" in said
    assert f"GRANT {console_role} TO {fresh.owner.name} WITH ADMIN OPTION" in said
    assert "the database is still at" in said
    assert "\n" not in said


def test_a_function_cannot_be_given_to_a_console_role_and_says_why(
    fresh: FreshOwner, console_role: str, tmp_path: Path
) -> None:
    """Giving a function to a role the owner may not act as fails in one line naming
    both and what to do, and leaves the function as it was."""
    upgrade(fresh, tmp_path)
    write_test_revision(
        tmp_path,
        f'op.alter_function_owner("public.verified_user_id()", "{console_role}")',
        downgrade="pass",
    )
    if fresh.version < 160000:
        upgrade(fresh, tmp_path)
        return
    with pytest.raises(CommandError) as refused:
        upgrade(fresh, tmp_path)
    said = str(refused.value)
    assert f"{fresh.owner.name} may not act as role {console_role}" in said
    assert f"GRANT {console_role} TO {fresh.owner.name} WITH ADMIN OPTION" in said
    engine = fresh.engine()
    try:
        owner = scalar(
            engine,
            "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'verified_user_id'",
        )
    finally:
        engine.dispose()
    assert owner == IDENTITY_ROLE


def test_a_new_role_is_made_granted_and_dropped_by_the_owner(
    fresh: FreshOwner, tmp_path: Path
) -> None:
    """A role the chain declares, a member of todo_app: the owner makes it, grants it its
    membership (PostgreSQL 16+: as the ADMIN of both it holds), and its downgrade drops
    it again."""
    upgrade(fresh, tmp_path)
    role = f"todo_test_new_{uuid.uuid4().hex[:8]}"
    revision = write_test_revision(
        tmp_path,
        f'op.ensure_role("{role}", member_of=["{APP_ROLE}"])',
        downgrade=f'op.drop_role_if_unused("{role}")',
    )
    upgrade(fresh, tmp_path)
    engine = fresh.engine()
    try:
        assert scalar(engine, f"SELECT pg_has_role('{role}', '{APP_ROLE}', 'MEMBER')") is True
        downgrade(fresh, tmp_path, HEAD)
        assert scalar(engine, f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'") == 0
    finally:
        engine.dispose()
    assert revision


def test_a_downgrade_keeps_a_role_the_owner_may_not_drop(
    fresh: FreshOwner, console_role: str, tmp_path: Path
) -> None:
    """``drop_role_if_unused`` drops only what the owner may: a console's role stays."""
    upgrade(fresh, tmp_path)
    write_test_revision(tmp_path, "pass", downgrade=f'op.drop_role_if_unused("{console_role}")')
    upgrade(fresh, tmp_path)
    downgrade(fresh, tmp_path, HEAD)
    engine = fresh.engine()
    try:
        kept = scalar(engine, "SELECT count(*) FROM pg_roles WHERE rolname = :r", r=console_role)
    finally:
        engine.dispose()
    assert kept == (1 if fresh.version >= 160000 else 0)


def test_the_suite_runs_as_a_neon_shaped_owner(empty_url: URL) -> None:
    """What every other test connects as: no superuser, CREATEROLE CREATEDB BYPASSRLS,
    a member of a group like neon_superuser; and the owner of the databases it makes,
    so of their public schema, through pg_database_owner."""
    engine = new_engine(empty_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                sa.text(
                    "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin "
                    "FROM pg_roles WHERE rolname = current_user"
                )
            ).one()
            groups = connection.execute(
                sa.text(
                    "SELECT g.rolcreaterole AND g.rolcreatedb AND g.rolbypassrls "
                    "AND NOT g.rolcanlogin FROM pg_auth_members m "
                    "JOIN pg_roles g ON g.oid = m.roleid "
                    "WHERE m.member = current_user::regrole"
                )
            ).scalars()
            owns = connection.execute(
                sa.text(
                    "SELECT pg_get_userbyid(d.datdba) = current_user "
                    "AND pg_has_role('pg_database_owner', 'USAGE') "
                    "AND pg_get_userbyid(n.nspowner) = 'pg_database_owner' "
                    "FROM pg_database d, pg_namespace n "
                    "WHERE d.datname = current_database() AND n.nspname = 'public'"
                )
            ).scalar()
    finally:
        engine.dispose()
    assert tuple(row) == (False, True, True, True, True)
    assert any(groups)
    assert owns is True


@pytest.mark.superuser("a database migrated as a superuser, as self-hosted ones may have been")
def test_a_database_a_superuser_migrated_stays_correct(superuser_url: URL, empty_url: URL) -> None:
    """A superuser skips every check the owner's path goes through: its database at
    head matches the models, with the same function owners and grants."""
    engine = new_engine(superuser_url.set(database=empty_url.database))
    try:
        command.upgrade(make_alembic_config(engine), "head")
        command.check(make_alembic_config(engine))
        grants = scalar(
            engine,
            "SELECT array_agg(DISTINCT pg_get_userbyid(proowner) || ' ' || proacl::text) "
            "FROM pg_proc WHERE pronamespace = 'public'::regnamespace",
        )
    finally:
        engine.dispose()
    assert grants == [
        f"{IDENTITY_ROLE} {{{IDENTITY_ROLE}=X/{IDENTITY_ROLE},{APP_ROLE}=X/{IDENTITY_ROLE}}}"
    ]


def test_a_role_that_does_not_own_the_database_is_told_to_migrate_as_its_owner(
    fresh: FreshOwner,
) -> None:
    """A deployer that may create tables in public, and manages the declared roles, but
    does not own the database: it cannot let todo_identity CREATE in public, so it may
    not hand it the identity's functions, and says to migrate as the owner."""
    deployer = f"todo_test_deployer_{uuid.uuid4().hex[:8]}"
    with database.admin_connection(fresh.superuser) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE BYPASSRLS PASSWORD {}").format(
                sql.Identifier(deployer), sql.Literal(fresh.owner.password)
            )
        )
    try:
        neon_owner.let_manage(fresh.superuser, deployer, ROLES)
        engine = new_engine(fresh.url.set(username=deployer))
        try:
            # The deploy lock is the first thing it may not make.
            with pytest.raises(CommandError) as refused:
                command.upgrade(make_alembic_config(engine), "head")
            assert "run the migrations as the database's owner" in str(refused.value)
            assert "nothing was changed" in str(refused.value)
            # The owner lends it the lock and public, as the lines say it may: the identity's
            # functions are the next thing it may not do, and it is told so.
            with database.admin_connection(fresh.url) as connection:
                for statement in (
                    "GRANT CREATE ON SCHEMA public TO {deployer}",
                    f"CREATE SCHEMA {deploy.LOCK_SCHEMA}",
                    f"CREATE TABLE {deploy.LOCK_TABLE} ()",
                    f"GRANT USAGE ON SCHEMA {deploy.LOCK_SCHEMA} TO {{deployer}}",
                    f"GRANT UPDATE ON {deploy.LOCK_TABLE} TO {{deployer}}",
                ):
                    connection.execute(sql.SQL(statement).format(deployer=sql.Identifier(deployer)))
            with pytest.raises(CommandError) as refused:
                command.upgrade(make_alembic_config(engine), "head")
        finally:
            engine.dispose()
        said = str(refused.value)
        assert f"{deployer} may not make {IDENTITY_ROLE} the owner of public.bind_session" in said
        assert "run the migrations as the database's owner" in said
    finally:
        database.drop_database(fresh.superuser, str(fresh.url.database))
        with database.admin_connection(fresh.superuser) as connection:
            connection.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(deployer)))
            connection.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(deployer)))


def test_acting_for_a_functions_owner_meets_a_membership_granted_at_that_moment(
    fresh: FreshOwner, tmp_path: Path
) -> None:
    """Memberships are the cluster's: while a migration makes itself a member of a
    function's owner for a moment, another session (here the superuser, as the test
    harness grants the declared roles to its owner) may grant the owner role that same
    membership. The block goes on with it (on PostgreSQL 15 it waits for it: one row per
    role and member) and leaves it to whoever granted it."""
    upgrade(fresh, tmp_path)
    assert not usable(fresh.memberships()) & {IDENTITY_ROLE}
    granting = psycopg.connect(
        fresh.superuser.set(drivername="postgresql", database=fresh.url.database).render_as_string(
            False
        )
    )
    # On 16+ the owner already holds an ADMIN-only membership in the role it created.
    inherits = " WITH INHERIT TRUE" if fresh.version >= 160000 else ""
    grant = sql.SQL("GRANT {} TO {}" + inherits).format(
        sql.Identifier(IDENTITY_ROLE), sql.Identifier(fresh.owner.name)
    )
    try:
        granting.execute(grant)  # its transaction stays open: the membership is pending
        with ThreadPoolExecutor(1) as pool:
            granted_again = f"GRANT EXECUTE ON FUNCTION {BIND_SESSION.signature} TO {APP_ROLE}"
            block = acting_for_owner(BIND_SESSION.signature, [granted_again])
            acted = pool.submit(execute_in_transaction, fresh.url, block)
            time.sleep(0.5)
            if acted.done():
                acted.result()
            granting.commit()
            acted.result(timeout=30)
    finally:
        granting.close()
    assert IDENTITY_ROLE in usable(fresh.memberships()), "the other session's grant was taken"


def execute_in_transaction(url: URL, statement: str) -> None:
    """`statement` in a transaction of its own, as a revision runs it."""
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(False)) as connection:
        connection.execute(statement)
