"""Users are isolated from each other, as the row-security declarations say.

Every test is derived from the row-security declarations of the tables of
``models.metadata`` (resolved, so a table owned through a parent row has its derived
policies): each table owned for a role (by a column, or through a parent row) is
checked for every command, with three users acting as that role the way the API
does (one transaction, ``SET LOCAL ROLE``, ``SELECT public.bind_session(<token>)``
with the user's live Better Auth session), and for nobody in every way an attacker
running SQL as the role without a live session of their own could try.
A newly declared owned table is covered here without a new test; one whose rows the
helpers cannot make fails loudly (see ``tests/rls_helpers.py``).

The database is one copy of head per module, seeded once as the superuser; every
test acts inside transactions that are rolled back, so the seeded rows never change.
"""

from __future__ import annotations

import itertools
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from migrations.rowsecurity.declarations import declared_functions, row_security
from models import metadata
from models.security import APP_ROLE, AUTH_ROLE, FUNCTIONS, PUBLIC, ROLES, Function
from tests.conftest import database_copy, new_engine
from tests.rls_helpers import (
    OUTSIDER,
    REFUSED,
    USER_TABLE,
    USERS,
    OwnedTable,
    Seeded,
    acting_as,
    attempt,
    bind,
    expired_token,
    insert,
    is_refused,
    live_token,
    new_row,
    owned_by_any_role,
    reachable_tables,
    read,
    seed,
    where_key,
)

#: (role, table) for every table owned for a role.
CASES = owned_by_any_role()
#: Ways of being nobody, each a way in for SQL run as the role without a live session
#: of its own (see :func:`acting_as_nobody`); each acts against the victim, USERS[0].
NOBODY = (
    "never bound",
    "empty token",
    "unknown token",
    "expired token",
    "claimed user id",
    "forged binding",
    "left by a previous transaction",
    "left at session level by an earlier transaction",
)
VICTIM = USERS[0]

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


@dataclass(frozen=True)
class UpTo:
    """What a command narrowed by a restrictive policy may do to `rows` of the user's
    own: any number of them up to all, or be refused; never more."""

    rows: int

    def __eq__(self, outcome: object) -> bool:
        return outcome == REFUSED or (isinstance(outcome, int) and 0 <= outcome <= self.rows)

    def __hash__(self) -> int:
        return hash(self.rows)


def expected_write(owned: OwnedTable, command: str, rows: int) -> int | str | UpTo:
    """`rows` when the role has `command` on the table (at most `rows` when a
    restrictive policy narrows it), else refused."""
    if command not in owned.commands:
        return REFUSED
    return UpTo(rows) if command in owned.narrowed and rows else rows


@dataclass(frozen=True)
class AmongThem:
    """What a read narrowed by a restrictive policy may see of `rows`: some of them."""

    rows: tuple[Any, ...]

    def __eq__(self, outcome: object) -> bool:
        if not isinstance(outcome, list):
            return False
        left = list(self.rows)
        for row in outcome:
            if row not in left:
                return False
            left.remove(row)
        return True

    def __hash__(self) -> int:
        return hash(self.rows)


def expected_read(owned: OwnedTable, rows: list[Any]) -> list[Any] | str | AmongThem:
    """`rows` when the role may SELECT from the table (some of them when a restrictive
    policy narrows it), else refused."""
    if "SELECT" not in owned.commands:
        return REFUSED
    return AmongThem(tuple(rows)) if "SELECT" in owned.narrowed else rows


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
                        connection,
                        sa.select(*owned.readable_columns(role)).where(where_key(owned, row.key)),
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
            if "DELETE" in owned.commands and "DELETE" not in owned.narrowed:
                assert owners_seen(connection, owned, rows) == expected_read(owned, [])
        with acting_as(connection, user, role=role):
            kept = len(mine)
            if owned.one_row_per_owner:
                # A second own row cannot exist: the user's one goes first, behind the
                # role's back (rolled back with the rest).
                with as_the_superuser(connection, role):
                    connection.execute(sa.delete(owned.table).where(rows.belongs_to(owned, user)))
                kept = 0
            values = new_row(owned, user, 200, rows)
            assert attempt(connection, insert(owned, values)) == expected_write(owned, "INSERT", 1)
            if "INSERT" in owned.commands and "INSERT" not in owned.narrowed:
                assert owners_seen(connection, owned, rows) == expected_read(
                    owned, [user] * (kept + 1)
                )


