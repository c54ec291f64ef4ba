"""Shared rows are shared as declared, and with nobody else: derived from the sharing
declarations, for every table a role reaches that is shared (``shared_with``), lists
its members (``member_of``) or is owned through a shared row, at any depth.

What the oracle says each user may do (``tests/isolation/test_isolation.py``) proves that the
database does what the declarations say. These hold the database to what sharing
means, whatever the declarations say, each user taken for what they are to each
shared row by the seeded memberships alone (owner, a member whose level manages,
writes or only reads, or an outsider; ``tests/support/rls_helpers.py`` seeds each kind):

* a non-member sees nothing of a shared row, and changes nothing;
* a viewer reads it and writes nothing of it but their own leaving;
* a writer writes within the rows they write, and moves nothing out of them;
* nobody adds themselves or raises their own level, and members are changed only by
  the owner and managers, only at declared levels;
* a removed member loses access at their next statement, a demoted one their writing;
* an error tells nothing of rows hidden from the user: a division by zero in a
  condition on their values, a reference to one, a key one holds.

EXPLAIN ANALYZE is probed by every user, members of some rows, in
``tests/isolation/test_isolation.py``. On a schema that shares nothing, there is nothing here
to test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from models import metadata
from tests.conftest import database_copy, new_engine
from tests.support.rls_helpers import (
    INSUFFICIENT_PRIVILEGE,
    KINDS,
    OUTSIDER,
    REFUSED,
    USERS,
    Kind,
    Outcome,
    Refused,
    Row,
    Seeded,
    SeededRow,
    Sharing,
    absent_value,
    acting_as,
    as_the_owner,
    insert,
    new_row,
    ownership,
    read,
    seed,
    sharing_of,
    trial,
    unique_keys,
    where_key,
)
from tests.support.rls_oracle import Access, Shared, every_access, touched

#: Every user who signs in: the seeded users, each of several kinds to several shared
#: rows, and the outsider, a member of nothing.
SIGNED_IN = (*USERS, OUTSIDER)

#: The accesses whose policies the sharing declarations derive.
SHARED = tuple(
    access for access in every_access() if any(isinstance(rule, Shared) for rule in access.rules)
)
#: Each shared table, with its membership table.
SHARINGS = tuple(dict.fromkeys(found for access in SHARED if (found := sharing_of(access.table))))


if not SHARINGS:
    pytest.skip("no table of the models is shared (shared_with)", allow_module_level=True)


def ids(cases: Sequence[Access | tuple[Access, str]]) -> list[str]:
    """`role-table[-more]` for each case: a failure names its table."""
    named = []
    for case in cases:
        access, *more = case if isinstance(case, tuple) else (case,)
        named.append("-".join([access.role, access.name, *more]))
    return named


def sharing(access: Access) -> Sharing:
    found = sharing_of(access.table)
    assert found is not None
    return found


@dataclass(frozen=True)
class SeededDatabase:
    engine: Engine
    rows: Seeded


@pytest.fixture(scope="module")
def seeded(admin_url: URL, head_template: str) -> Iterator[SeededDatabase]:
    with database_copy(admin_url, head_template, "sharing") as url:
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


# --- who is what to which row ----------------------------------------------------------


def shared_key(access: Access, rows: Seeded, row: SeededRow | Row) -> object:
    values = row.values if isinstance(row, SeededRow) else row
    return rows.shared_key(sharing(access), access.name, values)


def kind(access: Access, rows: Seeded, user: str, row: SeededRow | Row) -> Kind:
    """Who `user` is to the shared row `row` (of `access.table`) is for."""
    return rows.kind(sharing(access), shared_key(access, rows, row), user)


def writes(access: Access, rows: Seeded, user: str, row: SeededRow | Row) -> bool:
    return rows.may(sharing(access), user, shared_key(access, rows, row), "write")


def manages(access: Access, rows: Seeded, user: str, key: object) -> bool:
    return rows.may(sharing(access), user, key, "manage")


def part(access: Access) -> str:
    """The table's part in its sharing: the shared table, its members, or owned through."""
    shared = sharing(access)
    return {shared.table: "shared", shared.members: "members"}.get(access.name, "through")


