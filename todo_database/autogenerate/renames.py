"""Renames declared in the models: a table or a column renamed in place, its rows kept.

Autogenerate cannot tell a rename from a drop and an add, so the model says it
(:data:`models.base.RENAMED_FROM`)::

    title: str = Field(sa_column=Column("title", Text, info=renamed_from("name")))
    __table_args__ = ({"info": {ROW_SECURITY: owned_by("user_id"), RENAMED_FROM: "todo_item"}},)

and ``make revision`` writes ``op.rename_table(old, new)`` and
``op.alter_column(table, old, new_column_name=new)``, then renames what is named after
them wherever the models now spell its name otherwise (the naming convention's
``todo_item_pkey`` becomes ``task_pkey``, ``todo_name_idx`` becomes ``todo_title_idx``):
``op.rename_constraint``, ``op.rename_index``, and ``op.rename_sequence`` for a serial
column's ``<table>_<column>_seq``. Row security, policies, grants and foreign keys
follow by themselves: PostgreSQL holds them by the table's and the column's number,
and prints a policy with the new names, so the declared text still compares equal.

How the comparison sees it: the first comparator of the run performs the pending
renames on the database inside a savepoint, so that every other comparator (Alembic's
and this project's) compares the models with the database as it will be after them,
and finds only what else changed; the last one rolls the savepoint back, so nothing of
it is ever committed. While a rename is pending, that holds the renamed tables' ACCESS
EXCLUSIVE lock for the comparison's length (waited for at most
:data:`COMPARISON_LOCK_WAIT`); once it has run, the marker finds the new name in the
database and does nothing, so leaving it in the model costs nothing.

A marker whose old name the database does not have is no rename when the new name is
there (the rename has run); when neither is there it is a mistake (a misspelt name, a
marker on something new), refused in one line like every other declaration that
cannot be migrated.

The generated upgrade lists its renames in its docstring (:class:`RenamesListedOp`):
the reviewer reads what breaks for code still using the old names, and squawk's
``renaming-*`` rules take that list as their acknowledgement
(:func:`todo_database.lint.listed_renames`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from alembic.autogenerate import comparators, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, ops
from alembic.operations.ops import MigrationScript, OpContainer
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from sqlalchemy.engine import Connection, NestedTransaction
from sqlalchemy.exc import DBAPIError

# Registered before this module's last comparator, which must run after theirs: the
# savepoint it rolls back is what they compare against.
import todo_database.autogenerate.enums
import todo_database.autogenerate.row_security  # noqa: F401
from models.base import RENAMED_FROM
from todo_database import lint
from todo_database.autogenerate import deparse
from todo_database.catalog.tables import (
    read_constraints,
    read_indexes,
    read_owned_sequences,
    read_tables,
)
from todo_database.online import forms as online
from todo_database.operations.renames import (
    DependentRename,
    RenameConstraintOp,
    RenameIndexOp,
    RenameSequenceOp,
)

#: How long the comparison waits for a renamed table's lock; it holds it about as long.
COMPARISON_LOCK_WAIT = "1s"


class RenameError(CommandError):
    """A rename declaration that cannot be carried out, in one line."""


# --- what the revision runs -------------------------------------------------------------


class DeclaredTableRenameOp(ops.RenameTableOp):
    """``op.rename_table(old, new)`` as Alembic renders it, with the reverse and the
    difference ``alembic check`` reports, which Alembic's own lacks."""

    def reverse(self) -> DeclaredTableRenameOp:
        return DeclaredTableRenameOp(self.new_table_name, self.table_name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("rename_table", self.table_name, self.new_table_name)


@renderers.dispatch_for(DeclaredTableRenameOp)
def _render_rename_table(context: AutogenContext, operation: DeclaredTableRenameOp) -> str:
    # Alembic renders no table rename of its own: autogenerate never finds one.
    return f"op.rename_table({operation.table_name!r}, {operation.new_table_name!r})"


class DeclaredColumnRenameOp(ops.AlterColumnOp):
    """``op.alter_column(table, old, new_column_name=new)``, reversible (Alembic's
    reverse of an alter_column leaves the name as it is) and reported by ``check``."""

    def __init__(self, table_name: str, column_name: str, new_column_name: str) -> None:
        super().__init__(table_name, column_name, modify_name=new_column_name)

    @property
    def new_column_name(self) -> str:
        return str(self.modify_name)

    def reverse(self) -> DeclaredColumnRenameOp:
        return DeclaredColumnRenameOp(self.table_name, self.new_column_name, self.column_name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("rename_column", self.table_name, self.column_name, self.new_column_name)


class RenamesListedOp(OpContainer):
    """Not an operation: the upgrade's docstring, listing its renames one per line, for
    the reviewer and for squawk's ``renaming-*`` rules (:func:`lint.listed_renames`).
    A container of no operations, so that whatever walks a revision's operations (what
    ``alembic check`` reports, the account of its steps) finds nothing in it."""

    def __init__(self, renames: list[lint.Rename]) -> None:
        super().__init__([])
        self.renames = renames


@renderers.dispatch_for(RenamesListedOp)
def _render_listed(context: AutogenContext, operation: RenamesListedOp) -> list[str]:
    return [
        f'"""{lint.RENAMES_LISTED}',
        "",
        "Code that still reads an old name fails once this has run: deploy the readers of",
        "the new names with it, or keep a view or a column under the old name until then.",
        "",
        *(rename.listed() for rename in operation.renames),
        '"""',
    ]


def _listed(operation: MigrateOperation) -> lint.Rename | None:
    if isinstance(operation, DeclaredTableRenameOp):
        return lint.Rename("table", operation.table_name, operation.new_table_name)
    if isinstance(operation, DeclaredColumnRenameOp):
        return lint.Rename(
            "column", operation.column_name, operation.new_column_name, operation.table_name
        )
    if isinstance(operation, RenameConstraintOp):
        return lint.Rename(
            "constraint", operation.old_name, operation.new_name, operation.table_name
        )
    if isinstance(operation, RenameIndexOp):
        return lint.Rename("index", operation.old_name, operation.new_name)
    if isinstance(operation, RenameSequenceOp):
        return lint.Rename("sequence", operation.old_name, operation.new_name)
    return None


# --- what the models declare ------------------------------------------------------------


@dataclass
class Declared:
    """The models' renamed_from markers: tables by their model name, columns by their
    table's model name and their own."""

    tables: dict[str, str] = field(default_factory=dict)
    columns: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))


