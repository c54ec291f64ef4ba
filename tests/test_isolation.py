"""Users are isolated from each other, as the row-security declarations say.

Every test is derived from ``info[ROW_SECURITY]`` on the tables of ``models.metadata``:
each table declared with an owner column and a policy for todo_app is checked for
every command, with three users acting as todo_app the way the API does (one
transaction, ``SET LOCAL ROLE todo_app``, ``set_config('app.user_id', <id>, true)``).
A newly declared owner-scoped table is covered here without a new test; one whose
rows the helpers cannot make fails loudly (see ``tests/rls_helpers.py``).

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
    SeededRow,
    acting_as,
    attempt,
    insert,
    is_refused,
    new_row,
    owned_tables,
    reachable_tables,
    read,
    seed,
    where_key,
)

OWNED = owned_tables(APP_ROLE)
#: Ways of being nobody: the setting never defined in the session, set to '', and
#: left behind ('' again) by an earlier transaction of the same session that set it.
NOBODY = ("never set", "empty string", "left by a previous transaction")

# What the schema has today; the sets derived from the declarations must include it.
EXPECTED_OWNED = {"todo", USER_TABLE}
EXPECTED_UNREACHABLE = {(APP_ROLE, "session"), (APP_ROLE, "account"), (APP_ROLE, "verification")}
EXPECTED_UNREACHABLE |= {(AUTH_ROLE, "todo")}

ALL_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


@dataclass(frozen=True)
class SeededDatabase:
    engine: Engine
    rows: Seeded

    def of(self, owned: OwnedTable, owner: str) -> list[SeededRow]:
        return [row for row in self.rows[owned.name] if row.owner == owner]


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


def move_to(owned: OwnedTable, where: sa.ColumnElement[bool], owner: str) -> sa.Update:
    return sa.update(owned.table).where(where).values({owned.owner: owner})


def owners_seen(connection: Connection, owned: OwnedTable) -> list[str] | str:
    rows = read(connection, sa.select(owned.owner))
    return rows if rows == REFUSED else sorted(row[0] for row in rows)


parametrize_owned = pytest.mark.parametrize("owned", OWNED, ids=str)


def test_declarations_derive_the_expected_tables() -> None:
    """The derivation is not vacuous: it finds at least the tables the schema has today."""
    assert {owned.name for owned in OWNED} >= EXPECTED_OWNED
    unreachable = {
        (role, table.name)
        for role in ROLES
        for table in metadata.sorted_tables
        if table.name not in reachable_tables(role)
    }
    assert unreachable >= EXPECTED_UNREACHABLE
    assert len(USERS) >= 2


@parametrize_owned
def test_every_owned_table_gets_rows(owned: OwnedTable, seeded: SeededDatabase) -> None:
    """Rows were made for every owned table and every user: none was skipped."""
    for user in USERS:
        assert seeded.of(owned, user), f"no rows seeded for {user} in {owned.name}"
        row = new_row(owned, user, 99)
        assert row[owned.owner_column] == user


@parametrize_owned
def test_user_reads_only_own_rows(
    owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    for user in USERS:
        with acting_as(connection, user):
            expected = [user] * len(seeded.of(owned, user))
            assert owners_seen(connection, owned) == expected_read(owned, expected)
            for other in others(user):
                for row in seeded.of(owned, other):
                    picked = read(
                        connection, sa.select(owned.table).where(where_key(owned, row.key))
                    )
                    assert picked == expected_read(owned, []), (user, row)


@parametrize_owned
def test_user_cannot_update_or_delete_other_users_rows(
    owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    for user in USERS:
        with acting_as(connection, user):
            for other in others(user):
                theirs = owned.owner == other
                assert attempt(connection, update_in_place(owned, theirs)) == expected_write(
                    owned, "UPDATE", 0
                )
                assert attempt(connection, sa.delete(owned.table).where(theirs)) == (
                    expected_write(owned, "DELETE", 0)
                )
                for row in seeded.of(owned, other):
                    by_key = where_key(owned, row.key)
                    assert attempt(connection, update_in_place(owned, by_key)) == expected_write(
                        owned, "UPDATE", 0
                    )
                    assert attempt(connection, move_to(owned, by_key, user)) == expected_write(
                        owned, "UPDATE", 0
                    )
                    assert attempt(connection, sa.delete(owned.table).where(by_key)) == (
                        expected_write(owned, "DELETE", 0)
                    )


@parametrize_owned
def test_blind_writes_reach_only_own_rows(
    owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    """An UPDATE or DELETE that reads no column (no WHERE, literals only) needs no
    SELECT right, so the SELECT policy does not filter it: its own command's policy
    alone must keep it to the user's own rows."""
    for user in USERS:
        mine = len(seeded.of(owned, user))
        everything = owned.table.update().values({owned.owner: user})
        with acting_as(connection, user):
            # Claiming every row: only the user's own are touched (and stay theirs).
            assert attempt(connection, everything) == expected_write(owned, "UPDATE", mine)
        with acting_as(connection, user):
            for other in others(user):
                giving = owned.table.update().values({owned.owner: other})
                assert attempt(connection, giving) == REFUSED
        with acting_as(connection, user):
            assert attempt(connection, owned.table.delete()) == expected_write(
                owned, "DELETE", mine
            )


