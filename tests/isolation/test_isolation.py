"""Users are isolated from each other, as the row-security declarations say.

Every test is derived from the declarations of the tables of ``models.metadata``
(resolved, so a table owned through a parent row has its derived policies): for each
declared role and each table it reaches (a privilege or a policy names it: owned
tables, link tables, lookup tables without row security, a trusted server's tables),
what the role does to the seeded rows is compared with what the declarations say it
may (:mod:`tests.support.rls_oracle`), acting the way the API does (one transaction, ``SET
LOCAL ROLE``, ``SELECT public.bind_session(<token>)`` with the user's live Better
Auth session) for three users and an outsider, and as nobody in every way an attacker
running SQL as the role without a live session of their own could try (one way, for
a table whose policies never ask who the transaction is). On top of what each
declaration says, every table is held to what none may break:

* a transaction without a verified user reaches no row of an owned table;
* a forged claim (``set_config('app.user_id', ...)``, a forged binding, one left on a
  pooled connection) grants nothing a transaction without identity does not have,
  and a signed-in user gains nothing by also claiming another id (policies that say
  ``claim_acknowledged``, a trusted job's, are exempt from these two);
* EXPLAIN ANALYZE counts no row a transaction may not see, whatever the plan.

A newly declared table is covered here without a new test; one whose rows the helpers
cannot make fails loudly (see ``tests/support/rls_helpers.py``).

The database is one copy of head per module, seeded once as the owner (which bypasses
row security); every test acts inside transactions that are rolled back, so the seeded
rows never change.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError

from models import metadata
from models.security import (
    APP_ROLE,
    AUTH_ROLE,
    IDENTITY_ROLE,
    PUBLIC,
    ROLES,
    Function,
)
from tests.conftest import database_copy, new_engine
from tests.support.rls_helpers import (
    NO_ONE,
    OUTSIDER,
    REFUSED,
    USER_TABLE,
    USERS,
    Actor,
    Outcome,
    Refused,
    Row,
    Seeded,
    SeededRow,
    absent_value,
    acting,
    acting_as,
    acts_as,
    as_the_owner,
    bind,
    expired_token,
    insert,
    is_refused,
    live_token,
    may_bind_sessions,
    new_row,
    one_row_per_owner,
    ownership,
    reachable_tables,
    read,
    seed,
    trial,
    unique_keys,
    where_key,
)
from tests.support.rls_oracle import (
    Access,
    Evaluator,
    Owned,
    Shared,
    World,
    every_access,
    recognised,
    session_user,
    touched,
)
from todo_database.declarations.row_security import declared, declared_functions, row_security

#: What each declared role may do to each table it reaches, as declared.
ACCESSES = every_access()
DECLARED_FUNCTIONS = declared_functions(metadata.sorted_tables)
#: How a policy learns who the current user is: a setting, or a declared function (the
#: identity's, or a sharing function that asks it).
IDENTITY_CALLS = ("current_setting(", *(f"{function.name}(" for function in DECLARED_FUNCTIONS))
#: Those whose rows a policy for the role matches to their owner.
OWNED = tuple(access for access in ACCESSES if access.ownership is not None)
VICTIM = USERS[0]
#: Ways of being nobody, each a way in for SQL run as the role without a live session
#: of its own (see :func:`acting_as_nobody`), and who each is to the policies: some
#: claim to be the victim, USERS[0].
NOBODY: Final = {
    "never bound": NO_ONE,
    "empty token": NO_ONE,
    "unknown token": NO_ONE,
    "expired token": NO_ONE,
    "claimed user id": Actor(None, VICTIM),
    "forged binding": Actor(None, VICTIM),
    "left by a previous transaction": NO_ONE,
    "left at session level by an earlier transaction": Actor(None, VICTIM),
}
#: The ways that need the role to run ``bind_session`` (a trusted job's may not).
BINDING_WAYS = ("empty token", "unknown token", "expired token")
#: The ways that claim an id without proving it, each against "never bound".
FORGED_CLAIMS = (
    "claimed user id",
    "forged binding",
    "left at session level by an earlier transaction",
)

# What the schema has today; the sets derived from the declarations must include it, so
# that an empty derivation cannot pass for coverage.
EXPECTED_OWNED = {(APP_ROLE, "todo"), (APP_ROLE, USER_TABLE)}
EXPECTED_REACHED = EXPECTED_OWNED | {(AUTH_ROLE, USER_TABLE), (IDENTITY_ROLE, "session")}
EXPECTED_UNREACHABLE = {(APP_ROLE, "session"), (APP_ROLE, "account"), (APP_ROLE, "verification")}
EXPECTED_UNREACHABLE |= {(AUTH_ROLE, "todo")}

ALL_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


def ids(cases: Sequence[Access | tuple[Access, str]]) -> list[str]:
    """`role-table[-more]` for each case: a failure names its table."""
    named = []
    for case in cases:
        access, *more = case if isinstance(case, tuple) else (case,)
        named.append("-".join([access.role, access.name, *more]))
    return named


@dataclass(frozen=True)
class SeededDatabase:
    engine: Engine
    rows: Seeded
    world: World


@pytest.fixture(scope="module")
def seeded(admin_url: URL, head_template: str) -> Iterator[SeededDatabase]:
    with database_copy(admin_url, head_template, "isolation") as url:
        engine = new_engine(url)
        try:
            with engine.begin() as connection:
                rows = seed(connection)
            yield SeededDatabase(engine, rows, World(rows, Evaluator(engine)))
        finally:
            engine.dispose()


@pytest.fixture
def connection(seeded: SeededDatabase) -> Iterator[Connection]:
    with seeded.engine.connect() as connection:
        yield connection


def others(user: str) -> list[str]:
    return [other for other in USERS if other != user]


# --- what a transaction reaches -----------------------------------------------------------


@dataclass(frozen=True)
class Reach:
    """What a transaction reaches of a table: the rows it reads (each as the values of
    the columns it may read), and, for each seeded row, what an UPDATE that reads it
    and changes nothing and a DELETE of it do; for each new row tried, what its INSERT
    does."""

    read: tuple[str, ...] | Refused
    updated: tuple[Outcome, ...]
    deleted: tuple[Outcome, ...]
    inserted: tuple[Outcome, ...]

    def facts(self) -> set[tuple[str, object]]:
        """Everything reached, one fact each: what a comparison of reaches counts."""
        found: set[tuple[str, object]] = set()
        if self.read != REFUSED:
            found |= {("reads", row) for row in self.read}
        for what, outcomes in (
            ("updates", self.updated),
            ("deletes", self.deleted),
            ("inserts", self.inserted),
        ):
            found |= {(what, n) for n, outcome in enumerate(outcomes) if outcome == 1}
        return found

    def differences(self, other: Reach) -> dict[str, list[str]]:
        """What this reach has that `other` lacks and the other way round, by kind."""
        found: dict[str, list[str]] = {}
        for name in ("read", "updated", "deleted", "inserted"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine == theirs:
                continue
            if name == "read" and REFUSED not in (mine, theirs):
                more, fewer = Counter(mine) - Counter(theirs), Counter(theirs) - Counter(mine)
                found[name] = [f"+{row}" for row in more] + [f"-{row}" for row in fewer]
            else:
                found[name] = [f"{mine!r} where {theirs!r}"]
        return found


def row_text(access: Access, values: Row) -> str:
    """A row as the role reads it: the values of the columns it may read."""
    return repr(tuple(values[column.name] for column in access.readable_columns()))


def labels(access: Access, rows: Seeded) -> dict[str, str]:
    """What a failure calls each seeded row, by the text :func:`row_text` makes of it:
    whose row it is and its key (its text, when two rows read the same)."""
    texts = Counter(row_text(access, row.values) for row in rows.all(access.table))
    found = {}
    for row in rows.all(access.table):
        text = row_text(access, row.values)
        key = ", ".join(f"{name}={value}" for name, value in row.key.items())
        whose = f"{row.owner}'s " if row.owner else ""
        found[text] = f"{whose}{access.name} {key}" if texts[text] == 1 else text
    return found


def candidates(access: Access, rows: Seeded) -> list[dict[str, object]]:
    """The new rows an INSERT is tried with: one for each user (theirs, for an owned
    table)."""
    return [new_row(access.table, user, 500 + n, rows) for n, user in enumerate(USERS)]


def expected_reach(access: Access, actor: Actor, rows: Seeded) -> Reach:
    """What the declarations say `actor` reaches, acting as `access.role`."""
    seeded = [row.values for row in rows.all(access.table)]
    readable = [column.name for column in access.readable_columns()]
    column = touched(access)
    for command in ("SELECT", "UPDATE", "DELETE"):  # one evaluation for every row, if any
        access.visible(actor, seeded, command)
    selected = access.select(actor, seeded, readable)
    named = labels(access, rows)
    read = (
        REFUSED
        if selected == REFUSED
        else tuple(sorted(named[row_text(access, seeded[n])] for n in selected))
    )
    reads = {*access.key, column}
    updated = tuple(
        access.update(actor, [row], [row], reads=reads, writes={column}) for row in seeded
    )
    deleted = tuple(access.delete(actor, [row], reads=access.key) for row in seeded)
    inserted = tuple(access.insert(actor, row) for row in candidates(access, rows))
    return Reach(read, updated, deleted, inserted)


def _privilege_denied(error: DBAPIError) -> bool:
    return is_refused(error) and "row-level security" not in str(error.orig)


def _per_row(
    connection: Connection,
    access: Access,
    rows: Sequence[SeededRow],
    statement: Any,
    one: Any,
) -> tuple[Outcome, ...]:
    """What `statement` (every seeded row, RETURNING their keys) does to each row; when
    a policy refuses it as a whole, `one(row)` row by row tells which."""
    table = access.table
    picked = sa.tuple_(*(table.columns[k] for k in access.key)).in_(
        [tuple(row.key[k] for k in access.key) for row in rows]
    )
    returning = [table.columns[k] for k in access.key]
    savepoint = connection.begin_nested()
    try:
        changed = connection.execute(statement.where(picked).returning(*returning)).all()
    except DBAPIError as error:
        savepoint.rollback()
        if not is_refused(error):
            raise
        if _privilege_denied(error):
            return tuple(REFUSED for _ in rows)
        return tuple(trial(connection, one(row)) for row in rows)
    savepoint.rollback()
    keys = {tuple(found) for found in changed}
    return tuple(int(tuple(row.key[k] for k in access.key) in keys) for row in rows)


def insert_trial(connection: Connection, access: Access, row: Row, rows: Seeded) -> Outcome:
    """What an INSERT of `row` does, undone after; for a table a user owns one row of,
    the owner's row first goes behind the role's back (undone too)."""
    table = access.table
    savepoint = connection.begin_nested()
    try:
        if one_row_per_owner(table):
            owned = ownership(table)
            owner = rows.owner_of(owned, row) if owned else None
            with as_the_owner(connection, access.role):
                for existing in rows.of(table, owner):
                    connection.execute(sa.delete(table).where(where_key(table, existing.key)))
        return trial(connection, insert(table, row))
    finally:
        savepoint.rollback()


def actual_reach(connection: Connection, access: Access, rows: Seeded) -> Reach:
    """What the transaction on `connection` reaches of `access.table`, as PostgreSQL
    does it; nothing it tries is kept."""
    table, seeded = access.table, rows.all(access.table)
    readable = access.readable_columns()
    query = sa.select(*readable) if readable else sa.select(sa.func.count()).select_from(table)
    found = read(connection, query)
    named = labels(access, rows)
    read_rows = (
        REFUSED
        if found == REFUSED
        else tuple(sorted(named.get(repr(tuple(row)), f"unseeded {row}") for row in found))
        if readable
        else ()
    )
    column = table.columns[touched(access)]
    updated = _per_row(
        connection,
        access,
        seeded,
        sa.update(table).values({column: column}),
        lambda row: sa.update(table).where(where_key(table, row.key)).values({column: column}),
    )
    deleted = _per_row(
        connection,
        access,
        seeded,
        sa.delete(table),
        lambda row: sa.delete(table).where(where_key(table, row.key)),
    )
    inserted = tuple(
        insert_trial(connection, access, row, rows) for row in candidates(access, rows)
    )
    return Reach(read_rows, updated, deleted, inserted)


def admitted_by(access: Access, actor: Actor, facts: set[tuple[str, object]], rows: Seeded) -> str:
    """The policies that let `actor` reach `facts`, as declared: what a failure names."""
    seeded = [row.values for row in rows.all(access.table)]
    named = labels(access, rows)
    texts = {named[row_text(access, values)]: values for values in seeded}
    news = candidates(access, rows)
    names = set()
    for what, which in facts:
        command, row = {
            "reads": ("SELECT", texts.get(str(which))),
            "updates": ("UPDATE", seeded[int(str(which))] if what == "updates" else None),
            "deletes": ("DELETE", seeded[int(str(which))] if what == "deletes" else None),
            "inserts": ("INSERT", news[int(str(which))] if what == "inserts" else None),
        }[what]
        if row is None or access.world is None:
            continue
        for rule in access.permissive(command):
            verdict = rule.accepts if command == "INSERT" else rule.admits
            if verdict(access.world, actor, [row])[0]:
                names.add(rule.policy.name)
    return ", ".join(sorted(names)) or "no declared policy"


parametrize_accesses = pytest.mark.parametrize("access", ACCESSES, ids=ids(ACCESSES))


def test_declarations_derive_the_expected_tables() -> None:
    """The derivation is not vacuous: it finds at least the tables the schema has today."""
    assert {(a.role, a.name) for a in OWNED} >= EXPECTED_OWNED
    assert {(a.role, a.name) for a in ACCESSES} >= EXPECTED_REACHED
    unreachable = {
        (role, table.name)
        for role in ROLES
        for table in metadata.sorted_tables
        if table.name not in reachable_tables(role)
    }
    assert unreachable >= EXPECTED_UNREACHABLE
    assert len(USERS) >= 2


@parametrize_accesses
def test_every_table_a_role_reaches_has_rows(access: Access, seeded: SeededDatabase) -> None:
    """Rows were made for every table a role reaches, for every user of an owned one,
    and a new row can be made for each user: none was skipped."""
    rows = seeded.rows
    assert rows.all(access.table), f"no rows seeded in {access.name}"
    owned = access.ownership
    for user in USERS:
        row = new_row(access.table, user, 99, rows)
        if owned is not None:
            assert rows.of(access.table, user), f"no rows seeded for {user} in {access.name}"
            assert rows.owner_of(owned, row) == user


@parametrize_accesses
def test_each_user_reaches_what_the_declarations_say(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """Signed in as the API signs them in, each user (and an outsider who owns nothing)
    reads exactly the rows the declarations show them, changes and deletes exactly
    those they let them, and inserts exactly the rows they accept."""
    access = access.at(seeded.world)
    for user in (*USERS, OUTSIDER):
        actor = Actor.user(user)
        expected = expected_reach(access, actor, seeded.rows)
        with acting_as(connection, user, role=access.role):
            actual = actual_reach(connection, access, seeded.rows)
        assert actual == expected, (
            f"{access.role} acting for {user} on {access.name}: "
            f"{actual.differences(expected)} (+: beyond what the declarations say)"
        )


def move_value(access: Access, row: SeededRow, owner: str, rows: Seeded) -> object | None:
    """A value of the ownership column that makes `row` `owner`'s and puts it in no
    other row's key; None when there is none."""
    owned = access.ownership
    assert owned is not None
    keys = [key for key in unique_keys(access.table) if owned.column in key]
    for value in rows.owner_values(owned, owner):
        moved = {**row.values, owned.column: value}
        clashes = any(
            tuple(moved[c] for c in key) == tuple(other.values[c] for c in key)
            for key in keys
            for other in rows.all(access.table)
            if other is not row
        )
        if not clashes:
            return value
    return None