def own_membership(access: Access, user: str, row: SeededRow) -> bool:
    return part(access) == "members" and row.values[sharing(access).user_column] == user


# --- statements ------------------------------------------------------------------------


def key_of(access: Access, row: SeededRow) -> Any:
    return tuple(row.key[name] for name in access.key)


def selected_keys(connection: Connection, access: Access) -> set[Any] | Refused:
    table = access.table
    found = read(connection, sa.select(*(table.columns[name] for name in access.key)))
    return found if found == REFUSED else set(found)


def untouched_update(access: Access, row: SeededRow) -> sa.Update:
    """An UPDATE of `row` that sets one column to itself (as the derived reach does)."""
    table = access.table
    column = table.columns[touched(access)]
    return sa.update(table).where(where_key(table, row.key)).values({column: column})


def delete(access: Access, row: SeededRow) -> sa.Delete:
    return sa.delete(access.table).where(where_key(access.table, row.key))


def changed_nothing(outcome: Outcome) -> bool:
    return outcome in (0, REFUSED)


def under(access: Access, rows: Seeded, key: object, n: int) -> list[dict[str, object]]:
    """New rows of `access.table` for the shared row `key`: one per parent row it may
    reference there (the shared row itself, a row owned through it...); none for the
    shared table itself, whose new rows are their creator's own."""
    shared = sharing(access)
    table = access.table
    owner_row = rows.shared_row(shared, key)
    if part(access) == "shared" or owner_row is None:
        return []
    owner = str(owner_row[shared.owner])
    if part(access) == "members":
        return []
    owned = ownership(table)
    assert owned is not None
    assert owned.parent is not None
    if owned.parent.parent is None:
        references = [key]
    else:
        references = [
            parent.values[str(owned.parent_column)]
            for parent in rows.all(owned.parent.table)
            if rows.shared_key(shared, owned.parent.table, parent.values) == key
        ]
    made = new_row(table, owner, n, rows)
    return [{**made, owned.column: reference} for reference in references]


def membership(
    access: Access, rows: Seeded, key: object, user: str, level: object
) -> dict[str, object]:
    """A new membership of `user` in the shared row `key`, at `level`."""
    shared = sharing(access)
    owner_row = rows.shared_row(shared, key)
    assert owner_row is not None
    made = new_row(access.table, str(owner_row[shared.owner]), 7_000, rows)
    return {
        **made,
        shared.shared_column: key,
        shared.user_column: user,
        shared.level_column: level,
    }


def shared_keys(access: Access, rows: Seeded) -> list[object]:
    shared = sharing(access)
    return [row.values[shared.key] for row in rows.all(shared.table)]


# --- every kind of user exists ----------------------------------------------------------


def test_the_sharing_declarations_are_found() -> None:
    """Every shared table a role reaches is here with its membership table."""
    for shared in SHARINGS:
        assert {shared.table, shared.members} <= {access.name for access in SHARED}


@pytest.mark.parametrize("access", SHARED, ids=ids(SHARED))
def test_every_kind_of_user_exists_for_the_rows_of_the_table(
    access: Access, seeded: SeededDatabase
) -> None:
    """Seeded, the table's rows are for shared rows to which some user is each kind of
    user: what follows is never vacuous."""
    rows = seeded.rows
    table_rows = rows.all(access.table)
    assert table_rows, f"no rows seeded in {access.name}"
    kinds = {kind(access, rows, user, row) for user in SIGNED_IN for row in table_rows}
    assert kinds == set(KINDS), f"{access.name}: no user is {set(KINDS) - kinds} to its rows"
    levels = {
        str(rows.level(sharing(access), key, user))
        for key in shared_keys(access, rows)
        for user in USERS
    } - {"None"}
    assert levels >= set(sharing(access).levels), "a declared level has no member"


