"""Property: whatever sequence of requests arrives, todo_app does exactly what a plain
Python model of "each user sees and changes only their own todos" says.

Hypothesis draws sequences of (acting user, operation); each runs as the API runs it,
in a transaction of its own as todo_app with ``app.user_id`` set (or not), and is
compared with the model: the rows affected, the rows visible, a refusal (SQLSTATE
42501: no privilege, or a row a WITH CHECK policy rejects), and, after every step,
the whole table as the superuser sees it.

It models the todo table itself, by name: the todo list is what the service is for,
and the model's operations are the todo API's. Every other owned table is covered by
the derived tests in ``tests/test_isolation.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, assert_never

import pytest
import sqlalchemy as sa
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from sqlalchemy.engine import URL, Connection

from migrations.rowsecurity.declarations import row_security
from models import metadata
from models.security import owned_by
from tests.conftest import database_copy, new_engine
from tests.rls_helpers import (
    REFUSED,
    USERS,
    Refused,
    acting_as,
    attempt,
    read,
    seed,
)

#: Who acts: a user, nobody (``app.user_id`` never set in the session) or the empty string.
NOBODY = None
EMPTY = ""
ACTORS: tuple[str | None, ...] = (*USERS, NOBODY, EMPTY)

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
    users' todos, or of every id ever tried (made or refused, alive or deleted). The
    hint only steers the choice towards interesting rows; the model alone decides
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
Outcome = int | Refused | list[tuple[uuid.UUID, str, str]]

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
    """Who owns which todo, and the rule: a user reaches exactly their own todos."""

    #: id -> (owner, title): the table as it should be.
    todos: dict[uuid.UUID, tuple[str, str]] = field(default_factory=dict)
    #: Every id ever tried, made or not, deleted or not: what references pick from.
    tried: list[uuid.UUID] = field(default_factory=list)

    def resolve(self, actor: str | None, ref: Ref) -> uuid.UUID:
        if ref.whose == "any":
            candidates = self.tried
        else:
            mine = ref.whose == "mine"
            candidates = sorted(
                todo for todo, (owner, _) in self.todos.items() if (owner == actor) == mine
            )
        candidates = candidates or self.tried
        return candidates[ref.index % len(candidates)] if candidates else NO_TODO

    @staticmethod
    def user(actor: str | None) -> str | None:
        """The current user as the policies see it: nobody and '' are no user."""
        return actor or None

    def mine(self, actor: str | None, todo: uuid.UUID) -> bool:
        return todo in self.todos and self.todos[todo][0] == self.user(actor)

    def insert(self, actor: str | None, todo: uuid.UUID, owner: str | None, title: str) -> Outcome:
        if owner is None or owner != self.user(actor):
            return REFUSED
        self.todos[todo] = (owner, title)
        return 1

    def select(self, actor: str | None) -> Outcome:
        return sorted(
            (t, o, title) for t, (o, title) in self.todos.items() if o == self.user(actor)
        )

    def update_title(self, actor: str | None, todo: uuid.UUID, title: str) -> Outcome:
        if not self.mine(actor, todo):
            return 0
        self.todos[todo] = (self.todos[todo][0], title)
        return 1

    def move(self, actor: str | None, todo: uuid.UUID, to: str) -> Outcome:
        if not self.mine(actor, todo):
            return 0
        return 1 if to == self.user(actor) else REFUSED

    def retitle_all(self, actor: str | None, title: str) -> Outcome:
        mine = [todo for todo, (owner, _) in self.todos.items() if owner == self.user(actor)]
        for todo in mine:
            self.todos[todo] = (self.todos[todo][0], title)
        return len(mine)

    def move_all(self, actor: str | None, to: str) -> Outcome:
        mine = sum(owner == self.user(actor) for owner, _ in self.todos.values())
        return REFUSED if mine and to != self.user(actor) else mine

    def delete(self, actor: str | None, todo: uuid.UUID) -> Outcome:
        if not self.mine(actor, todo):
            return 0
        del self.todos[todo]
        return 1


@dataclass
class Database:
    """Two sessions on one database at head: `main` (the superuser's checks, users and
    the empty string) and `fresh`, used only by nobody, which never sets app.user_id."""

    main: Connection
    fresh: Connection


@pytest.fixture(scope="module")
def db(admin_url: URL, head_template: str) -> Iterator[Database]:
    with database_copy(admin_url, head_template, "properties") as url:
        engine = new_engine(url)
        try:
            with engine.connect() as main, engine.connect() as fresh:
                with main.begin():
                    seed(main)
                yield Database(main, fresh)
        finally:
            engine.dispose()


todo_table = sa.table("todo", sa.column("id", sa.Uuid()), sa.column("user_id"), sa.column("title"))


def other_user(actor: str | None, offset: int) -> str:
    start = USERS.index(actor) if actor in USERS else 0
    return USERS[(start + offset) % len(USERS)]


def write(
    model: Model, actor: str | None, operation: Operation, title: str
) -> tuple[sa.Executable, Outcome]:
    """The statement that carries out a writing `operation`, and what the model expects
    of it (the model is updated as if it ran)."""
    c = todo_table.c
    statement: sa.Executable
    match operation:
        case InsertOwn() | InsertForOther():
            todo = uuid.uuid4()
            model.tried.append(todo)
            owner = (
                other_user(actor, operation.offset)
                if isinstance(operation, InsertForOther)
                else actor
            )
            statement = sa.insert(todo_table).values({c.id: todo, c.user_id: owner, c.title: title})
            return statement, model.insert(actor, todo, owner, title)
        case UpdateTitle(todo=ref):
            todo = model.resolve(actor, ref)
            statement = sa.update(todo_table).where(c.id == todo).values({c.title: title})
            return statement, model.update_title(actor, todo, title)
        case Move(todo=ref, to=to):
            todo = model.resolve(actor, ref)
            statement = sa.update(todo_table).where(c.id == todo).values({c.user_id: to})
            return statement, model.move(actor, todo, to)
        case Delete(todo=ref):
            todo = model.resolve(actor, ref)
            return sa.delete(todo_table).where(c.id == todo), model.delete(actor, todo)
        case RetitleAll():
            statement = sa.update(todo_table).values({c.title: title})
            return statement, model.retitle_all(actor, title)
        case MoveAll(to=to):
            return sa.update(todo_table).values({c.user_id: to}), model.move_all(actor, to)
        case SelectAll():
            raise AssertionError("SelectAll writes nothing")
        case _:
            assert_never(operation)


def run(
    connection: Connection, model: Model, actor: str | None, operation: Operation, step: int
) -> tuple[Outcome, Outcome]:
    """Run `operation` as `actor` on the database and on the model: (actual, expected)."""
    if isinstance(operation, SelectAll):
        c = todo_table.c
        rows = read(connection, sa.select(c.id, c.user_id, c.title))
        return (rows if rows == REFUSED else sorted(rows)), model.select(actor)
    statement, expected = write(model, actor, operation, f"title {step}")
    return attempt(connection, statement), expected


def _todo_is_owned_by_its_user_alone() -> bool:
    declared = row_security(metadata.tables["todo"])
    plain = owned_by("user_id")
    return declared is not None and (declared.policies, declared.grants) == (
        plain.policies,
        plain.grants,
    )


@pytest.mark.skipif(
    not _todo_is_owned_by_its_user_alone(),
    reason="todo declares more than owned_by('user_id'): the model in "
    "tests/test_isolation_properties.py no longer says what todo_app may do; update it "
    "(the derived tests in tests/test_isolation.py still cover the table)",
)
@settings(max_examples=60, deadline=None)
@given(steps=steps)
def test_todo_app_does_what_the_model_says(db: Database, steps: list[Step]) -> None:
    with db.main.begin():
        # CASCADE: whatever references todo (a link table) goes with it.
        db.main.exec_driver_sql("TRUNCATE todo CASCADE")
    model = Model()
    for step, (actor, operation) in enumerate(steps):
        connection = db.fresh if actor is NOBODY else db.main
        with acting_as(connection, actor, commit=True):
            setting = connection.execute(
                sa.text("SELECT current_setting('app.user_id', true)")
            ).scalar()
            assert setting == actor, "nobody acts on a session that never set app.user_id"
            actual, expected = run(connection, model, actor, operation, step)
        note(f"step {step}: {actor!r} {operation} -> {actual!r}")
        event(f"{type(operation).__name__}: {'rows' if isinstance(actual, list) else actual}")
        assert actual == expected, f"step {step}: {actor!r} {operation}"
        with db.main.begin():  # as the superuser, who sees every row
            table = sorted(tuple(row) for row in db.main.execute(sa.select(todo_table)))
        assert table == sorted((t, o, title) for t, (o, title) in model.todos.items())
