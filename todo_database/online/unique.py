"""UNIQUE constraints and primary keys added to a live table without blocking writes.

A plain ``ALTER TABLE ... ADD CONSTRAINT ... UNIQUE`` (or ``PRIMARY KEY``) builds its
index while it holds ACCESS EXCLUSIVE: on a table of a million rows every reader and
writer waits for the whole build. On a live table (:mod:`todo_database.online.forms`) the
rewrite builds the index first and only then attaches it, in the revision's online
steps, after its transaction has committed::

    with op.get_context().autocommit_block():
        op.drop_index_if_invalid("item_code_key")
        op.create_index(op.f("item_code_key"), "item", ["code"], unique=True,
                        postgresql_concurrently=True, if_not_exists=True)
        op.add_constraint_using_index("item", "item_code_key", "UNIQUE")

The concurrent build lets reads and writes through; ``ADD CONSTRAINT ... USING
INDEX`` then only records the constraint, under an ACCESS EXCLUSIVE lock held for a
moment and waited for at most 100 ms at a time (writers queue behind a waiting
request), as the other brief steps do (:func:`todo_database.online.backfill.run_with_a_brief_lock`).
The index carries the constraint's name, so that the database ends as a plain
``ADD CONSTRAINT`` would leave it and ``alembic check`` is clean. Each step is safe to
repeat: a rerun after a failed build (a duplicate among the live rows) drops the
INVALID index the build left, builds it again, and attaches it; a rerun after the
constraint was attached finds it and does nothing.

A primary key replaced on a live table (:class:`ReplacePrimaryKeyOp`, from
:mod:`todo_database.autogenerate.constraints`) is built under another name while the old key stays,
then swapped in one statement: the table is never without its key, and a failed
build leaves the old one in place. A primary key's columns must already be NOT NULL:
attaching it to nullable ones would make PostgreSQL set NOT NULL itself, scanning
every row under ACCESS EXCLUSIVE, so that step refuses in one line instead (NOT NULL
has an online form of its own, an ``op.alter_column`` earlier in the revision).

The downgrade drops the constraint, and its index with it (a brief ACCESS EXCLUSIVE).
When the upgrade's build failed and the revision is backed out (``alembic stamp``,
then ``alembic downgrade -1``) there is no constraint to drop but an INVALID unique
index, which PostgreSQL may go on maintaining and checking on writes: that downgrade
drops the leftover index first, concurrently, and the constraint only if it is there.

Tables the revision creates get their constraints inline, in ``op.create_table``
(Alembic never writes a separate unique constraint for them); a unique index declared
with ``Index(..., unique=True)`` is an index, built concurrently by
:mod:`todo_database.online.forms` already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations, ops
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from todo_database.catalog.tables import (
    constraint_on_index,
    nullable_index_columns,
    read_constraints,
)
from todo_database.online.backfill import run_with_a_brief_lock
from todo_database.online.forms import (
    AutocommitBlockOp,
    DropIndexIfInvalidOp,
    _create_concurrently,  # the one definition of a concurrent, rerunnable build
    _live,  # the rewriter's view of the revision's live tables
    rewriter,
)

UNIQUE = "UNIQUE"
PRIMARY_KEY = "PRIMARY KEY"
#: Alembic's ``type_`` of a dropped constraint, by the kind this module adds.
_DROP_TYPES = {UNIQUE: "unique", PRIMARY_KEY: "primary"}
#: PostgreSQL's limit on a name (longer ones are cut, and could collide).
_NAME_LENGTH = 63


class NullableKeyColumnsError(Exception):
    """A primary key about to be attached to columns that are still nullable."""


@Operations.register_operation("add_constraint_using_index")
@dataclass
class AddConstraintUsingIndexOp(MigrateOperation):
    """``ALTER TABLE ... ADD CONSTRAINT <name> UNIQUE | PRIMARY KEY USING INDEX <index>``:
    the constraint attached to a unique index built beforehand (PostgreSQL renames the
    index to the constraint's name), after dropping the constraint it `replaces` in
    the same statement. Skipped when an earlier run got this far."""

    table_name: str
    constraint_name: str
    kind: str
    index_name: str
    replaces: str | None = None
    deferrable: bool | None = None
    initially: str | None = None

    @classmethod
    def add_constraint_using_index(
        cls,
        operations: Operations,
        table_name: str,
        constraint_name: str,
        kind: str,
        *,
        index: str | None = None,
        replaces: str | None = None,
        deferrable: bool | None = None,
        initially: str | None = None,
    ) -> None:
        """`index` defaults to `constraint_name`; `kind` is ``"UNIQUE"`` or
        ``"PRIMARY KEY"``."""
        operations.invoke(
            cls(
                table_name,
                constraint_name,
                kind,
                index or constraint_name,
                replaces,
                deferrable,
                initially,
            )
        )

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_constraint_using_index", self.table_name, self.constraint_name, self.kind)


@Operations.implementation_for(AddConstraintUsingIndexOp)
def _add_constraint_using_index(
    operations: Operations, operation: AddConstraintUsingIndexOp
) -> None:
    quote = operations.impl.dialect.identifier_preparer.quote
    table, name = quote(operation.table_name), quote(operation.constraint_name)
    index = quote(operation.index_name)
    clauses = [f"ADD CONSTRAINT {name} {operation.kind} USING INDEX {index}"]
    if operation.replaces:
        # IF EXISTS: a column of the old key dropped earlier in the revision took it along.
        clauses.insert(0, f"DROP CONSTRAINT IF EXISTS {quote(operation.replaces)}")
    if operation.deferrable is not None:
        clauses[-1] += " DEFERRABLE" if operation.deferrable else " NOT DEFERRABLE"
    if operation.initially:
        clauses[-1] += f" INITIALLY {operation.initially.upper()}"
    statement = f"ALTER TABLE {table} {', '.join(clauses)}"
    if operations.get_context().as_sql:
        # Offline SQL runs once, on a database that has not run it.
        operations.execute(statement)
        return
    connection = operations.get_bind()
    contype = "p" if operation.kind == PRIMARY_KEY else "u"
    if constraint_on_index(connection, table, operation.constraint_name, contype, index):
        # An earlier run attached it. A replaced key's index was renamed then, so this
        # run's build made a second, identical one: it goes, without locking the table.
        if operation.index_name != operation.constraint_name:
            operations.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}")
        return
    if operation.kind == PRIMARY_KEY:
        _refuse_nullable(connection, operation, index)
    run_with_a_brief_lock(connection, statement, operation.table_name)


def _refuse_nullable(
    connection: Connection, operation: AddConstraintUsingIndexOp, index: str
) -> None:
    nullable = nullable_index_columns(connection, index)
    if nullable:
        columns = ", ".join(f"{operation.table_name}.{column}" for column in nullable)
        raise NullableKeyColumnsError(
            f"primary key {operation.constraint_name} needs {columns} NOT NULL first: "
            "attached to nullable columns, PostgreSQL would set NOT NULL itself, scanning "
            "every row under ACCESS EXCLUSIVE; make them NOT NULL (op.alter_column(..., "
            "nullable=False)) before this step or in an earlier revision, then rerun"
        )


@renderers.dispatch_for(AddConstraintUsingIndexOp)
def _render_add_constraint_using_index(
    context: AutogenContext, operation: AddConstraintUsingIndexOp
) -> str:
    arguments = [repr(operation.table_name), repr(operation.constraint_name), repr(operation.kind)]
    if operation.index_name != operation.constraint_name:
        arguments.append(f"index={operation.index_name!r}")
    for keyword in ("replaces", "deferrable", "initially"):
        if (value := getattr(operation, keyword)) is not None:
            arguments.append(f"{keyword}={value!r}")
    return f"op.add_constraint_using_index({', '.join(arguments)})"


@dataclass
class ReplacePrimaryKeyOp(MigrateOperation):
    """The primary key of `table_name` moved from `replaced_columns` to `columns`, as
    one operation, so that its online form can swap the two keys in one statement.

    :mod:`todo_database.autogenerate.constraints` writes it only for a table both the models and the
    database have, which is live, so it is always rewritten (it has no plain form)."""

    table_name: str
    constraint_name: str
    columns: list[str]
    replaced_name: str
    replaced_columns: list[str]

    def reverse(self) -> ReplacePrimaryKeyOp:
        return ReplacePrimaryKeyOp(
            self.table_name,
            self.replaced_name,
            self.replaced_columns,
            self.constraint_name,
            self.columns,
        )

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (
            "replace_primary_key",
            self.table_name,
            tuple(self.replaced_columns),
            tuple(self.columns),
        )


def _building_name(constraint_name: str) -> str:
    """The name a replacing key's index is built under while the old key still holds
    `constraint_name` (the naming convention gives both keys the same)."""
    return f"{constraint_name[: _NAME_LENGTH - len('_new')]}_new"


def _build_then_attach(
    table: str,
    columns: list[str],
    attach: AddConstraintUsingIndexOp,
    index_kw: dict[str, Any],
    *,
    index_name: Any = None,
) -> AutocommitBlockOp:
    """The online steps: the unique index built concurrently (`index_name` when given:
    the metadata's own name object, rendered ``op.f(...)``), then attached."""
    build = ops.CreateIndexOp(
        index_name or attach.index_name, table, columns, unique=True, **index_kw
    )
    drop = ops.DropConstraintOp(attach.constraint_name, table, type_=_DROP_TYPES[attach.kind])
    return AutocommitBlockOp([*_create_concurrently(build), attach], [drop])


@rewriter.rewrites(ops.CreateUniqueConstraintOp)
def add_unique_constraint_online(
    context: MigrationContext, revision: Any, op: ops.CreateUniqueConstraintOp
) -> MigrateOperation:
    if op.table_name not in _live(context):
        return op
    kw = dict(op.kw)
    name = str(op.constraint_name)  # the naming convention names every constraint
    attach = AddConstraintUsingIndexOp(
        op.table_name,
        name,
        UNIQUE,
        name,
        deferrable=kw.pop("deferrable", None),
        initially=kw.pop("initially", None),
    )
    # What is left of the constraint's keywords is the index's (nulls_not_distinct).
    return _build_then_attach(
        op.table_name, list(op.columns), attach, kw, index_name=op.constraint_name
    )


@rewriter.rewrites(ops.CreatePrimaryKeyOp)
def add_primary_key_online(
    context: MigrationContext, revision: Any, op: ops.CreatePrimaryKeyOp
) -> MigrateOperation:
    """A primary key on a live table that has none."""
    if op.table_name not in _live(context):
        return op
    name = str(op.constraint_name)
    attach = AddConstraintUsingIndexOp(op.table_name, name, PRIMARY_KEY, name)
    columns = [str(column) for column in op.columns]
    return _build_then_attach(op.table_name, columns, attach, {}, index_name=op.constraint_name)


@rewriter.rewrites(ReplacePrimaryKeyOp)
def replace_primary_key_online(
    context: MigrationContext, revision: Any, op: ReplacePrimaryKeyOp
) -> MigrateOperation:
    attach = AddConstraintUsingIndexOp(
        op.table_name,
        op.constraint_name,
        PRIMARY_KEY,
        _building_name(op.constraint_name),
        replaces=op.replaced_name,
    )
    return _build_then_attach(op.table_name, op.columns, attach, {})


# --- a downgrade that backs out of a failed build ----------------------------------------

_keys_seen: WeakKeyDictionary[MigrationContext, frozenset[tuple[str, str]]] = WeakKeyDictionary()


def _existing_keys(context: MigrationContext) -> frozenset[tuple[str, str]]:
    """(table, name) of every primary key and unique constraint the database has, read
    once per autogenerate run."""
    if context.connection is None:
        return frozenset()
    if context not in _keys_seen:
        # Read apart from the run's snapshot: the rewrite runs once the comparison's
        # renames are rolled back, and drops name the constraints as they are then.
        _keys_seen[context] = frozenset(
            (table, name)
            for table, constraints in read_constraints(context.connection).items()
            for name, constraint in constraints.items()
            if constraint.kind in ("p", "u")
        )
    return _keys_seen[context]


@rewriter.rewrites(ops.DropConstraintOp)
def drop_key_or_failed_build(
    context: MigrationContext, revision: Any, op: ops.DropConstraintOp
) -> Any:
    """A unique constraint or primary key that the database does not have yet, dropped:
    the downgrade of a revision that adds it online. Backing out after its build
    failed meets no constraint, and an INVALID index in its place."""
    if op.constraint_type not in _DROP_TYPES.values() or op.table_name not in _live(context):
        return op
    name = str(op.constraint_name)
    if (op.table_name, name) in _existing_keys(context):
        return op  # one the models stopped declaring: it is there to drop
    op.if_exists = True
    # Before the transaction: a concurrent drop cannot run in one.
    leftover = AutocommitBlockOp([DropIndexIfInvalidOp(name)], [], first=True)
    return [leftover, op]


__all__ = [
    "AddConstraintUsingIndexOp",
    "NullableKeyColumnsError",
    "ReplacePrimaryKeyOp",
]