def _marker(info: Mapping[str, Any], what: str, problems: list[str]) -> str | None:
    old = info.get(RENAMED_FROM)
    if old is None:
        return None
    if not isinstance(old, str) or not old.strip():
        problems.append(f"{what} declares {RENAMED_FROM}={old!r}: it takes the old name")
        return None
    return old


def declared(tables: Iterable[sa.Table]) -> Declared:
    """The markers of `tables`, refused in one line when they contradict themselves or
    the models."""
    tables = list(tables)
    names = {table.name for table in tables}
    problems: list[str] = []
    found = Declared()
    for table in tables:
        old = _marker(table.info, f"table {table.name!r}", problems)
        if old == table.name or (old is not None and old in names):
            problems.append(
                f"table {table.name!r} declares {RENAMED_FROM}={old!r}, a table the models "
                "still declare"
            )
        elif old is not None:
            if old in found.tables.values():
                problems.append(f"two tables declare {RENAMED_FROM}={old!r}")
            found.tables[table.name] = old
        columns = {column.name for column in table.columns}
        for column in table.columns:
            old = _marker(column.info, f"column {table.name}.{column.name}", problems)
            if old is not None and old in columns:
                problems.append(
                    f"column {table.name}.{column.name} declares {RENAMED_FROM}={old!r}, a "
                    f"column {table.name!r} still declares"
                )
            elif old is not None:
                found.columns[table.name][column.name] = old
    if problems:
        raise RenameError("; ".join(problems))
    return found


# --- what the database has, and what is pending -----------------------------------------


def _held(connection: Connection) -> dict[str, set[str]]:
    """The database's tables and their columns, read before the renames run (so not
    through the run's snapshot)."""
    return {table: set(columns) for table, columns in read_tables(connection).items()}


@dataclass
class TableRenames:
    """What one table of the models needs renamed: itself (`old_name`, when pending) and
    its columns (model name to database name)."""

    name: str
    old_name: str
    columns: dict[str, str] = field(default_factory=dict)

    @property
    def renamed(self) -> bool:
        return self.old_name != self.name


