"""A lint over the catalog of a database at head: row-level security as PostgreSQL has
it, whatever the declarations say.

Every table in the schema has RLS enabled and forced and at least one policy; no
policy applies to PUBLIC; every policy that writes has a WITH CHECK; every column a
policy filters on leads an index; the application roles hold only row privileges
and nothing at all on ``alembic_version``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from models import metadata
from models.security import ROLES
from tests.conftest import database_copy, new_engine
from tests.rls_helpers import REFUSED, acting_as, read, row_security

ALEMBIC_VERSION = "alembic_version"
#: Row privileges; TRUNCATE in particular ignores row-level security altogether.
ROW_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE"}


@pytest.fixture(scope="module")
def engine(admin_url: URL, head_template: str) -> Iterator[Engine]:
    with database_copy(admin_url, head_template, "catalog") as url:
        engine = new_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture
def connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as connection:
        yield connection


def rows(connection: Connection, query: str, **params: object) -> list[tuple[object, ...]]:
    return [tuple(row) for row in connection.execute(sa.text(query), params)]


def test_every_table_has_row_security_enabled_forced_and_a_policy(
    connection: Connection,
) -> None:
    tables = rows(
        connection,
        """SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
                  (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
           FROM pg_class c
           WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
             AND c.relname <> :alembic_version
           ORDER BY 1""",
        alembic_version=ALEMBIC_VERSION,
    )
    assert {name for name, *_ in tables} >= set(metadata.tables), "the lint saw every table"
    lacking = [
        (name, {"enabled": enabled, "forced": forced, "policies": policies})
        for name, enabled, forced, policies in tables
        if not (enabled and forced and isinstance(policies, int) and policies > 0)
    ]
    assert lacking == []


def test_views_run_with_the_querying_users_rights(connection: Connection) -> None:
    """A view reads its tables as its owner (here a superuser, who bypasses RLS) unless
    it is ``security_invoker``; a materialized view has no row security at all."""
    leaking = rows(
        connection,
        """SELECT c.relname, c.relkind FROM pg_class c
           WHERE c.relnamespace = current_schema()::regnamespace
             AND (c.relkind = 'm' OR (c.relkind = 'v' AND NOT coalesce(
                    (SELECT option_value::boolean FROM pg_options_to_table(c.reloptions)
                     WHERE option_name = 'security_invoker'), false)))""",
    )
    assert leaking == []


def test_no_policy_applies_to_public(connection: Connection) -> None:
    public = rows(
        connection,
        """SELECT polrelid::regclass::text, polname FROM pg_policy
           WHERE 0 = ANY(polroles) ORDER BY 1, 2""",
    )
    assert public == []


def test_every_writing_policy_has_a_with_check(connection: Connection) -> None:
    """INSERT, UPDATE and ALL policies say explicitly which rows may be written."""
    unchecked = rows(
        connection,
        """SELECT tablename, policyname, cmd FROM pg_policies
           WHERE schemaname = current_schema() AND cmd IN ('INSERT', 'UPDATE', 'ALL')
             AND with_check IS NULL ORDER BY 1, 2""",
    )
    assert unchecked == []


def policy_columns(connection: Connection) -> dict[tuple[str, str], set[str]]:
    """The columns each policy's expressions reference, by (table, policy), as
    PostgreSQL recorded them in pg_depend when it created the policy."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for table, policy, column in rows(
        connection,
        """SELECT c.relname, p.polname, a.attname
           FROM pg_policy p
           JOIN pg_class c ON c.oid = p.polrelid
           JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
                           AND d.refclassid = 'pg_class'::regclass AND d.refobjid = p.polrelid
                           AND d.refobjsubid > 0
           JOIN pg_attribute a ON a.attrelid = p.polrelid AND a.attnum = d.refobjsubid
           WHERE c.relnamespace = current_schema()::regnamespace""",
    ):
        found[str(table), str(policy)].add(str(column))
    return found


def leading_columns(connection: Connection) -> dict[str, set[str]]:
    """Per table, the columns that lead a valid, non-partial index."""
    found: dict[str, set[str]] = defaultdict(set)
    for table, column in rows(
        connection,
        """SELECT c.relname, a.attname
           FROM pg_index i
           JOIN pg_class c ON c.oid = i.indrelid
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
           WHERE c.relnamespace = current_schema()::regnamespace
             AND i.indisvalid AND i.indpred IS NULL""",
    ):
        found[str(table)].add(str(column))
    return found


def test_every_column_a_policy_filters_on_leads_an_index(connection: Connection) -> None:
    indexed = leading_columns(connection)
    unindexed = sorted(
        (table, policy, column)
        for (table, policy), columns in policy_columns(connection).items()
        for column in columns
        if column not in indexed[table]
    )
    assert unindexed == []


def test_declared_owner_columns_are_what_the_policies_filter_on(connection: Connection) -> None:
    """The two sources agree: for each table declared owned, the columns its policies
    reference (pg_depend) are the declared owner column, and that column leads an index."""
    referenced = policy_columns(connection)
    indexed = leading_columns(connection)
    declared = {
        table.name: security.owner_column
        for table in metadata.sorted_tables
        if (security := row_security(table)) is not None and security.owner_column is not None
    }
    assert declared, "no table is declared owned: nothing to cross-check"
    for table, owner_column in declared.items():
        from_catalog = set().union(*(cols for (t, _), cols in referenced.items() if t == table))
        assert from_catalog == {owner_column}, table
        assert owner_column in indexed[table], table


def test_app_roles_hold_only_row_privileges(connection: Connection) -> None:
    """No application role, nor PUBLIC, holds a privilege beyond rows' on any table:
    TRUNCATE empties a table past every policy, TRIGGER and REFERENCES hand out hooks."""
    held = rows(
        connection,
        """SELECT c.relname, coalesce(r.rolname, 'PUBLIC'), a.privilege_type
           FROM pg_class c
           CROSS JOIN LATERAL aclexplode(c.relacl) a
           LEFT JOIN pg_roles r ON r.oid = a.grantee
           WHERE c.relnamespace = current_schema()::regnamespace
             AND (a.grantee = 0 OR r.rolname = ANY(:roles))
           ORDER BY 1, 2, 3""",
        roles=list(ROLES),
    )
    beyond = [(t, role, p) for t, role, p in held if role == "PUBLIC" or p not in ROW_PRIVILEGES]
    assert beyond == []


@pytest.mark.parametrize("role", ROLES)
def test_app_roles_cannot_create_in_the_schema(role: str, connection: Connection) -> None:
    """So neither can come to own a table (and switch its row security off)."""
    can_create = connection.execute(
        sa.text("SELECT has_schema_privilege(:role, current_schema(), 'CREATE')"), {"role": role}
    ).scalar()
    assert can_create is False


@pytest.mark.parametrize("role", ROLES)
def test_alembic_version_is_out_of_the_app_roles_reach(role: str, connection: Connection) -> None:
    """alembic_version has no row security (it is left out of the RLS rule above), so
    privileges alone guard it: no application role may hold any."""
    with connection.begin():
        held = [
            privilege
            for privilege in (*sorted(ROW_PRIVILEGES), "TRUNCATE", "REFERENCES", "TRIGGER")
            if connection.execute(
                sa.text("SELECT has_table_privilege(:role, :t ::regclass, :p)"),
                {"role": role, "t": ALEMBIC_VERSION, "p": privilege},
            ).scalar()
        ]
    assert held == []
    version = sa.table(ALEMBIC_VERSION, sa.column("version_num"))
    with acting_as(connection, "user-1", role=role):
        assert read(connection, sa.select(version.c.version_num)) == REFUSED
