"""Users are isolated from each other, as the row-security declarations say.

Every test is derived from the row-security declarations of the tables of
``models.metadata`` (resolved, so a table owned through a parent row has its derived
policies): each table owned for a role (by a column, or through a parent row) is
checked for every command, with three users acting as that role the way the API
does (one transaction, ``SET LOCAL ROLE``, ``set_config('app.user_id', <id>, true)``).
A newly declared owned table is covered here without a new test; one whose rows the
helpers cannot make fails loudly (see ``tests/rls_helpers.py``).

The database is one copy of head per module, seeded once as the superuser; every
test acts inside transactions that are rolled back, so the seeded rows never change.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from models import metadata
from models.security import APP_ROLE, AUTH_ROLE, ROLES
from tests.conftest import database_copy, new_engine
from tests.rls_helpers import (
    REFUSED,
    USER_TABLE,
    USERS,
    OwnedTable,
    Seeded,
    acting_as,
    attempt,
    insert,
    is_refused,
    new_row,
    owned_by_any_role,
    reachable_tables,
    read,
    seed,
    where_key,
)

#: (role, table) for every table owned for a role.
CASES = owned_by_any_role()
#: Ways of being nobody: the setting never defined in the session, set to '', and
#: left behind ('' again) by an earlier transaction of the same session that set it.
NOBODY = ("never set", "empty string", "left by a previous transaction")

# What the schema has today; the sets derived from the declarations must include it, so
# that an empty derivation cannot pass for coverage.
EXPECTED_OWNED = {(APP_ROLE, "todo"), (APP_ROLE, USER_TABLE)}
EXPECTED_UNREACHABLE = {(APP_ROLE, "session"), (APP_ROLE, "account"), (APP_ROLE, "verification")}
EXPECTED_UNREACHABLE |= {(AUTH_ROLE, "todo")}

ALL_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@dataclass(frozen=True)
class SeededDatabase:
    engine: Engine
    rows: Seeded


@pytest.fixture(scope="module")
def seeded(admin_url: URL, head_template: str) -> Iterator[SeededDatabase]:
    with database_copy(admin_url, head_template, "isolation") as url:
        engine = new_engine(url)
        try:
            with engine.begin() as connection:
                rows = seed(connection)
            yield SeededDatabase(engine, rows)
        finally:
            engine.dispose()


@pytest.fixture
def connection(seeded: SeededDatabase) -> Iterator[Connection]:
    with seeded.engine.connect() as connection:
        yield connection


def others(user: str) -> list[str]:
    return [other for other in USERS if other != user]


def expected_write(owned: OwnedTable, command: str, rows: int) -> int | str:
    """`rows` when the role has `command` on the table, else refused."""
    return rows if command in owned.commands else REFUSED


def expected_read(owned: OwnedTable, rows: list[Any]) -> list[Any] | str:
    """`rows` when the role may SELECT from the table, else refused."""
    return rows if "SELECT" in owned.commands else REFUSED


def update_in_place(owned: OwnedTable, where: sa.ColumnElement[bool]) -> sa.Update:
    """An UPDATE that touches the rows `where` picks and changes no value."""
    return sa.update(owned.table).where(where).values({owned.owner: owned.owner})


def move_to(
    owned: OwnedTable, where: sa.ColumnElement[bool], owner: str, seeded: Seeded
) -> sa.Update:
    """An UPDATE that hands the rows `where` picks over to `owner`."""
    return (
        sa.update(owned.table).where(where).values({owned.owner: seeded.owner_value(owned, owner)})
    )


def owners_seen(connection: Connection, owned: OwnedTable, seeded: Seeded) -> list[Any] | str:
    rows = read(connection, sa.select(owned.owner))
    return rows if rows == REFUSED else sorted(str(seeded.owner_of(owned, r[0])) for r in rows)


parametrize_cases = pytest.mark.parametrize(
    ("role", "owned"), CASES, ids=[f"{role}-{owned}" for role, owned in CASES]
)


def test_declarations_derive_the_expected_tables() -> None:
    """The derivation is not vacuous: it finds at least the tables the schema has today."""
    assert {(role, owned.name) for role, owned in CASES} >= EXPECTED_OWNED
    unreachable = {
        (role, table.name)
        for role in ROLES
        for table in metadata.sorted_tables
        if table.name not in reachable_tables(role)
    }
    assert unreachable >= EXPECTED_UNREACHABLE
    assert len(USERS) >= 2


@parametrize_cases
def test_every_owned_table_gets_rows(role: str, owned: OwnedTable, seeded: SeededDatabase) -> None:
    """Rows were made for every owned table and every user: none was skipped."""
    for user in USERS:
        assert seeded.rows.of(owned, user), f"no rows seeded for {user} in {owned.name}"
        row = new_row(owned, user, 99, seeded.rows)
        assert seeded.rows.owner_of(owned, row[owned.owner_column]) == user


@parametrize_cases
def test_user_reads_only_own_rows(
    role: str, owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    for user in USERS:
        with acting_as(connection, user, role=role):
            expected = [user] * len(seeded.rows.of(owned, user))
            assert owners_seen(connection, owned, seeded.rows) == expected_read(owned, expected)
            for other in others(user):
                for row in seeded.rows.of(owned, other):
                    picked = read(
                        connection, sa.select(owned.table).where(where_key(owned, row.key))
                    )
                    assert picked == expected_read(owned, []), (user, row)


@parametrize_cases
def test_user_cannot_update_or_delete_other_users_rows(
    role: str, owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    rows = seeded.rows
    for user in USERS:
        with acting_as(connection, user, role=role):
            for other in others(user):
                theirs = rows.belongs_to(owned, other)
                assert attempt(connection, update_in_place(owned, theirs)) == expected_write(
                    owned, "UPDATE", 0
                )
                assert attempt(connection, sa.delete(owned.table).where(theirs)) == (
                    expected_write(owned, "DELETE", 0)
                )
                for row in rows.of(owned, other):
                    by_key = where_key(owned, row.key)
                    assert attempt(connection, update_in_place(owned, by_key)) == expected_write(
                        owned, "UPDATE", 0
                    )
                    assert attempt(connection, move_to(owned, by_key, user, rows)) == (
                        expected_write(owned, "UPDATE", 0)
                    )
                    assert attempt(connection, sa.delete(owned.table).where(by_key)) == (
                        expected_write(owned, "DELETE", 0)
                    )


@parametrize_cases
def test_blind_writes_reach_only_own_rows(
    role: str, owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    """An UPDATE or DELETE that reads no column (no WHERE, literals only) needs no
    SELECT right, so the SELECT policy does not filter it: its own command's policy
    alone must keep it to the user's own rows."""
    rows = seeded.rows
    for user in USERS:
        mine = len(rows.of(owned, user))
        everything = owned.table.update().values({owned.owner: rows.owner_value(owned, user)})
        with acting_as(connection, user, role=role):
            # Claiming every row: only the user's own are touched (and stay theirs).
            assert attempt(connection, everything) == expected_write(owned, "UPDATE", mine)
        with acting_as(connection, user, role=role):
            for other in others(user):
                giving = owned.table.update().values({owned.owner: rows.owner_value(owned, other)})
                assert attempt(connection, giving) == REFUSED
        with acting_as(connection, user, role=role):
            assert attempt(connection, owned.table.delete()) == expected_write(
                owned, "DELETE", mine
            )