def pending(
    found: Declared, held: Mapping[str, set[str]], modelled: Iterable[str]
) -> list[TableRenames]:
    """The declared renames the database (`held`) has not had yet, by table; a marker
    that names nothing there, old or new, is refused (see the module's docstring).
    `modelled`: the tables the models declare, to name the others in that refusal."""
    problems: list[str] = []
    undeclared = sorted(set(held) - set(modelled) - set(found.tables.values()))
    renames: dict[str, TableRenames] = {}
    for table, old in sorted(found.tables.items()):
        if old in held and table in held:
            problems.append(
                f"table {table!r} declares {RENAMED_FROM}={old!r}, but the database has both "
                f"{old!r} and {table!r}: drop one, or take the marker out"
            )
        elif old in held:
            renames[table] = TableRenames(table, old)
        elif table not in held:
            problems.append(
                f"table {table!r} declares {RENAMED_FROM}={old!r}, but the database has "
                f"neither {old!r} nor {table!r}: a misspelt name? (tables it has that the "
                f"models do not declare: {', '.join(map(repr, undeclared)) or 'none'})"
            )
    for table, columns in sorted(found.columns.items()):
        where = renames[table].old_name if table in renames else table
        if where not in held:
            problems.append(
                f"{table!r} is a new table, yet its columns declare {RENAMED_FROM} "
                f"({', '.join(sorted(columns))}): take the markers out"
            )
            continue
        have = held[where]
        for column, old in sorted(columns.items()):
            if old in have and column in have:
                problems.append(
                    f"column {table}.{column} declares {RENAMED_FROM}={old!r}, but {table!r} "
                    f"has both {old!r} and {column!r}: drop one, or take the marker out"
                )
            elif old in have:
                renames.setdefault(table, TableRenames(table, table)).columns[column] = old
            elif column not in have:
                problems.append(
                    f"column {table}.{column} declares {RENAMED_FROM}={old!r}, but {table!r} "
                    f"has neither {old!r} nor {column!r}: a misspelt name? (its columns: "
                    f"{', '.join(sorted(have))})"
                )
    if problems:
        raise RenameError("; ".join(problems))
    return list(renames.values())


# --- names that follow a rename ---------------------------------------------------------

#: What makes a constraint or an index the same one under another name.
_Shape = tuple[Any, ...]


def _declared_shapes(
    table: sa.Table, declared: deparse.Declared
) -> tuple[dict[str, _Shape], dict[str, _Shape]]:
    """The models' constraints and indexes of `table`, by name, with their shape."""
    constraints: dict[str, _Shape] = {}
    key = table.primary_key
    if isinstance(key.name, str) and key.columns:
        constraints[key.name] = ("p", tuple(column.name for column in key.columns))
    for constraint in table.constraints:
        name = constraint.name
        if not isinstance(name, str):
            continue
        if isinstance(constraint, sa.UniqueConstraint):
            constraints[name] = ("u", tuple(column.name for column in constraint.columns))
        elif isinstance(constraint, sa.ForeignKeyConstraint):
            referred = tuple(element.column.name for element in constraint.elements)
            columns = tuple(column.name for column in constraint.columns)
            constraints[name] = ("f", columns, constraint.referred_table.name, referred)
        elif isinstance(constraint, sa.CheckConstraint):
            constraints[name] = ("c", declared.checks[table.name].get(name))
    indexes = {
        str(index.name): ("i", declared.indexes[table.name].get(str(index.name)))
        for index in table.indexes
    }
    return constraints, indexes


def _held_shapes(connection: Connection, table: str) -> tuple[dict[str, _Shape], dict[str, _Shape]]:
    """The database's constraints and indexes of `table`, by name, with their shape:
    read fresh, as the renames so far have left them."""
    constraints: dict[str, _Shape] = {}
    for name, constraint in read_constraints(connection).get(table, {}).items():
        if constraint.kind == "f":
            referred = (constraint.referred_table, constraint.referred_columns)
            constraints[name] = ("f", constraint.columns, *referred)
        elif constraint.kind == "c":
            constraints[name] = ("c", constraint.expression)
        elif constraint.kind in ("p", "u"):
            constraints[name] = (constraint.kind, constraint.columns)
    indexes = {
        name: ("i", deparse.index_shape(index.definition))
        for name, index in read_indexes(connection).get(table, {}).items()
        if not index.backs_constraint
    }
    return constraints, indexes


