"""A lint over the catalog of a database at head: row-level security as PostgreSQL has
it, whatever the declarations say.

The rules, by the name a table's declaration acknowledges them under
(``RowSecurity(lint_acknowledged={"rule": "reason"})``, or ``"rule:column"`` for one
column), each with a reason that a reviewer reads:

* ``row-security``: every table has RLS enabled and forced and at least one policy;
  a table declared ``without_row_security("why")`` has none of it instead;
* ``public-policy``: no policy applies to PUBLIC;
* ``writing-policy-check``: every policy that writes has a WITH CHECK;
* ``policy-column-index``: every column a policy filters on leads an index;
* ``owner-column``: every permissive policy of a table owned for a role filters on the
  owner column (or, owned through a parent row, the column that references it);
* ``row-privileges-only``: the application roles hold only row privileges;

and, with no exception: the application roles can create nothing in the schema and
hold nothing at all on ``alembic_version``; and no SECURITY DEFINER function could
resolve a name its caller made (``todo_database/declarations/definer_safety.py``: pinned
search path with ``pg_temp`` last, every relation and type outside ``pg_catalog`` named
with its schema), which ``make revision`` and ``make check`` refuse too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine

from models import metadata
from models.security import BIND_SESSION, FUNCTIONS, ROLES, VERIFIED_USER_ID
from tests.conftest import database_copy, new_engine
from tests.support.rls_helpers import REFUSED, acting_as, read
from todo_database.catalog.functions import read_definers, read_names
from todo_database.declarations import definer_safety
from todo_database.declarations.row_security import row_security
from todo_database.operations.functions import definition_sql

ALEMBIC_VERSION = "alembic_version"
#: Row privileges; TRUNCATE in particular ignores row-level security altogether.
ROW_PRIVILEGES = {"SELECT", "INSERT", "UPDATE", "DELETE"}
#: What inserting into a table with a serial key takes of its sequence.
SEQUENCE_PRIVILEGES = {"USAGE"}


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


def acknowledged(table: object, rule: str, subject: object = None) -> bool:
    """Whether `table`'s declaration gives a reason for breaking `rule` (for `subject`),
    or derives one: a membership table's level is vetted in the rows written (WITH
    CHECK), never searched for."""
    declared = metadata.tables.get(str(table))
    security = row_security(declared) if declared is not None else None
    if security is None:
        return False
    membership = security.membership
    if membership is not None and (rule, subject) == ("policy-column-index", membership.level):
        return True
    reasons = security.lint_acknowledged
    keys = [rule] if subject is None else [rule, f"{rule}:{subject}"]
    return any(str(reasons.get(key, "")).strip() for key in keys)


def exempt(table: object) -> bool:
    """Whether `table` is declared without row-level security, with a reason."""
    declared = metadata.tables.get(str(table))
    security = row_security(declared) if declared is not None else None
    return security is not None and bool((security.exemption or "").strip())


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
        and not exempt(name)
        and not acknowledged(name, "row-security")
    ]
    assert lacking == []
    # A table declared without row-level security has none of it, as declared.
    half_exempt = [
        (name, enabled, forced, policies)
        for name, enabled, forced, policies in tables
        if exempt(name) and (enabled or forced or policies)
    ]
    assert half_exempt == []


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
    assert [(t, p) for t, p in public if not acknowledged(t, "public-policy")] == []


def test_every_writing_policy_has_a_with_check(connection: Connection) -> None:
    """INSERT, UPDATE and ALL policies say explicitly which rows may be written."""
    unchecked = rows(
        connection,
        """SELECT tablename, policyname, cmd FROM pg_policies
           WHERE schemaname = current_schema() AND cmd IN ('INSERT', 'UPDATE', 'ALL')
             AND with_check IS NULL ORDER BY 1, 2""",
    )
    assert [u for u in unchecked if not acknowledged(u[0], "writing-policy-check")] == []


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
        if column not in indexed[table] and not acknowledged(table, "policy-column-index", column)
    )
    assert unindexed == [], (
        f"(table, policy, column): {unindexed}: a policy filters on a column no index leads, "
        "so every query of the table reads it whole; index it, or, where a policy only "
        "narrows rows an index already finds, say why: RowSecurity(lint_acknowledged="
        '{"policy-column-index:<column>": "why"})'
    )


def owner_scoped_policies() -> dict[tuple[str, str], tuple[str, ...]]:
    """(table, policy) -> the columns it must filter on one of: each permissive policy
    of a role a table is declared owned for, by its owner column or through its parent
    row; a shared table's by its owner or, shared with its members, its key."""
    found = {}
    for table in metadata.sorted_tables:
        security = row_security(table)
        if security is None:
            continue
        scoped: dict[str, tuple[str | None, ...]] = {
            role: (security.owner_column,) for role in security.owner_roles
        }
        if security.through is not None:
            scoped[security.through.role] = (security.through.column,)
        if security.sharing is not None:
            scoped[security.sharing.role] = (security.sharing.owner, security.sharing.key)
        for policy in security.policies:
            for role in policy.roles:
                if policy.permissive and any(scoped.get(role, ())):
                    found[(table.name, policy.name)] = tuple(str(c) for c in scoped[role])
    return found