@parametrize_cases
def test_user_cannot_insert_a_row_for_another_user(
    role: str, owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    for n, (user, other) in enumerate(itertools.permutations(USERS, 2), start=100):
        with acting_as(connection, user, role=role):
            row = new_row(owned, other, n, seeded.rows)
            assert attempt(connection, insert(owned, row)) == REFUSED


@parametrize_cases
def test_user_cannot_move_own_row_to_another_user(
    role: str, owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    rows = seeded.rows
    for user in USERS:
        with acting_as(connection, user, role=role):
            for other in others(user):
                mine = rows.belongs_to(owned, user)
                assert attempt(connection, move_to(owned, mine, other, rows)) == REFUSED
                for row in rows.of(owned, user):
                    by_key = where_key(owned, row.key)
                    assert attempt(connection, move_to(owned, by_key, other, rows)) == REFUSED
            assert owners_seen(connection, owned, rows) == expected_read(
                owned, [user] * len(rows.of(owned, user))
            )


@parametrize_cases
def test_user_can_do_what_is_granted_on_own_rows(
    role: str, owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    """Each command the declarations give the role works on the user's own rows; each
    one they do not give is refused, even there."""
    rows = seeded.rows
    for user in USERS:
        mine = rows.of(owned, user)
        with acting_as(connection, user, role=role):
            for row in mine:
                by_key = where_key(owned, row.key)
                assert read(connection, sa.select(owned.owner).where(by_key)) == expected_read(
                    owned, [(row.values[owned.owner_column],)]
                )
                assert attempt(connection, update_in_place(owned, by_key)) == expected_write(
                    owned, "UPDATE", 1
                )
                # Moving a row to its own owner is no move: allowed where UPDATE is.
                assert attempt(connection, move_to(owned, by_key, user, rows)) == expected_write(
                    owned, "UPDATE", 1
                )
        with acting_as(connection, user, role=role):
            assert attempt(
                connection, sa.delete(owned.table).where(rows.belongs_to(owned, user))
            ) == expected_write(owned, "DELETE", len(mine))
            if "DELETE" in owned.commands:
                assert owners_seen(connection, owned, rows) == expected_read(owned, [])
        if owned.one_row_per_owner and "INSERT" in owned.commands:
            pytest.fail(f"{owned.name}: a second own row cannot exist; test its INSERT apart")
        with acting_as(connection, user, role=role):
            values = new_row(owned, user, 200, rows)
            assert attempt(connection, insert(owned, values)) == expected_write(owned, "INSERT", 1)
            if "INSERT" in owned.commands:
                assert owners_seen(connection, owned, rows) == expected_read(
                    owned, [user] * (len(mine) + 1)
                )


def current_setting(connection: Connection) -> object:
    return connection.execute(sa.text("SELECT current_setting('app.user_id', true)")).scalar()


@contextmanager
def acting_as_nobody(connection: Connection, nobody: str, role: str) -> Iterator[Connection]:
    """A transaction as `role` with no current user, in one of the :data:`NOBODY` ways."""
    if nobody == "never set":  # the connection is the test's own: nothing set it yet
        with acting_as(connection, None, role=role):
            assert current_setting(connection) is None
            yield connection
    elif nobody == "empty string":
        with acting_as(connection, "", role=role):
            assert current_setting(connection) == ""
            yield connection
    else:
        with acting_as(connection, USERS[0], role=role, commit=True):
            pass
        with acting_as(connection, None, role=role):
            assert current_setting(connection) == ""
            yield connection


@parametrize_cases
@pytest.mark.parametrize("nobody", NOBODY)
def test_nobody_sees_nothing_and_changes_nothing(
    role: str, owned: OwnedTable, nobody: str, seeded: SeededDatabase, connection: Connection
) -> None:
    rows = seeded.rows
    with acting_as_nobody(connection, nobody, role):
        assert owners_seen(connection, owned, rows) == expected_read(owned, [])
        everything = sa.true()
        assert attempt(connection, update_in_place(owned, everything)) == expected_write(
            owned, "UPDATE", 0
        )
        assert attempt(connection, move_to(owned, everything, USERS[0], rows)) == (
            expected_write(owned, "UPDATE", 0)
        )
        assert attempt(connection, sa.delete(owned.table).where(everything)) == expected_write(
            owned, "DELETE", 0
        )
        # Nobody may insert a row for anybody, nor for the empty id the setting holds
        # (when a row can belong to it: no parent row does).
        nobodies = [""] if rows.owner_value(owned, "") is not None else []
        for n, user in enumerate([*USERS, *nobodies], start=300):
            assert attempt(connection, insert(owned, new_row(owned, user, n, rows))) == REFUSED


#: Roles `:role` is a member of (itself included) that are superuser or bypass RLS.
PRIVILEGED_ROLES = """
    SELECT rolname FROM pg_roles
    WHERE pg_has_role(:role, oid, 'MEMBER') AND (rolsuper OR rolbypassrls)"""
#: Relations and schemas of this database owned by `:role` or a role it is a member of.
OWNED_RELATIONS = """
    SELECT c.oid::regclass::text FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
      AND pg_has_role(:role, c.relowner, 'MEMBER')"""
OWNED_SCHEMAS = "SELECT nspname FROM pg_namespace WHERE pg_has_role(:role, nspowner, 'MEMBER')"


@pytest.mark.parametrize("role", ROLES)
def test_role_owns_nothing_and_cannot_bypass_row_security(
    role: str, connection: Connection
) -> None:
    def names(query: str) -> list[str]:
        return sorted(connection.execute(sa.text(query), {"role": role}).scalars())

    with connection.begin():
        attributes = connection.execute(
            sa.text("SELECT rolsuper, rolbypassrls, rolcanlogin FROM pg_roles WHERE rolname = :r"),
            {"r": role},
        ).one()
        assert attributes._asdict() == {
            "rolsuper": False,
            "rolbypassrls": False,
            "rolcanlogin": False,
        }
        # Nor through membership of another role.
        assert names(PRIVILEGED_ROLES) == []
        # An owner could switch row security off: FORCE binds it, ALTER TABLE does not.
        assert names(OWNED_RELATIONS) == []
        assert names(OWNED_SCHEMAS) == []


UNREACHABLE = sorted(
    (role, table.name)
    for role in ROLES
    for table in metadata.sorted_tables
    if table.name not in reachable_tables(role)
)


@pytest.mark.parametrize(("role", "table"), UNREACHABLE, ids=[f"{r}-{t}" for r, t in UNREACHABLE])
def test_role_has_no_privilege_on_tables_not_declared_for_it(
    role: str, table: str, connection: Connection
) -> None:
    with connection.begin():
        held = [
            privilege
            for privilege in ALL_PRIVILEGES
            if connection.execute(
                sa.text("SELECT has_table_privilege(:role, quote_ident(:table)::regclass, :p)"),
                {"role": role, "table": table, "p": privilege},
            ).scalar()
        ]
        assert held == []
        any_column = connection.execute(
            sa.text(
                """SELECT has_any_column_privilege(:role, quote_ident(:table)::regclass,
                                                   'SELECT, INSERT, UPDATE, REFERENCES')"""
            ),
            {"role": role, "table": table},
        ).scalar()
        assert any_column is False
    with acting_as(connection, USERS[0], role=role):
        with pytest.raises(DBAPIError, match="permission denied") as caught:
            connection.execute(sa.select(metadata.tables[table]))
        assert is_refused(caught.value)


# --- the current user is looked up once per statement --------------------------------

#: Where a plan node evaluates an expression per row.
PER_ROW = ("Filter", "Index Cond", "Recheck Cond", "Join Filter", "Hash Cond", "TID Cond")


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explainable(owned: OwnedTable) -> dict[str, sa.ClauseElement]:
    statements: dict[str, sa.ClauseElement] = {
        "SELECT": sa.select(owned.table),
        "UPDATE": update_in_place(owned, sa.true()),
        "DELETE": sa.delete(owned.table),
    }
    return {command: s for command, s in statements.items() if command in owned.commands}


EXPLAINED = [(role, owned, command) for role, owned in CASES for command in explainable(owned)]


@pytest.mark.parametrize(
    ("role", "owned", "command"),
    EXPLAINED,
    ids=[f"{role}-{owned}-{command}" for role, owned, command in EXPLAINED],
)
def test_current_user_is_an_initplan_not_a_per_row_call(
    role: str, owned: OwnedTable, command: str, connection: Connection
) -> None:
    statement = explainable(owned)[command]
    sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
    with acting_as(connection, USERS[0], role=role):
        raw = connection.exec_driver_sql(f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}").scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    nodes = list(plan_nodes(document[0]["Plan"]))

    lookups = [
        node
        for node in nodes
        if node.get("Parent Relationship") == "InitPlan"
        and any("current_setting('app.user_id'" in output for output in node.get("Output", []))
    ]
    # One per policy expression in the statement (UPDATE has USING and WITH CHECK).
    assert lookups, f"expected an InitPlan looking up app.user_id: {nodes}"
    # A per-row subplan is only ever the WITH CHECK of a row owned through a parent
    # row: one probe of the parent by its key, never a scan.
    for subplan in (n for n in nodes if n.get("Parent Relationship") == "SubPlan"):
        scans = [n["Node Type"] for n in plan_nodes(subplan) if "Scan" in n["Node Type"]]
        assert scans, subplan
        assert all(scan.startswith("Index") for scan in scans), subplan
    per_row = [
        (node["Node Type"], key, node[key])
        for node in nodes
        if node.get("Parent Relationship") != "InitPlan"
        for key in PER_ROW
        if "current_setting" in str(node.get(key, ""))
    ]
    assert per_row == []
    # The scan compares the owner column with an InitPlan's result: $0 (or $1...) up
    # to PostgreSQL 17, (InitPlan 1).col1 from 18 on.
    conditions = [
        str(node[key])
        for node in nodes
        for key in PER_ROW
        if key in node and owned.owner_column in str(node[key])
    ]
    assert any(re.search(r"\$\d|\(InitPlan \d+\)", c) for c in conditions), conditions


READABLE = [(role, owned) for role, owned in CASES if "SELECT" in owned.commands]


@pytest.mark.parametrize(
    ("role", "owned"), READABLE, ids=[f"{role}-{owned}" for role, owned in READABLE]
)
def test_a_users_rows_are_found_through_an_index(
    role: str, owned: OwnedTable, connection: Connection
) -> None:
    """Listing a user's rows, the policy alone filtering, can be served by an index: with
    sequential scans made prohibitively expensive, the planner still finds another way
    (on these few rows it would rightly prefer a sequential scan otherwise). A table
    whose owner column no index leads would still be read whole, for every user."""
    with acting_as(connection, USERS[0], role=role):
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        sql = str(sa.select(owned.table).compile(connection))
        raw = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    scans = [
        node["Node Type"]
        for node in plan_nodes(document[0]["Plan"])
        if node.get("Relation Name") == owned.name
    ]
    assert scans, document
    assert "Seq Scan" not in scans, f"{owned.name} is read whole to find a user's rows: {scans}"