@parametrize_owned
def test_user_cannot_insert_a_row_for_another_user(
    owned: OwnedTable, connection: Connection
) -> None:
    for n, (user, other) in enumerate(itertools.permutations(USERS, 2), start=100):
        with acting_as(connection, user):
            assert attempt(connection, insert(owned, new_row(owned, other, n))) == REFUSED


@parametrize_owned
def test_user_cannot_move_own_row_to_another_user(
    owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    for user in USERS:
        with acting_as(connection, user):
            for other in others(user):
                mine = owned.owner == user
                assert attempt(connection, move_to(owned, mine, other)) == REFUSED
                for row in seeded.of(owned, user):
                    by_key = where_key(owned, row.key)
                    assert attempt(connection, move_to(owned, by_key, other)) == REFUSED
            assert owners_seen(connection, owned) == expected_read(
                owned, [user] * len(seeded.of(owned, user))
            )


@parametrize_owned
def test_user_can_do_what_is_granted_on_own_rows(
    owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    """Each command the declarations give todo_app works on the user's own rows; each
    one they do not give is refused, even there."""
    for user in USERS:
        mine = seeded.of(owned, user)
        with acting_as(connection, user):
            for row in mine:
                by_key = where_key(owned, row.key)
                assert read(connection, sa.select(owned.owner).where(by_key)) == expected_read(
                    owned, [(user,)]
                )
                assert attempt(connection, update_in_place(owned, by_key)) == expected_write(
                    owned, "UPDATE", 1
                )
                # Moving a row to its own owner is no move: allowed where UPDATE is.
                assert attempt(connection, move_to(owned, by_key, user)) == expected_write(
                    owned, "UPDATE", 1
                )
        with acting_as(connection, user):
            assert attempt(connection, sa.delete(owned.table).where(owned.owner == user)) == (
                expected_write(owned, "DELETE", len(mine))
            )
            if "DELETE" in owned.commands:
                assert owners_seen(connection, owned) == expected_read(owned, [])
        if owned.one_row_per_owner and "INSERT" in owned.commands:
            pytest.fail(f"{owned.name}: a second own row cannot exist; test its INSERT apart")
        with acting_as(connection, user):
            assert attempt(connection, insert(owned, new_row(owned, user, 200))) == (
                expected_write(owned, "INSERT", 1)
            )
            if "INSERT" in owned.commands:
                assert owners_seen(connection, owned) == expected_read(
                    owned, [user] * (len(mine) + 1)
                )


def current_setting(connection: Connection) -> object:
    return connection.execute(sa.text("SELECT current_setting('app.user_id', true)")).scalar()


@contextmanager
def acting_as_nobody(connection: Connection, nobody: str) -> Iterator[Connection]:
    """A todo_app transaction with no current user, in one of the :data:`NOBODY` ways."""
    if nobody == "never set":  # the connection is the test's own: nothing set it yet
        with acting_as(connection, None):
            assert current_setting(connection) is None
            yield connection
    elif nobody == "empty string":
        with acting_as(connection, ""):
            assert current_setting(connection) == ""
            yield connection
    else:
        with acting_as(connection, USERS[0], commit=True):
            pass
        with acting_as(connection, None):
            assert current_setting(connection) == ""
            yield connection


@parametrize_owned
@pytest.mark.parametrize("nobody", NOBODY)
def test_nobody_sees_nothing_and_changes_nothing(
    owned: OwnedTable, nobody: str, connection: Connection
) -> None:
    with acting_as_nobody(connection, nobody):
        assert owners_seen(connection, owned) == expected_read(owned, [])
        everything = sa.true()
        assert attempt(connection, update_in_place(owned, everything)) == expected_write(
            owned, "UPDATE", 0
        )
        assert attempt(connection, move_to(owned, everything, USERS[0])) == expected_write(
            owned, "UPDATE", 0
        )
        assert attempt(connection, sa.delete(owned.table).where(everything)) == expected_write(
            owned, "DELETE", 0
        )
        # Nobody may insert a row for anybody, nor for the empty id the setting holds.
        for n, user in enumerate([*USERS, ""], start=300):
            assert attempt(connection, insert(owned, new_row(owned, user, n))) == REFUSED


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


EXPLAINED = [(owned, command) for owned in OWNED for command in explainable(owned)]


@pytest.mark.parametrize(
    ("owned", "command"), EXPLAINED, ids=[f"{o.name}-{c}" for o, c in EXPLAINED]
)
def test_current_user_is_an_initplan_not_a_per_row_call(
    owned: OwnedTable, command: str, connection: Connection
) -> None:
    statement = explainable(owned)[command]
    sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
    with acting_as(connection, USERS[0]):
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
    assert [n for n in nodes if n.get("Parent Relationship") == "SubPlan"] == [], nodes
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