@pytest.mark.parametrize("access", OWNED, ids=ids(OWNED))
def test_rows_move_between_users_only_as_the_declarations_say(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """Handing a row over (its ownership column set to make it another user's, or the
    user's own): a user may take no other user's row, give none of theirs away, and
    may re-own their own rows only where the declarations let them update."""
    access = access.at(seeded.world)
    owned, rows, table = access.ownership, seeded.rows, access.table
    assert owned is not None
    column = table.columns[owned.column]
    for user in USERS:
        actor = Actor.user(user)
        with acting_as(connection, user, role=access.role):
            for row in rows.all(table):
                for target in USERS:
                    value = move_value(access, row, target, rows)
                    if value is None:
                        continue
                    moved = {**row.values, owned.column: value}
                    expected = access.update(
                        actor, [row.values], [moved], reads=access.key, writes={owned.column}
                    )
                    statement = sa.update(table).where(where_key(table, row.key))
                    actual = trial(connection, statement.values({column: value}))
                    assert actual == expected, (
                        f"{user} moving {row.owner}'s row {row.key} of {access.name} to {target}"
                    )


@parametrize_accesses
def test_blind_writes_reach_only_what_the_declarations_say(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """An UPDATE or DELETE that reads no column (no WHERE, literals only) needs no
    SELECT right, so the SELECT policy does not filter it: its own command's policies
    alone must keep it to the rows they say."""
    access = access.at(seeded.world)
    rows, table = seeded.rows, access.table
    everything = [row.values for row in rows.all(table)]
    owned = access.ownership
    # Setting one value in every row reached would break a key the column is part of.
    movable = owned is not None and not any(owned.column in key for key in unique_keys(table))
    for user in USERS:
        actor = Actor.user(user)
        with acting_as(connection, user, role=access.role):
            if owned is not None and movable:
                for target in USERS:
                    value = rows.owner_value(owned, target)
                    if value is None:
                        continue
                    moved = [{**row, owned.column: value} for row in everything]
                    expected = access.update(
                        actor, everything, moved, reads=(), writes={owned.column}
                    )
                    statement = table.update().values({table.columns[owned.column]: value})
                    assert trial(connection, statement) == expected, (
                        f"{user} handing every row of {access.name} it reaches to {target}"
                    )
            expected = access.delete(actor, everything, reads=())
            assert trial(connection, table.delete()) == expected, (
                f"{user} deleting every row of {access.name} it reaches"
            )


# --- without a verified user ---------------------------------------------------------------


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
    elif nobody in BINDING_WAYS:
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


def ways_for(access: Access, ways: Sequence[str]) -> list[str]:
    """The ways of `ways` open to the role (a role that may not bind a session cannot
    bind a dead one either)."""
    binds = access.role in may_bind_sessions()
    return [way for way in ways if binds or way not in BINDING_WAYS]


def identity_matters(access: Access) -> bool:
    """Whether a policy of the access asks who the transaction is (reads a setting or
    calls a function of the identity): where none does, every way of being nobody is
    the same, and so is any claim."""
    return any(
        call in f"{rule.policy.using or ''} {rule.policy.with_check or ''}"
        for rule in access.rules
        for call in IDENTITY_CALLS
    )


#: (access, way of being nobody): every way where a policy asks who, one elsewhere.
#: The accesses whose policies ask who the transaction is: what a claim could fool.
ASKING = tuple(access for access in ACCESSES if identity_matters(access))
#: (access, way of being nobody without claiming anyone): every such way where a
#: policy asks who, one elsewhere. The ways that claim are the next test's.
NOBODY_CASES = [
    (access, way)
    for access in ACCESSES
    for way in ways_for(
        access,
        [w for w in NOBODY if w not in FORGED_CLAIMS] if access in ASKING else ["never bound"],
    )
]
FORGED_CASES = [(access, way) for access in ASKING for way in FORGED_CLAIMS]


def unrecognised(access: Access, actor: Actor) -> bool:
    """Whether no ownership or sharing policy of the access takes `actor` for a user."""
    owned = [rule for rule in access.rules if isinstance(rule, Owned)]
    shared = [rule.sharing.identity for rule in access.rules if isinstance(rule, Shared)]
    return bool(owned or shared) and (
        all(recognised(rule.identity, actor) is None for rule in owned)
        and all(
            recognised(identity, actor) is None and session_user(identity, actor) is None
            for identity in shared
        )
    )


def reach_without_identity(
    access: Access, nobody: str, seeded: SeededDatabase, connection: Connection
) -> Reach:
    """What a transaction without a live session of its own (`nobody`: the way it is
    nobody) reaches: what the declarations say and, of an owned table, nothing but what
    a trusted job's ``claim_acknowledged`` policy lets a claim reach."""
    actor = NOBODY[nobody]
    expected = expected_reach(access, actor, seeded.rows)
    with acting_as_nobody(connection, nobody, access.role):
        actual = actual_reach(connection, access, seeded.rows)
    assert actual == expected, (
        f"{access.role} without a verified user ({nobody}) on {access.name}: "
        f"{actual.differences(expected)} (+: beyond what the declarations say)"
    )
    if unrecognised(access, actor):
        allowed = expected_reach(access.only_acknowledged(), actor, seeded.rows)
        beyond = actual.facts() - allowed.facts()
        assert not beyond, (
            f"{access.role} without a verified user ({nobody}) on the owned table "
            f"{access.name} {describe(access, beyond, seeded.rows)}, through "
            f"{admitted_by(access, actor, beyond, seeded.rows)}: an owned table's rows are "
            "reachable by their owner alone"
        )
    return actual


@pytest.mark.parametrize(("access", "nobody"), NOBODY_CASES, ids=ids(NOBODY_CASES))
def test_without_a_verified_user(
    access: Access, nobody: str, seeded: SeededDatabase, connection: Connection
) -> None:
    """Without a live session of its own, a transaction reaches what the declarations
    say (of an owned table: nothing). An owned table's rows belong to their owners:
    whatever other policies it has, a transaction its ownership does not recognise
    reaches none of them."""
    reach_without_identity(access.at(seeded.world), nobody, seeded, connection)


def describe(access: Access, facts: set[tuple[str, object]], rows: Seeded) -> str:
    """`facts` (see :meth:`Reach.facts`) in words."""
    named = labels(access, rows)
    seeded = [named[row_text(access, row.values)] for row in rows.all(access.table)]
    said = []
    for what, which in sorted(facts, key=str):
        if what == "reads":
            said.append(f"reads {which}")
        elif what == "inserts":
            said.append(f"inserts a new row for {USERS[int(str(which))]}")
        else:
            said.append(f"{what} {seeded[int(str(which))]}")
    return "; ".join(said)


#: What a failure of a claim says to do.
TRUST_NO_CLAIM = (
    "a policy rests on the claimed user id (app.user_id) without the verified one "
    "(public.verified_user_id()); a trusted job's says claim_acknowledged"
)


@pytest.mark.parametrize(("access", "forged"), FORGED_CASES, ids=ids(FORGED_CASES))
def test_a_forged_claim_grants_nothing_a_transaction_without_identity_has(
    access: Access, forged: str, seeded: SeededDatabase, connection: Connection
) -> None:
    """The claimed user id (``app.user_id``) is the transaction's say-so: any SQL it runs
    may set it. Claiming the victim (by hand, with a forged binding, or left on a pooled
    connection) reaches what the declarations say, and nothing that a transaction that
    binds nothing and claims no one does not (which ``test_without_a_verified_user``
    holds the database to), whichever policy is asked, unless it says
    ``claim_acknowledged`` (a trusted job's)."""
    access = access.at(seeded.world)
    claimed = reach_without_identity(access, forged, seeded, connection)
    actor = NOBODY[forged]
    baseline = expected_reach(access, NO_ONE, seeded.rows)
    allowed = expected_reach(access.only_acknowledged(), actor, seeded.rows)
    gained = claimed.facts() - baseline.facts() - allowed.facts()
    assert not gained, (
        f"on {access.name}, {access.role} claiming {VICTIM} ({forged}) "
        f"{describe(access, gained, seeded.rows)}, which a transaction without identity "
        f"does not, through {admitted_by(access, actor, gained, seeded.rows)}: {TRUST_NO_CLAIM}"
    )


@pytest.mark.parametrize("access", ASKING, ids=ids(ASKING))
def test_a_signed_in_user_gains_nothing_by_also_claiming_another_id(
    access: Access, seeded: SeededDatabase, connection: Connection
) -> None:
    """Signed in as a user, then claiming the next user's id by hand: what is reached is
    what the declarations say, and nothing that the user alone does not reach (which
    ``test_each_user_reaches_what_the_declarations_say`` holds the database to), but
    what ``claim_acknowledged`` policies allow."""
    access = access.at(seeded.world)
    for user in USERS:
        other = others(user)[0]
        actor = Actor(user, other)
        with acting(connection, actor, role=access.role):
            claiming = actual_reach(connection, access, seeded.rows)
        expected = expected_reach(access, actor, seeded.rows)
        assert claiming == expected, (
            f"{access.role} acting for {user} and claiming {other} on {access.name}: "
            f"{claiming.differences(expected)} (+: beyond what the declarations say)"
        )
        alone = expected_reach(access, Actor.user(user), seeded.rows)
        allowed = expected_reach(access.only_acknowledged(), actor, seeded.rows)
        gained = claiming.facts() - alone.facts() - allowed.facts()
        assert not gained, (
            f"on {access.name}, {user} signed in and claiming {other} "
            f"{describe(access, gained, seeded.rows)} beyond what {user} alone does, through "
            f"{admitted_by(access, actor, gained, seeded.rows)}: {TRUST_NO_CLAIM}"
        )


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


def explainable(access: Access) -> dict[str, sa.ClauseElement]:
    table = access.table
    column = table.columns[touched(access)]
    statements: dict[str, sa.ClauseElement] = {
        "SELECT": sa.select(*access.readable_columns()),
        "UPDATE": sa.update(table).where(sa.true()).values({column: column}),
        "DELETE": sa.delete(table),
    }
    return {command: s for command, s in statements.items() if command in access.commands}


def asks_who(access: Access, command: str) -> bool:
    """Whether a policy of `command` asks who the current user is."""
    return any(
        call in f"{rule.policy.using or ''} {rule.policy.with_check or ''}"
        for rule in (*access.permissive(command), *access.restrictive(command))
        for call in IDENTITY_CALLS
    )


EXPLAINED = [
    (access, command)
    for access in ACCESSES
    if access.row_security
    for command in explainable(access)
    if asks_who(access, command)
]


@pytest.mark.parametrize(("access", "command"), EXPLAINED, ids=ids(EXPLAINED))
def test_current_user_is_an_initplan_not_a_per_row_call(
    access: Access, command: str, connection: Connection
) -> None:
    """A policy finds the current user once per statement (an InitPlan), never per row,
    and a subquery it runs per row reads through an index (sequential scans priced out:
    on these few rows the planner would rightly prefer one)."""
    statement = explainable(access)[command]
    sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
    with acting_as(connection, USERS[0], role=access.role):
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
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
    # A per-row subplan (the WITH CHECK of a row owned through a parent row, a policy's
    # correlated subquery) probes through an index, never a scan.
    for subplan in (n for n in nodes if n.get("Parent Relationship") == "SubPlan"):
        # An InitPlan inside it (the parent's own policy, deeper down a chain of
        # parents) runs once per statement, not per row.
        scans = [
            n["Node Type"]
            for n in plan_nodes(subplan, into_initplans=False)
            if "Scan" in n["Node Type"]
        ]
        assert scans, subplan
        assert all(scan.startswith(("Index", "Bitmap")) for scan in scans), (
            f"a policy of {access.name} scans a table per row: {subplan}"
        )
    per_row = [
        (node["Node Type"], key, node[key])
        for node in nodes
        if node.get("Parent Relationship") != "InitPlan"
        for key in PER_ROW
        if any(call in str(node.get(key, "")) for call in IDENTITY_CALLS)
    ]
    assert per_row == [], f"a policy of {access.name} asks who the user is per row"
    if any(isinstance(rule, Owned) for rule in access.permissive(command)):
        owned = access.ownership
        assert owned is not None
        # The scan compares the owner column with an InitPlan's result: $0 (or $1...)
        # up to PostgreSQL 17, (InitPlan 1).col1 from 18 on.
        conditions = [
            str(node[key])
            for node in nodes
            for key in PER_ROW
            if key in node and owned.column in str(node[key])
        ]
        assert any(re.search(r"\$\d|\(InitPlan \d+\)", c) for c in conditions), conditions


def owners_alone(access: Access, command: str = "SELECT") -> bool:
    """Whether every permissive policy of `command` matches rows to their owner, or to
    who the user is to the shared row they are for."""
    permissive = access.permissive(command)
    return bool(permissive) and all(isinstance(rule, Owned | Shared) for rule in permissive)


READABLE = [
    access
    for access in ACCESSES
    if access.row_security and "SELECT" in access.commands and owners_alone(access)
]


@pytest.mark.parametrize("access", READABLE, ids=ids(READABLE))
def test_a_users_rows_are_found_through_an_index(access: Access, connection: Connection) -> None:
    """Listing a user's rows, the policy alone filtering, can be served by an index: with
    sequential scans made prohibitively expensive, the planner still finds another way
    (on these few rows it would rightly prefer a sequential scan otherwise). A table
    whose owner column no index leads would still be read whole, for every user.

    Tables whose permissive policies read more than the owner are the catalog lint's
    (``policy-column-index``), where a model acknowledges a column left unindexed."""
    with acting_as(connection, USERS[0], role=access.role):
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
        sql = str(sa.select(*access.readable_columns()).compile(connection))
        raw = connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {sql}").scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    scans = [
        node["Node Type"]
        for node in plan_nodes(document[0]["Plan"])
        if node.get("Relation Name") == access.name
    ]
    assert scans, document
    assert "Seq Scan" not in scans, f"{access.name} is read whole to find a user's rows: {scans}"


# --- EXPLAIN ANALYZE as a side channel ------------------------------------------------
#
# EXPLAIN ANALYZE reports, per plan node, how many rows it read and how many a filter
# removed, including rows the policies hide: with an index that serves the attacker's
# condition and a policy applied as a filter after it, the counts tell whether hidden
# rows hold a value (how an e-mail address was once recovered character by character).
# Every column a role may read is probed with a value hidden rows hold, by equality and
# as a one-value range, letting the planner choose and with sequential scans forbidden.

#: What a plan node reports about the rows it read.
READ_COUNTERS = (
    "Actual Rows",
    "Rows Removed by Filter",
    "Rows Removed by Index Recheck",
    "Heap Fetches",
    "Exact Heap Blocks",
    "Lossy Heap Blocks",
)

#: Ways the planner may be steered: free, or with sequential scans made prohibitive.
PLANNER = ("free", "no sequential scans")


def steer(connection: Connection, planner: str) -> None:
    if planner == "no sequential scans":
        connection.exec_driver_sql("SET LOCAL enable_seqscan = off")


def scans_read(plan: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """What each scan of an EXPLAIN ANALYZE plan read, outside the InitPlans that find
    the current user (the same for every probe)."""

    def scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if node.get("Parent Relationship") == "InitPlan":
            return
        if "Scan" in node["Node Type"]:
            yield node
        for child in node.get("Plans", []):
            yield from scans(child)

    return [
        (node["Node Type"], tuple(int(node.get(counter, 0)) for counter in READ_COUNTERS))
        for node in scans(plan)
    ]


def _plan(raw: Any) -> dict[str, Any]:
    document = raw if isinstance(raw, list) else json.loads(raw)
    return dict(document[0]["Plan"])


def read_counts(
    connection: Connection, access: Access, condition: sa.ColumnElement[bool]
) -> list[tuple[str, tuple[int, ...]]]:
    """What EXPLAIN ANALYZE says each scan of a query on `condition` read."""
    statement = sa.select(*access.readable_columns()[:1]).where(condition)
    sql = str(statement.compile(connection, compile_kwargs={"literal_binds": True}))
    raw = connection.exec_driver_sql(
        f"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF, FORMAT JSON) {sql}"
    ).scalar_one()
    return scans_read(_plan(raw))


def probe_conditions(column: sa.Column[Any], value: object) -> list[sa.ColumnElement[bool]]:
    return [column == value, column.between(value, value)]


def victims_values(access: Access, rows: Seeded) -> list[tuple[sa.Column[Any], object]]:
    """(column, a value of it in one of the victim's rows) for every column the role may
    read, where the victim's rows hold a value there."""
    found = []
    for column in access.readable_columns():
        values = [row.values[column.name] for row in rows.of(access.table, VICTIM)]
        value = next((v for v in values if v is not None), None)
        if value is not None:
            found.append((column, value))
    return found


def gated(access: Access, actor: Actor) -> bool:
    """Whether every permissive SELECT policy matches rows to their owner, and PostgreSQL
    skips the scan for `actor`, whom none of them recognises (a One-Time Filter)."""
    permissive = access.permissive("SELECT")
    return (
        owners_alone(access)
        and all(isinstance(rule, Owned) and rule.gates() for rule in permissive)
        and unrecognised(access, actor)
    )


GATED = [
    (access, way)
    for access, way in [*NOBODY_CASES, *FORGED_CASES]
    if access.row_security and "SELECT" in access.commands and gated(access, NOBODY[way])
]


@pytest.mark.parametrize(("access", "nobody"), GATED, ids=ids(GATED))
def test_nobody_reads_no_row_even_for_explain_analyze(
    access: Access, nobody: str, seeded: SeededDatabase, connection: Connection
) -> None:
    """Without a verified user, no scan of a table its owners alone may read reads a
    single row, whatever the condition: there is nothing for EXPLAIN ANALYZE to count."""
    checked = victims_values(access, seeded.rows)
    assert checked, f"{access.name}: no column {access.role} may read holds a value to probe"
    for planner in PLANNER:
        with acting_as_nobody(connection, nobody, access.role):
            steer(connection, planner)
            for column, value in checked:
                for condition in probe_conditions(column, value):
                    counts = read_counts(connection, access, condition)
                    read_anything = [(node, c) for node, c in counts if any(c)]
                    assert read_anything == [], (
                        f"a transaction without a verified user reads rows of {access.name} "
                        f"({nobody}, {planner}: {condition})"
                    )


def unique_alone(access: Access, column: sa.Column[Any]) -> bool:
    """Whether `column` alone is the primary key or unique."""
    return (column.name,) in unique_keys(access.table)


def looked_up_by_user(access: Access, column: sa.Column[Any]) -> bool:
    """Whether `column` is the one the sharing functions find a user's rows by: a shared
    table's owner, a membership table's member. Their index serves a signed-in user's
    condition on it ahead of the policies' filter, and no policy can gate it as
    ``owned_by`` gates an owner column (the rows a member reads have other owners): how
    many rows a given user owns or memberships he holds is the residual docs/api.md
    states, under "What PostgreSQL does not let anyone prevent"."""
    declaration = declared(access.table)
    if declaration is None:
        return False
    if declaration.sharing is not None:
        return column.name == declaration.sharing.owner
    if declaration.membership is not None:
        return column.name == declaration.membership.user
    return False


_probe_numbers = itertools.count(1)


def generic_read(
    connection: Connection, access: Access, column: sa.Column[Any], value: object, *, range_: bool
) -> tuple[int, ...]:
    """Each counter of what EXPLAIN ANALYZE says the scans read, summed, for a query on
    `column` = `value` (or BETWEEN `value` AND `value`) run as one generic plan, the
    same whatever the value: what the counts differ by is the data alone, not the
    planner's statistics (which see every row, as PostgreSQL shows anyone)."""
    quote = connection.dialect.identifier_preparer.quote
    name = f"probe_{next(_probe_numbers)}"
    first = quote(access.readable_columns()[0].name)
    where = f"{quote(column.name)} BETWEEN $1 AND $2" if range_ else f"{quote(column.name)} = $1"
    literal = str(
        sa.literal(value, column.type).compile(connection, compile_kwargs={"literal_binds": True})
    )
    arguments = f"{literal}, {literal}" if range_ else literal
    # A plan made without the value: the probes of one column run the same one.
    connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
    connection.exec_driver_sql(
        f"PREPARE {name} AS SELECT {first} FROM {quote(access.name)} WHERE {where}"
    )
    try:
        raw = connection.exec_driver_sql(
            f"EXPLAIN (ANALYZE, TIMING OFF, SUMMARY OFF, FORMAT JSON) EXECUTE {name}({arguments})"
        ).scalar_one()
    finally:
        connection.exec_driver_sql(f"DEALLOCATE {name}")
    plan = _plan(raw)
    assert "$1" in json.dumps(plan), f"not a generic plan: {plan}"
    counts = [c for _, c in scans_read(plan)]
    return tuple(sum(column) for column in zip(*counts, strict=True)) if counts else ()


#: Who probes: a signed-in user who owns nothing, nobody (for tables whose scans a
#: missing identity does not skip; the others are proven above), and, of a table of
#: shared rows, every user, each a member of some and hidden from others.
PROBED = [
    (access, prober)
    for access in ACCESSES
    if access.row_security and "SELECT" in access.commands
    for prober in [
        "signed in",
        *(
            way
            for candidate, way in [*NOBODY_CASES, *FORGED_CASES]
            if candidate is access and not gated(access, NOBODY[way])
        ),
        *(USERS if any(isinstance(rule, Shared) for rule in access.rules) else ()),
    ]
]


#: What a failure without identity says to do.
HOW_TO_GATE = (
    ": a permissive policy that does not match rows to their owner lets the scan run for "
    "a transaction without identity; gate the table on a proven identity with a "
    "restrictive policy, as owned_through's derived ones do: <table>.tableoid = <oid> AND "
    "<table>.tableoid = (SELECT <oid> WHERE IDENTITY.proven)"
)


@contextmanager
def acting_as_prober(connection: Connection, prober: str, role: str) -> Iterator[Connection]:
    if prober in ("signed in", *USERS):
        with acting_as(connection, OUTSIDER if prober == "signed in" else prober, role=role):
            yield connection
    else:
        with acting_as_nobody(connection, prober, role):
            yield connection


@pytest.mark.parametrize(("access", "prober"), PROBED, ids=ids(PROBED))
def test_explain_analyze_counts_nothing_hidden(
    access: Access, prober: str, seeded: SeededDatabase, connection: Connection
) -> None:
    """A query on a value only hidden rows hold reads, by EXPLAIN ANALYZE's counts,
    exactly what it reads for a value no row holds: whatever the plan, the counts say
    nothing of rows the prober may not see. What is visible is what the prober's own
    SELECT returns.

    Except for a column that alone is a key: whether a key value exists is visible
    anyway (an INSERT with it fails on the unique index), and todo ids are random."""
    rows = seeded.rows
    readable = access.readable_columns()
    table_rows = sorted(rows.all(access.table), key=lambda row: row.owner != VICTIM)
    for planner in PLANNER:
        with acting_as_prober(connection, prober, access.role):
            seen = read(connection, sa.select(*readable))
            assert seen != REFUSED
            steer(connection, planner)
            for index, column in enumerate(readable):
                if unique_alone(access, column):
                    continue
                if prober in ("signed in", *USERS) and looked_up_by_user(access, column):
                    continue
                visible = {repr(row[index]) for row in seen}
                held = [row.values[column.name] for row in table_rows]
                hidden = next((v for v in held if v is not None and repr(v) not in visible), None)
                absent = absent_value(column, held)
                if hidden is None or absent is None:
                    continue  # nothing hidden to learn, or no value to compare with
                leak = (
                    f"EXPLAIN ANALYZE counts rows of {access.name} hidden from {access.role} "
                    f"({prober}, {planner}) by {column.name} = {hidden!r}: an index serves "
                    "the condition ahead of the policies' filter"
                    + ("" if prober in ("signed in", *USERS) else HOW_TO_GATE)
                )
                for range_ in (False, True):
                    assert generic_read(
                        connection, access, column, hidden, range_=range_
                    ) == generic_read(connection, access, column, absent, range_=range_), leak


# --- privileges per column, and the functions the identity runs ------------------------

COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")


def declared_column_privileges(table: sa.Table, role: str) -> set[tuple[str, str]]:
    security = row_security(table)
    held: set[tuple[str, str]] = set()
    roles = acts_as(role)
    for grant in security.grants if security else ():
        if grant.role not in roles:
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