def test_owned_tables_policies_filter_on_the_owner(connection: Connection) -> None:
    """The declarations and the catalog agree: each permissive policy of a role a table
    is declared owned for reads the owner column (pg_depend), and that column leads an
    index. Restrictive policies may narrow on anything else."""
    referenced = policy_columns(connection)
    indexed = leading_columns(connection)
    scoped = owner_scoped_policies()
    assert scoped, "no table is declared owned: nothing to cross-check"
    for (table, policy), columns in scoped.items():
        if acknowledged(table, "owner-column"):
            continue
        column = " or ".join(repr(c) for c in columns)
        assert set(columns) & referenced[(table, policy)], (
            f"policy {policy!r} of {table!r}, owned through {column}, does not filter on "
            "it: every row it admits is reachable beyond its owner; if that is meant (rows "
            "shared on purpose), say why: RowSecurity(lint_acknowledged="
            '{"owner-column": "why"})'
        )
        assert all(c in indexed[table] for c in columns), (
            f"{table!r}: no index leads with its owner {column}"
        )


def test_app_roles_hold_only_row_privileges(connection: Connection) -> None:
    """No application role, nor PUBLIC, holds a privilege beyond rows' on any table:
    TRUNCATE empties a table past every policy, TRIGGER and REFERENCES hand out hooks.
    On a sequence (behind a serial key) only USAGE, to insert rows."""
    held = rows(
        connection,
        """SELECT c.relname, c.relkind::text, coalesce(r.rolname, 'PUBLIC'), a.privilege_type
           FROM pg_class c
           CROSS JOIN LATERAL aclexplode(c.relacl) a
           LEFT JOIN pg_roles r ON r.oid = a.grantee
           WHERE c.relnamespace = current_schema()::regnamespace
             AND (a.grantee = 0 OR r.rolname = ANY(:roles))
           ORDER BY 1, 2, 3""",
        roles=list(ROLES),
    )
    beyond = [
        (t, role, p)
        for t, kind, role, p in held
        if (role == "PUBLIC" or p not in (SEQUENCE_PRIVILEGES if kind == "S" else ROW_PRIVILEGES))
        and not acknowledged(t, "row-privileges-only")
    ]
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
    with acting_as(connection, None, role=role):
        assert read(connection, sa.select(version.c.version_num)) == REFUSED


def test_no_security_definer_function_resolves_a_name_its_caller_made(
    connection: Connection,
) -> None:
    definers = read_definers(connection, "p.pronamespace = current_schema()::regnamespace")
    assert {d.signature for d in definers} >= {f.signature for f in FUNCTIONS}
    assert definer_safety.problems(definers, read_names(connection)) == []


#: Each hardening of the identity's functions undone by hand, and what the lint says.
UNDONE = [
    pytest.param(
        f"ALTER FUNCTION {VERIFIED_USER_ID.signature} SET search_path = ''",
        "searches pg_temp first",
        id="path-emptied",
    ),
    pytest.param(
        f"ALTER FUNCTION {VERIFIED_USER_ID.signature} RESET search_path",
        "has no pinned search_path",
        id="path-unpinned",
    ),
    pytest.param(
        f"GRANT CREATE ON SCHEMA public TO PUBLIC; ALTER FUNCTION {VERIFIED_USER_ID.signature} "
        "SET search_path = public, pg_temp",
        "has schema public in its search_path",
        id="open-schema-in-path",
    ),
    pytest.param(
        definition_sql(
            replace(
                VERIFIED_USER_ID, body=VERIFIED_USER_ID.body.replace("public.session", "session")
            ),
            or_replace=True,
        ),
        "names session without its schema",
        id="relation-unqualified",
    ),
    pytest.param(
        definition_sql(
            replace(
                BIND_SESSION,
                body=BIND_SESSION.body.replace(
                    "found pg_catalog.text;", "found pg_catalog.text; stolen session%ROWTYPE;"
                ).replace("FROM public.session s", "FROM session s"),
                search_path="pg_catalog, public, pg_temp",
            ),
            or_replace=True,
        ),
        "names session without its schema",
        id="relation-unqualified-in-bind",
    ),
]


@pytest.mark.parametrize(("statement", "said"), UNDONE)
def test_the_lint_catches_each_hardening_undone(
    connection: Connection, statement: str, said: str
) -> None:
    with connection.begin():
        connection.exec_driver_sql(statement.replace("%", "%%"))
        definers = read_definers(connection, "p.pronamespace = current_schema()::regnamespace")
        problems = definer_safety.problems(definers, read_names(connection))
        connection.rollback()
    assert any(said in problem for problem in problems), problems