# --- what each kind of user reaches ----------------------------------------------------


@pytest.mark.parametrize("access", SHARED, ids=ids(SHARED))
def test_a_non_member_sees_nothing_of_a_shared_row(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """Of the rows for a shared row they neither own nor are a member of, a signed-in
    user reads none, and changes and deletes none."""
    rows = seeded.rows
    for user in SIGNED_IN:
        hidden = [
            row for row in rows.all(access.table) if kind(access, rows, user, row) == "outsider"
        ]
        with acting_as(connection, user, role=access.role):
            seen = selected_keys(connection, access)
            assert seen != REFUSED, f"{user} may not read {access.name} at all"
            read_anyway = [row.key for row in hidden if key_of(access, row) in seen]
            assert read_anyway == [], f"{user}, a non-member, reads {access.name} {read_anyway}"
            for row in hidden:
                for statement in (untouched_update(access, row), delete(access, row)):
                    assert changed_nothing(trial(connection, statement)), (
                        f"{user}, a non-member, changes {access.name} {row.key}: {statement}"
                    )


@pytest.mark.parametrize("access", SHARED, ids=ids(SHARED))
def test_a_viewer_reads_and_writes_nothing(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """Of the rows for a shared row they are a viewer of, a member reads every one,
    changes none, deletes none but their own membership (leaving), and adds none."""
    rows = seeded.rows
    for user in USERS:
        viewed = [
            row for row in rows.all(access.table) if kind(access, rows, user, row) == "viewer"
        ]
        keys = {shared_key(access, rows, row) for row in viewed}
        with acting_as(connection, user, role=access.role):
            seen = selected_keys(connection, access)
            assert seen != REFUSED
            unread = [row.key for row in viewed if key_of(access, row) not in seen]
            assert unread == [], f"{user}, a viewer, does not read {access.name} {unread}"
            for row in viewed:
                assert changed_nothing(trial(connection, untouched_update(access, row))), (
                    f"{user}, a viewer, changes {access.name} {row.key}"
                )
                deleted = trial(connection, delete(access, row))
                left = own_membership(access, user, row)
                assert deleted == 1 if left else changed_nothing(deleted), (
                    f"{user}, a viewer, deleting {access.name} {row.key}: {deleted}"
                )
            for n, key in enumerate(keys):
                for new in under(access, rows, key, 8_000 + n):
                    assert trial(connection, insert(access.table, new)) == REFUSED, (
                        f"{user}, a viewer, adds {new} to {access.name}"
                    )


@pytest.mark.parametrize(
    "access",
    [a for a in SHARED if part(a) != "members"],
    ids=ids([a for a in SHARED if part(a) != "members"]),
)
def test_a_writer_writes_within_the_rows_they_write_and_nowhere_else(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """Each user changes exactly the rows for the shared rows they write (their own, or
    as a member whose level writes), adds rows there and nowhere else, moves a row only
    from one they write to another they write, and deletes a shared row only when it is
    theirs; nobody changes a shared row's owner or key."""
    rows = seeded.rows
    shared = sharing(access)
    table = access.table
    owned = ownership(table)
    for user in SIGNED_IN:
        with acting_as(connection, user, role=access.role):
            for row in rows.all(table):
                allowed = writes(access, rows, user, row)
                outcome = trial(connection, untouched_update(access, row))
                assert outcome == (1 if allowed else 0), (
                    f"{user} ({kind(access, rows, user, row)}) updating {access.name} "
                    f"{row.key}: {outcome}"
                )
                if part(access) == "shared":
                    for column in (shared.owner, shared.key):
                        statement = sa.update(table).where(where_key(table, row.key))
                        statement = statement.values({table.columns[column]: table.columns[column]})
                        assert trial(connection, statement) == REFUSED, (
                            f"{user} may set {access.name}.{column}"
                        )
                    deleted = trial(connection, delete(access, row))
                    assert deleted == (1 if kind(access, rows, user, row) == "owner" else 0), (
                        f"{user} ({kind(access, rows, user, row)}) deleting {access.name} "
                        f"{row.key}: {deleted}"
                    )
                    continue
                assert owned is not None
                for n, key in enumerate(shared_keys(access, rows)):
                    for target in under(access, rows, key, 9_000 + n):
                        reference = target[owned.column]
                        moved = sa.update(table).where(where_key(table, row.key))
                        moved = moved.values({table.columns[owned.column]: reference})
                        outcome = trial(connection, moved)
                        may = allowed and rows.may(shared, user, key, "write")
                        assert (outcome == 1) if may else changed_nothing(outcome), (
                            f"{user} moving {access.name} {row.key} "
                            f"({kind(access, rows, user, row)}) to a shared row they are "
                            f"{rows.kind(shared, key, user)} to: {outcome}"
                        )
            for n, key in enumerate(shared_keys(access, rows)):
                for new in under(access, rows, key, 10_000 + n):
                    outcome = trial(connection, insert(table, new))
                    may = rows.may(shared, user, key, "write")
                    assert outcome == (1 if may else REFUSED), (
                        f"{user} ({rows.kind(shared, key, user)}) adding to {access.name}: "
                        f"{outcome}"
                    )


# --- members -----------------------------------------------------------------------------

MEMBERS = [access for access in SHARED if part(access) == "members"]


@pytest.mark.parametrize("access", MEMBERS, ids=ids(MEMBERS))
def test_nobody_adds_themselves_or_raises_their_own_level(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """For every shared row, whoever the user is to it (its owner and managers too):
    no membership of their own is added, at any level, and their own is changed to no
    level and moved to no other row; nor is another member's made theirs."""
    rows = seeded.rows
    shared = sharing(access)
    table = access.table
    level, user_column = table.columns[shared.level_column], table.columns[shared.user_column]
    for user in SIGNED_IN:
        with acting_as(connection, user, role=access.role):
            for key in shared_keys(access, rows):
                for wanted in shared.levels:
                    added = trial(
                        connection, insert(table, membership(access, rows, key, user, wanted))
                    )
                    assert added == REFUSED or rows.level(shared, key, user) is not None, (
                        f"{user} ({rows.kind(shared, key, user)}) adds themselves as {wanted}"
                    )
            for row in rows.all(table):
                statements = []
                if row.values[shared.user_column] == user:
                    statements += [
                        sa.update(table).where(where_key(table, row.key)).values({level: wanted})
                        for wanted in shared.levels
                    ]
                    statements += [
                        sa.update(table)
                        .where(where_key(table, row.key))
                        .values({table.columns[shared.shared_column]: key})
                        for key in shared_keys(access, rows)
                    ]
                else:
                    statements.append(
                        sa.update(table)
                        .where(where_key(table, row.key))
                        .values({user_column: user})
                    )
                for statement in statements:
                    outcome = trial(connection, statement)
                    assert changed_nothing(outcome), (
                        f"{user} ({kind(access, rows, user, row)}) makes {access.name} "
                        f"{row.key} theirs or raises it: {statement.compile()} -> {outcome}"
                    )


@pytest.mark.parametrize("access", MEMBERS, ids=ids(MEMBERS))
def test_the_owner_and_managers_alone_change_members_and_only_at_declared_levels(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """Another user's membership is added, changed to each declared level, and removed
    by the shared row's owner and managers and by nobody else; a level not declared is
    refused to all; a member may remove their own (leave)."""
    rows = seeded.rows
    shared = sharing(access)
    table = access.table
    level = table.columns[shared.level_column]
    undeclared = absent_value(level, list(shared.levels))
    for user in SIGNED_IN:
        with acting_as(connection, user, role=access.role):
            for key in shared_keys(access, rows):
                may = manages(access, rows, user, key)
                owner = rows.shared_row(shared, key)
                newcomers = [
                    other
                    for other in SIGNED_IN
                    if other != user
                    and rows.level(shared, key, other) is None
                    and owner is not None
                    and other != owner[shared.owner]
                ]
                for other, wanted in zip(newcomers, itertools.cycle(shared.levels), strict=False):
                    added = trial(
                        connection, insert(table, membership(access, rows, key, other, wanted))
                    )
                    assert added == (1 if may else REFUSED), (
                        f"{user} ({rows.kind(shared, key, user)}) adding {other} as {wanted}: "
                        f"{added}"
                    )
                    if undeclared is not None:
                        invented = membership(access, rows, key, other, undeclared)
                        outcome = trial(connection, insert(table, invented))
                        assert outcome != 1, f"{user} adds {other} at level {undeclared!r}"
            for row in rows.all(table):
                key = row.values[shared.shared_column]
                own = row.values[shared.user_column] == user
                may = manages(access, rows, user, key) and not own
                for wanted in shared.levels:
                    statement = (
                        sa.update(table).where(where_key(table, row.key)).values({level: wanted})
                    )
                    outcome = trial(connection, statement)
                    assert (outcome == 1) if may else changed_nothing(outcome), (
                        f"{user} ({rows.kind(shared, key, user)}) setting {access.name} "
                        f"{row.key} to {wanted}: {outcome}"
                    )
                removed = trial(connection, delete(access, row))
                assert removed == (1 if may or own else 0), (
                    f"{user} ({rows.kind(shared, key, user)}) removing {access.name} "
                    f"{row.key}: {removed}"
                )


# --- revoked at the next statement ----------------------------------------------------------


def family(shared: Sharing) -> list[Access]:
    """Every access to a table of the sharing: the shared table, its members, and the
    tables owned through it."""
    return [access for access in SHARED if sharing_of(access.table) == shared]


def seeded_membership(rows: Seeded, shared: Sharing, level: str) -> SeededRow:
    """The first seeded membership at `level`."""
    return next(row for row in rows.all(shared.members) if row.values[shared.level_column] == level)


@contextmanager
def restored(seeded: SeededDatabase, shared: Sharing, row: SeededRow) -> Iterator[None]:
    """The membership `row` as seeded again afterwards, whatever was done to it."""
    try:
        yield
    finally:
        members = metadata.tables[shared.members]
        with seeded.engine.begin() as admin:
            admin.execute(sa.delete(members).where(where_key(members, row.key)))
            admin.execute(insert(members, row.values))


def reached(connection: Connection, access: Access, rows: Seeded, key: object) -> set[Any]:
    """The rows for the shared row `key` that the transaction reads."""
    seen = selected_keys(connection, access)
    assert seen != REFUSED
    return {
        key_of(access, row)
        for row in rows.all(access.table)
        if shared_key(access, rows, row) == key and key_of(access, row) in seen
    }


def changed(connection: Connection, access: Access, rows: Seeded, key: object) -> list[Any]:
    """The rows for the shared row `key` that an UPDATE setting nothing new changes."""
    return [
        row.key
        for row in rows.all(access.table)
        if shared_key(access, rows, row) == key
        and trial(connection, untouched_update(access, row)) == 1
    ]


def as_owner_of(
    seeded: SeededDatabase, shared: Sharing, key: object, statement: sa.Executable
) -> None:
    """`statement`, run and committed by the shared row's owner through the API."""
    owner_row = seeded.rows.shared_row(shared, key)
    assert owner_row is not None
    with (
        seeded.engine.connect() as theirs,
        acting_as(theirs, str(owner_row[shared.owner]), role=shared.role, commit=True),
    ):
        result = theirs.execute(statement, execution_options={"preserve_rowcount": True})
        assert result.rowcount == 1, f"the owner could not run {statement}"


#: Each table of a sharing, with each declared level a member may be removed from.
REVOKED = [(access, level) for access in SHARED for level in sharing(access).levels]


@pytest.mark.parametrize(("access", "level"), REVOKED, ids=ids(REVOKED))
def test_a_removed_member_loses_access_at_their_next_statement(
    access: Access, level: str, seeded: SeededDatabase
) -> None:
    """A member's transaction is open and has read the shared row's rows; the owner
    removes them (a transaction of their own, committed); the member's very next
    statement, in the same transaction, reads and changes none."""
    rows, shared = seeded.rows, sharing(access)
    row = seeded_membership(rows, shared, level)
    key, member = row.values[shared.shared_column], str(row.values[shared.user_column])
    members = metadata.tables[shared.members]
    with (
        restored(seeded, shared, row),
        seeded.engine.connect() as mine,
        acting_as(mine, member, role=shared.role),
    ):
        assert reached(mine, access, rows, key), f"{member} ({level}) reads nothing of {key}"
        as_owner_of(seeded, shared, key, sa.delete(members).where(where_key(members, row.key)))
        assert not reached(mine, access, rows, key), f"{member}, removed, still reads it"
        assert not changed(mine, access, rows, key), f"{member}, removed, still changes it"


#: Each table a member writes, each level that writes, and the first declared level
#: that does not.
DEMOTED = [
    (access, level, lower)
    for access in SHARED
    if part(access) != "members"
    for lower in [
        level for level in sharing(access).levels if level not in sharing(access).writers
    ][:1]
    for level in sharing(access).writers
]


@pytest.mark.parametrize(
    ("access", "level", "lower"),
    DEMOTED,
    ids=ids([(access, f"{level}-to-{lower}") for access, level, lower in DEMOTED]),
)
def test_a_demoted_member_stops_writing_at_their_next_statement(
    access: Access, level: str, lower: str, seeded: SeededDatabase
) -> None:
    """A writer's transaction is open and has changed the shared row's rows; the owner
    sets them to a level that does not write; their very next statement still reads,
    and changes nothing."""
    rows, shared = seeded.rows, sharing(access)
    row = seeded_membership(rows, shared, level)
    key, member = row.values[shared.shared_column], str(row.values[shared.user_column])
    members = metadata.tables[shared.members]
    demote = sa.update(members).where(where_key(members, row.key))
    with (
        restored(seeded, shared, row),
        seeded.engine.connect() as mine,
        acting_as(mine, member, role=shared.role),
    ):
        assert changed(mine, access, rows, key), f"{member} ({level}) changes nothing of {key}"
        as_owner_of(seeded, shared, key, demote.values({shared.level_column: lower}))
        assert not changed(mine, access, rows, key), f"{member}, now {lower}, still changes it"
        assert reached(mine, access, rows, key), f"{member}, now {lower}, no longer reads it"


# --- errors tell nothing ------------------------------------------------------------------


def outcome(connection: Connection, statement: sa.Executable) -> str:
    """``ok``, or the SQLSTATE PostgreSQL fails `statement` with; undone either way."""
    savepoint = connection.begin_nested()
    try:
        connection.execute(statement)
    except DBAPIError as error:
        savepoint.rollback()
        return str(getattr(error.orig, "sqlstate", None) or error)
    savepoint.rollback()
    return "ok"


@contextmanager
def without(connection: Connection, access: Access, row: SeededRow) -> Iterator[None]:
    """Inside the user's transaction, `row` gone for a while (deleted behind the role's
    back, with whatever its foreign keys cascade to), then back."""
    savepoint = connection.begin_nested()
    with as_the_owner(connection, access.role):
        connection.execute(delete(access, row))
    try:
        yield
    finally:
        savepoint.rollback()


def hidden_from(access: Access, rows: Seeded, user: str) -> list[SeededRow]:
    return [row for row in rows.all(access.table) if kind(access, rows, user, row) == "outsider"]


@pytest.mark.parametrize("access", SHARED, ids=ids(SHARED))
def test_a_failing_condition_on_hidden_values_raises_nothing(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """A condition that divides by zero on a value only rows hidden from the user hold
    (in SELECT, UPDATE and DELETE) fails on no row: the policies filter before any
    function that is not leakproof sees a value."""
    rows = seeded.rows
    table = access.table
    column = table.columns[touched(access)]
    for user in SIGNED_IN:
        hidden = hidden_from(access, rows, user)
        shown = [row for row in rows.all(table) if row not in hidden]
        with acting_as(connection, user, role=access.role):
            for probed in access.readable_columns():
                held = {repr(row.values[probed.name]) for row in shown}
                for row in hidden:
                    value = row.values[probed.name]
                    if value is None or repr(value) in held:
                        continue
                    fails = (sa.literal(1) / sa.case((probed == value, 0), else_=1)) == 1
                    for statement in (
                        sa.select(sa.func.count()).select_from(table).where(fails),
                        sa.update(table).where(fails).values({column: column}),
                        sa.delete(table).where(fails),
                    ):
                        said = outcome(connection, statement)
                        assert said in ("ok", INSUFFICIENT_PRIVILEGE), (
                            f"{user} learns that a row of {access.name} hidden from them holds "
                            f"{probed.name} = {value!r}: {said}"
                        )


def writable_new_rows(access: Access, rows: Seeded, user: str) -> list[dict[str, object]]:
    """New rows `user` may add: under a shared row they write, or, to its members, a
    newcomer to a row they manage."""
    shared = sharing(access)
    made: list[dict[str, object]] = []
    for n, key in enumerate(shared_keys(access, rows)):
        if part(access) == "members" and manages(access, rows, user, key):
            owner_row = rows.shared_row(shared, key)
            newcomer = next(
                (
                    other
                    for other in SIGNED_IN
                    if other != user
                    and rows.level(shared, key, other) is None
                    and owner_row is not None
                    and other != owner_row[shared.owner]
                ),
                None,
            )
            if newcomer is not None:
                made.append(membership(access, rows, key, newcomer, shared.levels[0]))
        elif rows.may(shared, user, key, "write"):
            made += under(access, rows, key, 11_000 + n)
    return made


def references(access: Access) -> list[tuple[sa.Column[Any], Access]]:
    """The table's columns that reference a table of its sharing, with that table's
    access."""
    shared = sharing(access)
    found = []
    for column in access.table.columns:
        for foreign in column.foreign_keys:
            for parent in family(shared):
                if parent.table is foreign.column.table and parent.role == access.role:
                    found.append((column, parent))
    return found


@pytest.mark.parametrize("access", SHARED, ids=ids(SHARED))
def test_a_write_naming_a_hidden_row_fails_as_if_it_were_not_there(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """A row the user may otherwise add, given the key values a hidden row holds (any
    key but a lone column: random ids, whose existence a lookup by key shows anyway) or
    a reference to a hidden row, fails exactly as it does with that row deleted: no
    unique or foreign-key violation tells that it exists."""
    rows = seeded.rows
    keys = [key for key in unique_keys(access.table) if len(key) > 1]
    for user in SIGNED_IN:
        news = writable_new_rows(access, rows, user)[:2]
        hidden = hidden_from(access, rows, user)
        tried: list[tuple[sa.Insert, Access, SeededRow]] = [
            (insert(access.table, {**new, **{c: row.values[c] for c in key}}), access, row)
            for new in news
            for key in keys
            for row in hidden
        ]
        for column, parent in references(access):
            parents = hidden_from(parent, rows, user)
            (foreign,) = column.foreign_keys
            tried += [
                (
                    insert(access.table, {**new, column.name: row.values[foreign.column.name]}),
                    parent,
                    row,
                )
                for new in news
                for row in parents
            ]
        with acting_as(connection, user, role=access.role):
            for statement, owner, row in tried:
                with_it = outcome(connection, statement)
                with without(connection, owner, row):
                    without_it = outcome(connection, statement)
                assert with_it == without_it, (
                    f"{user} learns that {owner.name} {row.key}, hidden from them, exists: "
                    f"{with_it} where {without_it} without it"
                )