@contextmanager
def as_the_superuser(connection: Connection, role: str) -> Iterator[None]:
    """Inside :func:`acting_as`'s transaction, the test's own (superuser) role for a
    while, then `role` again; the binding, transaction-local, stays."""
    connection.exec_driver_sql("RESET ROLE")
    try:
        yield
    finally:
        quoted = connection.dialect.identifier_preparer.quote(role)
        connection.exec_driver_sql(f"SET LOCAL ROLE {quoted}")


def current_setting(connection: Connection) -> object:
    return connection.execute(sa.text("SELECT current_setting('app.user_id', true)")).scalar()


#: The settings a binding consists of, set as an attacker would set them by hand.
FORGE = """
    SELECT set_config('app.user_id', :user, :local),
           set_config('app.session_token', :token, :local),
           set_config('app.session_bound', extract(epoch FROM now())::text, :local)"""


@contextmanager
def acting_as_nobody(connection: Connection, nobody: str, role: str) -> Iterator[Connection]:
    """A transaction as `role` with no verified user, in one of the :data:`NOBODY` ways."""
    forge = {"user": VICTIM, "local": True}
    if nobody in ("never bound", "claimed user id", "forged binding"):
        with acting_as(connection, None, role=role):
            if nobody == "claimed user id":
                connection.execute(sa.text("SELECT set_config('app.user_id', :user, true)"), forge)
            elif nobody == "forged binding":
                connection.execute(sa.text(FORGE), {**forge, "token": "a token of my own"})
            yield connection
    elif nobody in ("empty token", "unknown token", "expired token"):
        token = {"empty token": "", "unknown token": "no such session"}.get(
            nobody, expired_token(VICTIM)
        )
        with acting_as(connection, None, role=role):
            assert bind(connection, token) is None
            yield connection
    elif nobody == "left by a previous transaction":
        with acting_as(connection, VICTIM, role=role, commit=True):
            pass
        with acting_as(connection, None, role=role):
            assert current_setting(connection) == ""
            yield connection
    else:
        # An injection in the victim's own request copies its binding to the session, so
        # that it outlives the transaction on a pooled connection.
        with acting_as(connection, VICTIM, role=role, commit=True):
            connection.execute(
                sa.text(FORGE), {**forge, "local": False, "token": live_token(VICTIM)}
            )
        try:
            with acting_as(connection, None, role=role):
                assert current_setting(connection) == VICTIM
                yield connection
        finally:
            with connection.begin():  # the pooled connection goes back clean
                connection.exec_driver_sql("RESET ALL")


@parametrize_cases
@pytest.mark.parametrize("nobody", NOBODY)
def test_nobody_sees_nothing_and_changes_nothing(
    role: str, owned: OwnedTable, nobody: str, seeded: SeededDatabase, connection: Connection
) -> None:
    rows = seeded.rows
    with acting_as_nobody(connection, nobody, role):
        assert owners_seen(connection, owned, rows) == expected_read(owned, [])
        readable = owned.readable_columns(role)
        if readable:
            assert read(connection, sa.select(*readable)) == []
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


def plan_nodes(plan: dict[str, Any], *, into_initplans: bool = True) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        if into_initplans or child.get("Parent Relationship") != "InitPlan":
            yield from plan_nodes(child, into_initplans=into_initplans)


def explainable(owned: OwnedTable, role: str) -> dict[str, sa.ClauseElement]:
    statements: dict[str, sa.ClauseElement] = {
        "SELECT": sa.select(*owned.readable_columns(role)),
        "UPDATE": update_in_place(owned, sa.true()),
        "DELETE": sa.delete(owned.table),
    }
    return {command: s for command, s in statements.items() if command in owned.commands}