def _pairs(held: Mapping[str, _Shape], wanted: Mapping[str, _Shape]) -> Iterator[tuple[str, str]]:
    """(held name, wanted name) for each object the database has under a name the models
    no longer use, when exactly one declared object of the same shape lacks its name."""
    unmatched = [(name, shape) for name, shape in wanted.items() if name not in held]
    for name, shape in held.items():
        if name in wanted or None in shape:
            continue
        same_held = [other for other, other_shape in held.items() if other_shape == shape]
        same_wanted = [other for other, other_shape in unmatched if other_shape == shape]
        if len(same_held) == 1 and len(same_wanted) == 1:
            yield name, same_wanted[0]


def dependent_renames(
    connection: Connection, table: sa.Table, renames: TableRenames, declared: deparse.Declared
) -> list[DependentRename]:
    """What `table` holds under a name that followed its old name or an old column name,
    renamed to the name the models give it; read once the table and its columns carry
    their new names (inside the comparison's savepoint)."""
    held_constraints, held_indexes = _held_shapes(connection, table.name)
    wanted_constraints, wanted_indexes = _declared_shapes(table, declared)
    found: list[DependentRename] = [
        RenameConstraintOp(table.name, old, new)
        for old, new in _pairs(held_constraints, wanted_constraints)
    ]
    found += [
        RenameIndexOp(old, new, table.name) for old, new in _pairs(held_indexes, wanted_indexes)
    ]
    # PostgreSQL names a serial column's sequence <table>_<column>_seq.
    for column, sequence in read_owned_sequences(connection).get(table.name, {}).items():
        was = f"{renames.old_name}_{renames.columns.get(column, column)}_seq"
        named = f"{table.name}_{column}_seq"
        if sequence == was != named:
            found.append(RenameSequenceOp(sequence, named, table.name))
    return found


# --- the comparison ---------------------------------------------------------------------


@dataclass
class _Run:
    """One autogenerate run's renames: the savepoint they are in while the comparators
    run, what the revision gets, and the table names before them."""

    savepoint: NestedTransaction | None
    operations: list[MigrateOperation]
    old_names: dict[str, str]
    old_columns: dict[str, dict[str, str]]


_runs: WeakKeyDictionary[MigrationContext, _Run] = WeakKeyDictionary()


#: PostgreSQL's lock_not_available: the lock was not had within lock_timeout.
_LOCK_NOT_AVAILABLE = "55P03"


def _renaming(connection: Connection, sql: str) -> None:
    """Run one rename for the comparison, or say in one line why it cannot run."""
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(sql)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE:
            raise RenameError(
                f"`{sql}` (a declared rename, carried out for the comparison and rolled back) "
                f"waited {COMPARISON_LOCK_WAIT} for its lock: another session holds the "
                "table; try again once it is done"
            ) from None
        reason = (str(exc.orig).strip().splitlines() or ["refused"])[0]
        raise RenameError(f"the declared rename `{sql}` cannot run: {reason}") from None


@comparators.dispatch_for("schema", priority=DispatchPriority.FIRST)
def rename_before_comparing(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]
) -> Any:
    """Carry out the pending declared renames in a savepoint, first of all comparators,
    and put their operations into the upgrade."""
    connection = autogen_context.connection
    if connection is None or None not in schemas:
        return PriorityDispatchResult.CONTINUE
    tables = {table.name: table for table in deparse.compared_tables(autogen_context)}
    found = declared(tables.values())
    if not found.tables and not found.columns:
        return PriorityDispatchResult.CONTINUE
    version_table = autogen_context.migration_context.version_table
    renames = pending(found, _held(connection), [*tables, version_table])
    if not renames:
        return PriorityDispatchResult.CONTINUE

    quote = connection.dialect.identifier_preparer.quote
    savepoint = connection.begin_nested()
    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{COMPARISON_LOCK_WAIT}'")
    run = _Run(savepoint, [], {}, {})
    _runs[autogen_context.migration_context] = run
    for table in renames:
        if table.renamed:
            _renaming(
                connection, f"ALTER TABLE {quote(table.old_name)} RENAME TO {quote(table.name)}"
            )
            run.old_names[table.name] = table.old_name
        for column, old in table.columns.items():
            _renaming(
                connection,
                f"ALTER TABLE {quote(table.name)} RENAME COLUMN {quote(old)} TO {quote(column)}",
            )
        run.old_columns[table.name] = {column: old for column, old in table.columns.items()}
    # Declared CHECKs and indexes as PostgreSQL prints them: the same run's, cached.
    shapes = deparse.for_run(autogen_context)
    for table in renames:
        renamed: list[MigrateOperation] = []
        if table.renamed:
            renamed.append(DeclaredTableRenameOp(table.old_name, table.name))
        renamed += [
            DeclaredColumnRenameOp(table.name, old, column) for column, old in table.columns.items()
        ]
        dependents = dependent_renames(connection, tables[table.name], table, shapes)
        for dependent in dependents:
            _renaming(connection, dependent.sql(quote))
        renamed += dependents
        run.operations.append(ops.ModifyTableOps(table.name, renamed))
    upgrade_ops.ops[:0] = run.operations
    if "inspector" in autogen_context.__dict__:  # reflected before the renames
        autogen_context.inspector.clear_cache()
    return PriorityDispatchResult.CONTINUE


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def undo_renames_after_comparing(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: set[str | None]
) -> Any:
    """Last of all comparators: the renames first in the upgrade (what other comparators
    put first, such as a policy dropped out of a column's way, names the new names), and
    the savepoint rolled back."""
    run = _runs.get(autogen_context.migration_context)
    if run is None or run.savepoint is None:
        return PriorityDispatchResult.CONTINUE
    ours = {id(operation) for operation in run.operations}
    upgrade_ops.ops = [
        *run.operations,
        *(operation for operation in upgrade_ops.ops if id(operation) not in ours),
    ]
    # The online rewrites read the database's tables once per run: read them now, as
    # they are after the renames, so a renamed table is the live table it is.
    online.existing_tables(autogen_context.migration_context)
    run.savepoint.rollback()
    run.savepoint = None
    return PriorityDispatchResult.CONTINUE


