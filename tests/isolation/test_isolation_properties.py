"""Property: whatever sequence of requests arrives, todo_app does to the todo table
exactly what the declarations say it may (:mod:`tests.support.rls_oracle`).

Hypothesis draws sequences of (acting user, operation); each runs as the API runs it,
in a transaction of its own as todo_app bound to the user's live session (or to
nobody), and is compared with a plain Python model of the table whose every outcome
the oracle decides: the rows affected, the rows visible, a refusal (SQLSTATE 42501: no
privilege, or a row a WITH CHECK policy rejects), and, after every step, the whole
table as the owner (who bypasses row security) sees it.

It models the todo table itself, by name: the todo list is what the service is for,
and the model's operations are the todo API's. Its columns are read from the model
(the key, the owner column its declaration names, the first text column a user
writes), every other column a new todo needs is filled as the seeded rows are
(``tests/support/rls_helpers.py``), and every value it writes keeps the table's keys and
UNIQUE constraints. Every other table is covered by the derived tests in
``tests/isolation/test_isolation.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, assert_never

import pytest
import sqlalchemy as sa
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy.engine import URL, Connection

from models import metadata
from models.security import APP_ROLE
from tests.conftest import database_copy, new_engine
from tests.support.rls_helpers import (
    OUTSIDER,
    REFUSED,
    USERS,
    Actor,
    NoRowFactoryError,
    Refused,
    Seeded,
    SeededRow,
    Sharing,
    acting_as,
    attempt,
    insert,
    level_name,
    new_row,
    read,
    seed,
    sharing_of,
    unique_keys,
    where_key,
)
from tests.support.rls_oracle import Access, Evaluator, World, access

#: Who acts: a user, nobody (``app.user_id`` never set in the session) or the empty string.
NOBODY = None
EMPTY = ""
ACTORS: tuple[str | None, ...] = (*USERS, NOBODY, EMPTY)

TODO = metadata.tables["todo"]
TODOS = access(APP_ROLE, TODO)


def _text_column(todos: Access) -> str | None:
    """The first text column a user writes: not the key, not the owner, no reference."""
    owned = todos.ownership
    for column in todos.table.columns:
        type_ = column.type
        if isinstance(type_, sa.types.TypeDecorator):
            type_ = type_.impl_instance
        if (
            isinstance(type_, sa.String)
            and not isinstance(type_, sa.Enum)
            and not column.primary_key
            and not column.foreign_keys
            and (owned is None or column.name != owned.column)
            and column.name in todos.updatable_columns()
        ):
            return column.name
    return None


def _shape(todos: Access) -> tuple[str, str, str] | str:
    """(key, owner, text) column names, or why the todo table does not fit the model."""
    owned = todos.ownership
    key = [column.name for column in todos.table.primary_key.columns]
    text = _text_column(todos)
    if owned is None or owned.parent is not None:
        return "todo is not owned by a column of its own (owned_by) for todo_app"
    if len(key) != 1:
        return f"todo's primary key is {key}, not one column"
    if text is None:
        return "todo has no text column todo_app may write"
    return key[0], owned.column, text


SHAPE = _shape(TODOS)
KEY, OWNER, TEXT = SHAPE if isinstance(SHAPE, tuple) else ("id", "user_id", "title")
#: Whether the text column is part of a key or UNIQUE constraint: a statement that
#: writes one text into every row it reaches would then break it.
TEXT_IS_UNIQUE = any(TEXT in key for key in unique_keys(TODO))

#: A todo that never exists, for references when no todo has been tried yet.
NO_TODO = uuid.UUID(int=0)


@dataclass(frozen=True)
class InsertOwn:
    """A todo for the acting user (for nobody: with the id the setting holds, NULL or '')."""


@dataclass(frozen=True)
class InsertForOther:
    """A todo for another user: the `offset`-th after the actor (or among USERS for nobody)."""

    offset: int


@dataclass(frozen=True)
class SelectAll:
    """Every todo the actor can see."""


@dataclass(frozen=True)
class Ref:
    """Which todo an operation names: the `index`-th of the actor's own todos, of other
    users' todos, or of every key ever tried (made or refused, alive or deleted). The
    hint only steers the choice towards interesting rows; the oracle alone decides
    what must happen to the row picked."""

    whose: Literal["mine", "others", "any"]
    index: int


@dataclass(frozen=True)
class UpdateTitle:
    todo: Ref


@dataclass(frozen=True)
class Move:
    """Hand a todo over to user `to` (possibly the actor)."""

    todo: Ref
    to: str


@dataclass(frozen=True)
class Delete:
    todo: Ref


@dataclass(frozen=True)
class RetitleAll:
    """Retitle every todo the actor reaches: no WHERE, so no SELECT right is needed and
    only the UPDATE policy stands between the statement and every row."""


@dataclass(frozen=True)
class MoveAll:
    """Hand every todo the actor reaches over to user `to`, again with no WHERE."""

    to: str


Operation = (
    InsertOwn | InsertForOther | SelectAll | UpdateTitle | Move | Delete | RetitleAll | MoveAll
)
Outcome = int | Refused | list[tuple[Any, ...]]

# "mine" twice as likely: a user's own rows are where allowed and refused changes meet.
refs = st.builds(
    Ref, st.sampled_from(["mine", "mine", "others", "any"]), st.integers(min_value=0, max_value=30)
)
operations: st.SearchStrategy[Operation] = st.one_of(
    st.just(InsertOwn()),
    st.builds(InsertForOther, st.sampled_from([1, 2])),
    st.just(SelectAll()),
    st.builds(UpdateTitle, refs),
    st.builds(Move, refs, st.sampled_from(USERS)),
    st.builds(Delete, refs),
    st.just(RetitleAll()),
    st.builds(MoveAll, st.sampled_from(USERS)),
)
Step = tuple[str | None, Operation]
# Runs of requests by one actor, as a client makes them: a user then mostly meets
# their own rows again (retitle, move, delete), not only other users' or none.
steps: st.SearchStrategy[list[Step]] = st.lists(
    st.tuples(st.sampled_from(ACTORS), st.lists(operations, min_size=1, max_size=6)),
    min_size=2,
    max_size=8,
).map(lambda runs: [(actor, operation) for actor, run in runs for operation in run])


@dataclass
class Model:
    """The todo table as it should be, and the oracle that says what each statement
    does to it."""

    todos: Access
    seeded: Seeded
    #: key -> every column's value: the table as it should be.
    rows: dict[Any, dict[str, object]] = field(default_factory=dict)
    #: Every key ever tried, made or not, deleted or not: what references pick from.
    tried: list[Any] = field(default_factory=list)

    def resolve(self, actor: str | None, ref: Ref) -> Any:
        if ref.whose == "any":
            candidates = self.tried
        else:
            mine = ref.whose == "mine"
            candidates = sorted(
                (key for key, row in self.rows.items() if (row[OWNER] == actor) == mine), key=str
            )
        candidates = candidates or self.tried
        return candidates[ref.index % len(candidates)] if candidates else NO_TODO

    def picked(self, key: Any) -> list[dict[str, object]]:
        return [self.rows[key]] if key in self.rows else []

    def everything(self) -> list[dict[str, object]]:
        return list(self.rows.values())

    def triples(self, rows: list[dict[str, object]]) -> list[tuple[Any, ...]]:
        return sorted(((row[KEY], row[OWNER], row[TEXT]) for row in rows), key=str)

    def visible(self, actor: Actor) -> Outcome:
        rows = self.everything()
        seen = self.todos.select(actor, rows, (KEY, OWNER, TEXT))
        return seen if seen == REFUSED else self.triples([rows[n] for n in seen])


@dataclass
class Database:
    """Two sessions on one database at head: `main` (the owner's checks, users and the
    empty string) and `fresh`, used only by nobody, which never sets app.user_id."""

    main: Connection
    fresh: Connection
    seeded: Seeded
    world: World


@pytest.fixture(scope="module")
def db(admin_url: URL, head_template: str) -> Iterator[Database]:
    with database_copy(admin_url, head_template, "properties") as url:
        engine = new_engine(url)
        try:
            with engine.connect() as main, engine.connect() as fresh:
                with main.begin():
                    rows = seed(main)
                yield Database(main, fresh, rows, World(rows, Evaluator(engine)))
        finally:
            engine.dispose()


def other_user(actor: str | None, offset: int) -> str:
    start = USERS.index(actor) if actor in USERS else 0
    return USERS[(start + offset) % len(USERS)]


def new_todo(model: Model, owner: str | None, title: str, step: int) -> dict[str, object]:
    """A todo of `owner`'s (None or '' for nobody: a row of nobody's), every column it
    needs filled as the seeded rows are, its key chosen here so the model knows it."""
    # The rows to keep clear of, in any key the table has, are the model's.
    todos = [SeededRow(str(r[OWNER]), {KEY: r[KEY]}, r) for r in model.rows.values()]
    rows = Seeded({**model.seeded.rows, TODO.name: todos})
    row = new_row(TODO, owner or USERS[0], 1_000 + step, rows)
    row[OWNER] = owner
    row[TEXT] = title
    if KEY not in row:
        key_type = TODO.columns[KEY].type
        row[KEY] = uuid.uuid4() if isinstance(key_type, sa.Uuid) else 1_000_000 + step
    return row


#: What a statement that went as the oracle said does to the model: given the table
#: as stored after it (for what only the database knows: defaults, generated texts).
Change = Callable[[dict[Any, dict[str, object]]], None]


def write(
    model: Model, actor: str | None, operation: Operation, title: str, step: int
) -> tuple[sa.Executable, Outcome, Change]:
    """The statement that carries out a writing `operation`, what the oracle expects of
    it, and what it does to the model when it happens so."""
    who = Actor.user(actor)
    todos, c, rows = model.todos, TODO.c, model.rows
    statement: sa.Executable
    match operation:
        case InsertOwn() | InsertForOther():
            owner = (
                other_user(actor, operation.offset)
                if isinstance(operation, InsertForOther)
                else actor
            )
            row = new_todo(model, owner, title, step)
            model.tried.append(row[KEY])
            statement = sa.insert(TODO).values({TODO.columns[k]: v for k, v in row.items()})

            def inserted(now: dict[Any, dict[str, object]]) -> None:
                # Its defaults as stored; what the model wrote, as written.
                rows[row[KEY]] = {**now[row[KEY]], OWNER: owner, TEXT: title}

            return statement, todos.insert(who, row), inserted
        case UpdateTitle(todo=ref):
            key = model.resolve(actor, ref)
            picked = model.picked(key)
            changed = [{**row, TEXT: title} for row in picked]
            statement = sa.update(TODO).where(c[KEY] == key).values({c[TEXT]: title})
            expected = todos.update(who, picked, changed, reads={KEY}, writes={TEXT})
            return statement, expected, lambda now: rows[key].update({TEXT: title})
        case Move(todo=ref, to=to):
            key = model.resolve(actor, ref)
            picked = model.picked(key)
            changed = [{**row, OWNER: to} for row in picked]
            statement = sa.update(TODO).where(c[KEY] == key).values({c[OWNER]: to})
            expected = todos.update(who, picked, changed, reads={KEY}, writes={OWNER})
            return statement, expected, lambda now: rows[key].update({OWNER: to})
        case Delete(todo=ref):
            key = model.resolve(actor, ref)
            statement = sa.delete(TODO).where(c[KEY] == key)

            def deleted(now: dict[Any, dict[str, object]]) -> None:
                del rows[key]

            return statement, todos.delete(who, model.picked(key), reads={KEY}), deleted
        case RetitleAll() | MoveAll():
            return write_all(model, who, operation, title)
        case SelectAll():
            raise AssertionError("SelectAll writes nothing")
        case _:
            assert_never(operation)


def write_all(
    model: Model, who: Actor, operation: RetitleAll | MoveAll, title: str
) -> tuple[sa.Executable, Outcome, Change]:
    """:func:`write` for the statements without WHERE."""
    todos, c, rows = model.todos, TODO.c, model.rows
    everything = model.everything()
    reached = [
        row[KEY]
        for row, hit in zip(everything, todos.visible(who, everything, "UPDATE"), strict=True)
        if hit
    ]
    match operation:
        case RetitleAll():
            if TEXT_IS_UNIQUE:
                # One text for every row would break a UNIQUE constraint the text column
                # is part of: each row gets its own (a function of no column, so the
                # statement still reads none), which the model reads back.
                value: Any = sa.literal(f"{title} ") + sa.cast(sa.func.gen_random_uuid(), sa.Text)
                changed = [
                    {**row, TEXT: f"{title} {uuid.UUID(int=n)}"} for n, row in enumerate(everything)
                ]
            else:
                value = title
                changed = [{**row, TEXT: title} for row in everything]
            expected = todos.update(who, everything, changed, reads=(), writes={TEXT})

            def retitled(now: dict[Any, dict[str, object]]) -> None:
                for key in reached:
                    text = now[key][TEXT] if TEXT_IS_UNIQUE else title
                    assert str(text).startswith(title), (key, text)
                    rows[key][TEXT] = text

            return sa.update(TODO).values({c[TEXT]: value}), expected, retitled
        case MoveAll(to=to):
            changed = [{**row, OWNER: to} for row in everything]
            expected = todos.update(who, everything, changed, reads=(), writes={OWNER})

            def moved(now: dict[Any, dict[str, object]]) -> None:
                for key in reached:
                    rows[key][OWNER] = to

            return sa.update(TODO).values({c[OWNER]: to}), expected, moved
        case _:
            assert_never(operation)


def stored(db: Database) -> dict[Any, dict[str, object]]:
    """The todo table as the owner sees it (every row, row security bypassed)."""
    with db.main.begin():
        return {row[KEY]: dict(row) for row in db.main.execute(sa.select(TODO)).mappings()}


def run(
    connection: Connection, model: Model, actor: str | None, operation: Operation, step: int
) -> tuple[Outcome, Outcome, Change | None]:
    """Run `operation` as `actor` on the database and judge it by the model's oracle:
    (actual, expected, what it does to the model)."""
    if isinstance(operation, SelectAll):
        c = TODO.c
        rows = read(connection, sa.select(c[KEY], c[OWNER], c[TEXT]))
        seen = rows if rows == REFUSED else sorted(rows, key=str)
        return seen, model.visible(Actor.user(actor)), None
    statement, expected, change = write(model, actor, operation, f"title {step}", step)
    return attempt(connection, statement), expected, change


@pytest.mark.skipif(not isinstance(SHAPE, tuple), reason=f"the model does not fit: {SHAPE}")
@settings(max_examples=60, deadline=None)
@given(steps=steps)
def test_todo_app_does_what_the_declarations_say(db: Database, steps: list[Step]) -> None:
    with db.main.begin():
        # CASCADE: whatever references todo (a link table) goes with it.
        db.main.exec_driver_sql(
            f"TRUNCATE {db.main.dialect.identifier_preparer.quote(TODO.name)} CASCADE"
        )
    model = Model(TODOS.at(db.world), db.seeded)
    for step, (actor, operation) in enumerate(steps):
        connection = db.fresh if actor is NOBODY else db.main
        with acting_as(connection, actor, commit=True):
            setting = connection.execute(
                sa.text("SELECT current_setting('app.user_id', true)")
            ).scalar()
            assert setting == actor, "nobody acts on a session that never set app.user_id"
            actual, expected, change = run(connection, model, actor, operation, step)
        note(f"step {step}: {actor!r} {operation} -> {actual!r}")
        event(f"{type(operation).__name__}: {'rows' if isinstance(actual, list) else actual}")
        assert actual == expected, f"step {step}: {actor!r} {operation}"
        now = stored(db)
        if change is not None and actual not in (0, REFUSED):
            change(now)
        table = model.triples(list(now.values()))
        assert table == model.triples(model.everything()), (
            f"step {step}: the table is not as the model says"
        )


# --- sharing ---------------------------------------------------------------------------
#
# The first shared table a role reaches and its membership table, as any schema declares
# them: the owner and managers add members, change their levels and remove them (as the
# API would, through the members table), members leave, read the members and the shared
# rows and rename them; every step judged by the oracle, every table compared after it.

SHARING = next(
    (
        found
        for table in metadata.sorted_tables
        if (found := sharing_of(table)) is not None and found.table == table.name
    ),
    None,
)
#: Who acts on shared rows: every signed-in user, each of several kinds, and nobody.
SHARERS: tuple[str | None, ...] = (*USERS, OUTSIDER, NOBODY)


@dataclass(frozen=True)
class AddMember:
    shared: int
    member: int
    level: int


@dataclass(frozen=True)
class SetLevel:
    shared: int
    member: int
    level: int


@dataclass(frozen=True)
class RemoveMember:
    shared: int
    member: int


@dataclass(frozen=True)
class ReadMembers:
    pass


@dataclass(frozen=True)
class ReadShared:
    pass


@dataclass(frozen=True)
class Rename:
    shared: int


SharingStep = AddMember | SetLevel | RemoveMember | ReadMembers | ReadShared | Rename
small = st.integers(min_value=0, max_value=20)
sharing_steps: st.SearchStrategy[list[tuple[str | None, SharingStep]]] = st.lists(
    st.tuples(
        st.sampled_from(SHARERS),
        st.one_of(
            st.builds(AddMember, small, small, small),
            st.builds(SetLevel, small, small, small),
            st.builds(RemoveMember, small, small),
            st.just(ReadMembers()),
            st.just(ReadShared()),
            st.builds(Rename, small),
        ),
    ),
    min_size=3,
    max_size=25,
)


def attempt_state(connection: Connection, statement: sa.Executable) -> int | Refused | str:
    """:func:`attempt`, any other error as its SQLSTATE (a member added twice)."""
    try:
        return attempt(connection, statement)
    except sa.exc.DBAPIError as error:
        return str(getattr(error.orig, "sqlstate", error))


@dataclass
class Shares:
    """The shared and membership tables as they should be, in a world the oracle reads."""

    shared: Sharing
    world: World
    shared_access: Access
    members_access: Access
    text: str

    @property
    def rows(self) -> Seeded:
        return self.world.seeded

    def keys(self) -> list[Any]:
        return [row.values[self.shared.key] for row in self.rows.all(self.shared.table)]

    def members(self) -> list[SeededRow]:
        return self.rows.all(self.shared.members)

    def member_triples(self, rows: list[dict[str, object]]) -> list[tuple[Any, ...]]:
        s = self.shared
        return sorted(
            ((r[s.shared_column], r[s.user_column], level_name(r[s.level_column])) for r in rows),
            key=str,
        )

    def membership(self, key: Any, user: str) -> SeededRow | None:
        s = self.shared
        return next(
            (
                row
                for row in self.members()
                if row.values[s.shared_column] == key and row.values[s.user_column] == user
            ),
            None,
        )


def stored_shares(db: Database, shares: Shares) -> tuple[list[tuple[Any, ...]], list[Any]]:
    s = shares.shared
    members, shared = metadata.tables[s.members], metadata.tables[s.table]
    with db.main.begin():
        rows = [dict(r) for r in db.main.execute(sa.select(members)).mappings()]
        texts = db.main.execute(
            sa.select(shared.c[s.key], shared.c[shares.text]).order_by(shared.c[s.key])
        ).all()
    return shares.member_triples(rows), [tuple(t) for t in texts]


def reset_shares(db: Database, shared: Sharing) -> None:
    """The shared and membership tables as seeded, behind the role's back."""
    members, table = metadata.tables[shared.members], metadata.tables[shared.table]
    with db.main.begin():
        db.main.execute(sa.delete(members))
        for row in db.seeded.all(members):
            db.main.execute(insert(members, row.values))
        for row in db.seeded.all(table):
            db.main.execute(sa.update(table).where(where_key(table, row.key)).values(row.values))