EXPLAINED = [
    (role, owned, command) for role, owned in CASES for command in explainable(owned, role)
]
#: How a policy learns who the current user is: a setting, or a declared function.
IDENTITY_CALLS = ("current_setting(", *(f"{function.name}(" for function in FUNCTIONS))


@pytest.mark.parametrize(
    ("role", "owned", "command"),
    EXPLAINED,
    ids=[f"{role}-{owned}-{command}" for role, owned, command in EXPLAINED],
)
def test_current_user_is_an_initplan_not_a_per_row_call(
    role: str, owned: OwnedTable, command: str, connection: Connection
) -> None:
    statement = explainable(owned, role)[command]
    sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
    with acting_as(connection, USERS[0], role=role):
        raw = connection.exec_driver_sql(f"EXPLAIN (VERBOSE, FORMAT JSON) {sql}").scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    nodes = list(plan_nodes(document[0]["Plan"]))

    lookups = [
        node
        for node in nodes
        if node.get("Parent Relationship") == "InitPlan"
        and any(call in output for output in node.get("Output", []) for call in IDENTITY_CALLS)
    ]
    # One per identity expression in each policy of the statement (UPDATE has USING and
    # WITH CHECK).
    assert lookups, f"expected an InitPlan finding the current user: {nodes}"
    # A per-row subplan is only ever the WITH CHECK of a row owned through a parent
    # row: one probe of the parent by its key, never a scan.
    for subplan in (n for n in nodes if n.get("Parent Relationship") == "SubPlan"):
        # An InitPlan inside it (the parent's own policy, deeper down a chain of
        # parents) runs once per statement, not per row.
        scans = [
            n["Node Type"]
            for n in plan_nodes(subplan, into_initplans=False)
            if "Scan" in n["Node Type"]
        ]
        assert scans, subplan
        assert all(scan.startswith("Index") for scan in scans), subplan
    per_row = [
        (node["Node Type"], key, node[key])
        for node in nodes
        if node.get("Parent Relationship") != "InitPlan"
        for key in PER_ROW
        if any(call in str(node.get(key, "")) for call in IDENTITY_CALLS)
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
        sql = str(sa.select(*owned.readable_columns(role)).compile(connection))
        raw = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    scans = [
        node["Node Type"]
        for node in plan_nodes(document[0]["Plan"])
        if node.get("Relation Name") == owned.name
    ]
    assert scans, document
    assert "Seq Scan" not in scans, f"{owned.name} is read whole to find a user's rows: {scans}"


# --- EXPLAIN ANALYZE as a side channel ------------------------------------------------
#
# EXPLAIN ANALYZE reports, per plan node, how many rows it read and how many a filter
# removed, including rows the policies hide: with an index that serves the attacker's
# condition and a policy applied as a filter after it, the counts tell whether hidden
# rows hold a value (how an e-mail address was once recovered character by character).
# Every column a role may read is probed with another user's value, by equality and as
# a one-value range, letting the planner choose and with sequential scans forbidden.

#: What a plan node reports about the rows it read.
READ_COUNTERS = (
    "Actual Rows",
    "Rows Removed by Filter",
    "Rows Removed by Index Recheck",
    "Heap Fetches",
    "Exact Heap Blocks",
    "Lossy Heap Blocks",
)


def probes(owned: OwnedTable, role: str, seeded: Seeded) -> list[tuple[sa.Column[Any], object]]:
    """(column, a value of it in one of the victim's rows) for every column `role` may
    read, where the victim's rows hold a value there."""
    found = []
    for column in owned.readable_columns(role):
        values = [row.values[column.name] for row in seeded.of(owned, VICTIM)]
        value = next((v for v in values if v is not None), None)
        if value is not None:
            found.append((column, value))
    return found


def absent_like(value: object) -> object:
    """A value of `value`'s type that no seeded row holds."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, str):
        return f"{value} (nobody's)"
    if isinstance(value, int):
        return -value - 1_000
    if isinstance(value, uuid.UUID):
        return uuid.uuid4()
    if isinstance(value, datetime):
        return value + timedelta(days=36_500)
    pytest.fail(f"no absent value of type {type(value).__name__}: extend absent_like")


def read_counts(
    connection: Connection, owned: OwnedTable, role: str, condition: sa.ColumnElement[bool]
) -> list[tuple[str, tuple[int, ...]]]:
    """What EXPLAIN ANALYZE says each scan of the statement read, outside the InitPlans
    that find the current user (the same for every probe)."""
    statement = sa.select(*owned.readable_columns(role)[:1]).where(condition)
    sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
    raw = connection.exec_driver_sql(
        f"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF, FORMAT JSON) {sql}"
    ).scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)

    def scans(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if plan.get("Parent Relationship") == "InitPlan":
            return
        if "Scan" in plan["Node Type"]:
            yield plan
        for child in plan.get("Plans", []):
            yield from scans(child)

    return [
        (node["Node Type"], tuple(int(node.get(counter, 0)) for counter in READ_COUNTERS))
        for node in scans(document[0]["Plan"])
    ]


def total_read(
    connection: Connection, owned: OwnedTable, role: str, condition: sa.ColumnElement[bool]
) -> tuple[int, ...]:
    """Each counter of :func:`read_counts`, summed over the statement's scans."""
    counts = [c for _, c in read_counts(connection, owned, role, condition)]
    return tuple(sum(column) for column in zip(*counts, strict=True)) if counts else ()


def probe_conditions(column: sa.Column[Any], value: object) -> list[sa.ColumnElement[bool]]:
    return [column == value, column.between(value, value)]


#: Ways the planner may be steered: free, or with sequential scans made prohibitive.
PLANNER = ("free", "no sequential scans")


def steer(connection: Connection, planner: str) -> None:
    if planner == "no sequential scans":
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")


@parametrize_cases
@pytest.mark.parametrize("nobody", NOBODY)
def test_nobody_reads_no_row_even_for_explain_analyze(
    role: str, owned: OwnedTable, nobody: str, seeded: SeededDatabase, connection: Connection
) -> None:
    """Without a verified user, no scan of an owned table reads a single row, whatever
    the condition: there is nothing for EXPLAIN ANALYZE to count."""
    checked = probes(owned, role, seeded.rows)
    if "SELECT" in owned.commands:
        assert checked, f"{owned.name}: no column {role} may read holds a value to probe"
    for planner in PLANNER:
        with acting_as_nobody(connection, nobody, role):
            steer(connection, planner)
            for column, value in checked:
                for condition in probe_conditions(column, value):
                    counts = read_counts(connection, owned, role, condition)
                    read_anything = [(node, c) for node, c in counts if any(c)]
                    assert read_anything == [], (
                        f"a transaction without a verified user reads rows of {owned.name} "
                        f"({nobody}, {planner}: {condition})"
                    )


def unique_alone(owned: OwnedTable, column: sa.Column[Any]) -> bool:
    """Whether `column` alone is the primary key or unique."""
    keys = [list(owned.table.primary_key.columns)]
    keys += [list(index.columns) for index in owned.table.indexes if index.unique]
    keys += [
        list(constraint.columns)
        for constraint in owned.table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    return [column] in keys or bool(column.unique)


@parametrize_cases
def test_a_signed_in_user_learns_nothing_of_other_users_values(
    role: str, owned: OwnedTable, seeded: SeededDatabase, connection: Connection
) -> None:
    """Signed in, with no rows of their own, a user's EXPLAIN ANALYZE of a condition on
    another user's value reads exactly what it reads for a value nobody holds.

    Except for a column that alone is a key: whether a key value exists is visible
    anyway (an INSERT with it fails on the unique index), and todo ids are random."""
    for planner in PLANNER:
        with acting_as(connection, OUTSIDER, role=role):
            steer(connection, planner)
            for column, value in probes(owned, role, seeded.rows):
                if unique_alone(owned, column):
                    continue
                for condition, absent in zip(
                    probe_conditions(column, value),
                    probe_conditions(column, absent_like(value)),
                    strict=True,
                ):
                    # The plans may differ (the planner's statistics see every row);
                    # what they read may not.
                    assert total_read(connection, owned, role, condition) == total_read(
                        connection, owned, role, absent
                    ), (
                        f"EXPLAIN ANALYZE counts {VICTIM}'s rows of {owned.name} by "
                        f"{column.name} ({planner}: {condition}): an index that serves it "
                        f"and does not lead with {owned.owner_column} lets it"
                    )


# --- privileges per column, and the functions the identity runs ------------------------

COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")


def declared_column_privileges(table: sa.Table, role: str) -> set[tuple[str, str]]:
    security = row_security(table)
    held: set[tuple[str, str]] = set()
    for grant in security.grants if security else ():
        if grant.role not in (role, PUBLIC):
            continue
        columns = table.columns.keys() if grant.columns is None else grant.columns
        held |= {(c, p) for c in columns for p in grant.privileges if p in COLUMN_PRIVILEGES}
    return held


@pytest.mark.parametrize("role", ROLES)
def test_each_role_holds_exactly_the_declared_column_privileges(
    role: str, connection: Connection
) -> None:
    """Column by column: what a role can do is what its grants declare (``todo_app``
    reads no e-mail address), whether granted on the table or on the columns."""
    with connection.begin():
        for table in metadata.sorted_tables:
            held = {
                (column, privilege)
                for column in table.columns.keys()  # noqa: SIM118  (names, not columns)
                for privilege in COLUMN_PRIVILEGES
                if connection.execute(
                    sa.text("SELECT has_column_privilege(:r, quote_ident(:t), :c, :p)"),
                    {"r": role, "t": table.name, "c": column, "p": privilege},
                ).scalar()
            }
            assert held == declared_column_privileges(table, role), table.name


DECLARED_FUNCTIONS = declared_functions(metadata.sorted_tables)


@pytest.mark.parametrize("function", DECLARED_FUNCTIONS, ids=[f.name for f in DECLARED_FUNCTIONS])
def test_functions_run_as_declared_and_only_for_their_executors(
    function: Function, connection: Connection
) -> None:
    """A SECURITY DEFINER function runs as its owner with its search_path pinned, and
    only its executors (never PUBLIC, which may call any new function otherwise) may
    call it; none of the roles that may call it can act as its owner."""
    with connection.begin():
        oid, definer, settings, owner, public = connection.execute(
            sa.text(
                """SELECT p.oid, p.prosecdef, coalesce(p.proconfig, '{}'),
                          pg_get_userbyid(p.proowner),
                          EXISTS (SELECT FROM aclexplode(coalesce(p.proacl,
                                                         acldefault('f', p.proowner))) a
                                  WHERE a.grantee = 0)
                   FROM pg_proc p
                   WHERE p.proname = :name AND p.pronamespace = CAST(:schema AS regnamespace)"""
            ),
            {"name": function.name, "schema": function.schema},
        ).one()
        assert definer == function.security_definer
        if function.search_path is not None:
            pinned = {
                f"search_path={function.search_path}",
                f'search_path="{function.search_path}"',
            }
            assert pinned & set(settings), settings
        if function.owner is not None:
            assert owner == function.owner
        assert public == (PUBLIC in function.executors)
        for role in ROLES:
            if role == owner:
                continue
            may = connection.execute(
                sa.text("SELECT has_function_privilege(:role, CAST(:oid AS oid), 'EXECUTE')"),
                {"role": role, "oid": oid},
            ).scalar()
            assert may == (role in function.executors), role
            acts_as_owner = connection.execute(
                sa.text("SELECT pg_has_role(:role, :owner, 'MEMBER')"),
                {"role": role, "owner": owner},
            ).scalar()
            assert acts_as_owner is False, f"{role} may act as {owner}"