# --- the revision around the renames ----------------------------------------------------


def _walk(operations: Iterable[MigrateOperation]) -> Iterator[MigrateOperation]:
    for operation in operations:
        yield operation
        inner = getattr(operation, "ops", None)
        if isinstance(inner, list):
            yield from _walk(inner)


def _identifiers(text: str, names: Mapping[str, str]) -> str:
    """`text` (an index expression) with each identifier in `names` replaced."""
    if not names:
        return text
    pattern = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
    return re.sub(rf'(?<![\w$"])({pattern})(?![\w$"(])', lambda m: names[m[1]], text)


def _by_old_names(operation: MigrateOperation, run: _Run) -> None:
    """`operation`, an online step of the downgrade, which runs after the renames back:
    its table and column names as they are by then."""
    table = getattr(operation, "table_name", None)
    if not isinstance(table, str):
        return
    columns = run.old_columns.get(table, {})
    if isinstance(operation, ops.CreateIndexOp) and columns:
        operation.columns = [
            columns.get(column, column)
            if isinstance(column, str)
            else sa.text(_identifiers(str(column), columns))
            if isinstance(column, sa.TextClause)
            else column
            for column in operation.columns
        ]
    if table in run.old_names:
        operation.table_name = run.old_names[table]  # type: ignore[attr-defined]


def rewrite(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """After :func:`todo_database.online.forms.rewrite`, what the renames change around them: the
    upgrade's up-front locks name the tables as they are before the renames (the other
    operations use the models' names, which they have after them); the downgrade's
    online steps, which run once the renames are undone, name the old tables and
    columns; and the upgrade's docstring lists the renames."""
    run = _runs.get(context)
    if run is None or not run.operations:
        return
    for script in directives:
        for upgrade in script.upgrade_ops_list:
            for operation in _walk(upgrade.ops):
                if isinstance(operation, online.LockTablesOp):
                    operation.locks = tuple(
                        sorted(
                            (run.old_names.get(table, table), mode)
                            for table, mode in operation.locks
                        )
                    )
        for downgrade in script.downgrade_ops_list:
            for step in downgrade.ops:
                if isinstance(step, online.AutocommitBlockOp) and not step.first:
                    for operation in _walk(step.ops):
                        _by_old_names(operation, run)
        listed = [
            rename
            for operation in _walk(run.operations)
            if (rename := _listed(operation)) is not None
        ]
        if script.upgrade_ops_list and listed:
            script.upgrade_ops_list[0].ops.insert(0, RenamesListedOp(listed))


__all__ = [
    "DeclaredColumnRenameOp",
    "DeclaredTableRenameOp",
    "RenameConstraintOp",
    "RenameIndexOp",
    "RenameSequenceOp",
    "RenamesListedOp",
    "declared",
    "pending",
    "rewrite",
]