def membership_template(members: sa.Table, shares: Shares, n: int) -> dict[str, object]:
    """A row of the membership table whose other columns are filled as seeding fills
    them; the step then names the shared row, the member and the level."""
    try:
        return new_row(members, USERS[0], 20_000 + n, shares.rows)
    except NoRowFactoryError:
        # Every user is in every row it may join: any membership is the template.
        return dict(shares.rows.rows[members.name][0].values)


def sharing_step(
    connection: Connection, shares: Shares, actor: str | None, step: SharingStep, n: int
) -> tuple[object, object, Callable[[], None] | None]:
    """Run `step` as `actor`: (actual, expected by the oracle, what it does to the model)."""
    s, who = shares.shared, Actor.user(actor)
    expected: object
    members, table = metadata.tables[s.members], metadata.tables[s.table]
    keys, users = shares.keys(), [*USERS, OUTSIDER]
    mine = shares.members_access
    if isinstance(step, ReadMembers):
        found = read(
            connection,
            sa.select(*(members.c[c] for c in (s.shared_column, s.user_column, s.level_column))),
        )
        everything = [row.values for row in shares.members()]
        seen = mine.select(who, everything, (s.shared_column, s.user_column, s.level_column))
        expected = seen if seen == REFUSED else shares.member_triples([everything[i] for i in seen])
        actual = (
            found
            if found == REFUSED
            else shares.member_triples(
                [
                    dict(zip((s.shared_column, s.user_column, s.level_column), r, strict=True))
                    for r in found
                ]
            )
        )
        return actual, expected, None
    if isinstance(step, ReadShared):
        found = read(connection, sa.select(table.c[s.key], table.c[shares.text]))
        everything = [row.values for row in shares.rows.all(s.table)]
        seen = shares.shared_access.select(who, everything, (s.key, shares.text))
        expected = (
            seen
            if seen == REFUSED
            else sorted(((everything[i][s.key], everything[i][shares.text]) for i in seen), key=str)
        )
        actual = found if found == REFUSED else sorted(found, key=str)
        return actual, expected, None
    if isinstance(step, Rename):
        key = keys[step.shared % len(keys)]
        (row,) = [r for r in shares.rows.all(s.table) if r.values[s.key] == key]
        title = f"renamed {n}"
        statement = sa.update(table).where(table.c[s.key] == key).values({shares.text: title})
        expected = shares.shared_access.update(
            who,
            [row.values],
            [{**row.values, shares.text: title}],
            reads={s.key},
            writes={shares.text},
        )
        return (
            attempt_state(connection, statement),
            expected,
            lambda: row.values.update({shares.text: title}),
        )
    key, member = keys[step.shared % len(keys)], users[step.member % len(users)]
    existing = shares.membership(key, member)
    picked = [existing.values] if existing else []
    where = sa.and_(members.c[s.shared_column] == key, members.c[s.user_column] == member)
    reads = {s.shared_column, s.user_column}
    if isinstance(step, AddMember):
        level = s.levels[step.level % len(s.levels)]
        new = membership_template(members, shares, n)
        new.update({s.shared_column: key, s.user_column: member, s.level_column: level})
        expected = mine.insert(who, new)
        if expected == 1 and existing is not None:
            expected = "23505"  # the policies let it in; the key is taken

        def added() -> None:
            shares.rows.rows[s.members].append(SeededRow(None, {}, new))

        return attempt_state(connection, insert(members, new)), expected, added
    if isinstance(step, SetLevel):
        level = s.levels[step.level % len(s.levels)]
        statement = sa.update(members).where(where).values({s.level_column: level})
        changed = [{**row, s.level_column: level} for row in picked]
        expected = mine.update(who, picked, changed, reads=reads, writes={s.level_column})

        def set_level() -> None:
            assert existing is not None
            existing.values[s.level_column] = level

        return attempt_state(connection, statement), expected, set_level

    def removed() -> None:
        shares.rows.rows[s.members].remove(existing)  # type: ignore[arg-type]

    expected = mine.delete(who, picked, reads=reads)
    return attempt_state(connection, sa.delete(members).where(where)), expected, removed


@pytest.mark.skipif(SHARING is None, reason="no table of the models is shared (shared_with)")
@settings(max_examples=40, deadline=None)
@given(steps=sharing_steps)
def test_sharing_does_what_the_declarations_say(
    db: Database, steps: list[tuple[str | None, SharingStep]]
) -> None:
    assert SHARING is not None
    reset_shares(db, SHARING)
    shared_table = metadata.tables[SHARING.table]
    text = next(
        c.name
        for c in shared_table.columns
        if c.name in access(SHARING.role, shared_table).updatable_columns()
    )
    rows = Seeded(
        {
            name: [SeededRow(r.owner, dict(r.key), dict(r.values)) for r in seeded_rows]
            for name, seeded_rows in db.seeded.rows.items()
        }
    )
    world = World(rows, db.world.evaluator)
    shares = Shares(
        SHARING,
        world,
        access(SHARING.role, shared_table).at(world),
        access(SHARING.role, metadata.tables[SHARING.members]).at(world),
        text,
    )
    for n, (actor, step) in enumerate(steps):
        connection = db.fresh if actor is NOBODY else db.main
        with acting_as(connection, actor, role=SHARING.role, commit=True):
            actual, expected, change = sharing_step(connection, shares, actor, step, n)
        note(f"step {n}: {actor!r} {step} -> {actual!r}")
        event(f"{type(step).__name__}: {'rows' if isinstance(actual, list) else actual}")
        assert actual == expected, f"step {n}: {actor!r} {step}"
        if change is not None and actual not in (0, REFUSED) and not isinstance(actual, str):
            change()
        members, texts = stored_shares(db, shares)
        assert members == shares.member_triples([r.values for r in shares.members()]), (
            f"step {n}: the members are not as the model says"
        )
        model_texts = [(r.values[SHARING.key], r.values[text]) for r in rows.all(SHARING.table)]
        assert sorted(texts, key=str) == sorted(model_texts, key=str), f"step {n}: the shared rows"
