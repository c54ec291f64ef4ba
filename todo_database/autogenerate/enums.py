"""The enum types the models' columns use: created, extended, dropped and compared.

Alembic leaves PostgreSQL's named enum types to SQLAlchemy's table events, which
create a type with its first table but never with a column added to a live table,
and never drop it: a new enum column on an existing table fails at deploy time, and
a downgrade leaves the type behind for the next upgrade to trip on. Here the types
are operations of their own:

* a type the models use and the database lacks is created first in the revision (so
  its downgrade drops it last, after the tables that used it);
* a type nothing uses any more is dropped last (its downgrade recreates it first);
* a value added is ``ALTER TYPE ... ADD VALUE`` in the same place (PostgreSQL 12+ runs
  it in a transaction; the value is usable from the next one);
* a value the models no longer list stays in the database, which cannot drop one (a
  downgrade of an added value leaves it too): it is no drift, but rows that still hold
  it are the author's to move first;
* values moved around are refused in one line: PostgreSQL cannot reorder them, and the
  way is a new type and a column that moves to it (expand, then contract).

Revisions render enum columns with ``create_type=False`` (:func:`render_enum`), so the
table events never create a type behind the operations' back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import comparators, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from alembic.operations.ops import UpgradeOps
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from sqlalchemy.engine import Connection

from todo_database.autogenerate import deparse
from todo_database.online.forms import AutocommitBlockOp
from todo_database.operations.opposites import OppositeOp, opposites


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class _EnumTypeOp(OppositeOp):
    """``CREATE TYPE ... AS ENUM`` or ``DROP TYPE``, each the other's reverse."""

    name: str
    values: tuple[str, ...]

    @classmethod
    def enum_type(cls, operations: Operations, name: str, values: Sequence[str]) -> None:
        operations.invoke(cls(name, tuple(values)))


@Operations.register_operation("create_enum", "enum_type")
class CreateEnumOp(_EnumTypeOp):
    operation_name = "create_enum"


@Operations.register_operation("drop_enum", "enum_type")
class DropEnumOp(_EnumTypeOp):
    operation_name = "drop_enum"


opposites(CreateEnumOp, DropEnumOp)


@Operations.register_operation("add_enum_value")
@dataclass
class AddEnumValueOp(MigrateOperation):
    """``ALTER TYPE ... ADD VALUE``, in its declared place. PostgreSQL cannot remove a
    value again: the downgrade leaves it (an unused value harms nobody)."""

    name: str
    value: str
    before: str | None = None
    after: str | None = None

    @classmethod
    def add_enum_value(
        cls,
        operations: Operations,
        name: str,
        value: str,
        *,
        before: str | None = None,
        after: str | None = None,
    ) -> None:
        operations.invoke(cls(name, value, before, after))

    def reverse(self) -> MigrateOperation:
        return _NothingOp(f"{self.name} keeps {self.value!r}: PostgreSQL cannot drop a value")

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_enum_value", self.name, self.value)


@dataclass
class _NothingOp(MigrateOperation):
    """Renders as a comment: what a downgrade deliberately leaves."""

    why: str


@renderers.dispatch_for(_NothingOp)
def _render_nothing(context: AutogenContext, operation: _NothingOp) -> str:
    return f"pass  # {operation.why}"


def _quote(operations: Operations, name: str) -> str:
    return str(operations.impl.dialect.identifier_preparer.quote(name))


@Operations.implementation_for(CreateEnumOp)
def _create_enum(operations: Operations, operation: CreateEnumOp) -> None:
    values = ", ".join(_literal(value) for value in operation.values)
    operations.execute(f"CREATE TYPE {_quote(operations, operation.name)} AS ENUM ({values})")


@Operations.implementation_for(DropEnumOp)
def _drop_enum(operations: Operations, operation: DropEnumOp) -> None:
    operations.execute(f"DROP TYPE {_quote(operations, operation.name)}")


@Operations.implementation_for(AddEnumValueOp)
def _add_enum_value(operations: Operations, operation: AddEnumValueOp) -> None:
    where = f" BEFORE {_literal(operation.before)}" if operation.before else ""
    if operation.after:
        where = f" AFTER {_literal(operation.after)}"
    name = _quote(operations, operation.name)
    # IF NOT EXISTS: a downgrade leaves the value, and the upgrade that follows meets it.
    value = _literal(operation.value)
    operations.execute(f"ALTER TYPE {name} ADD VALUE IF NOT EXISTS {value}{where}")


@renderers.dispatch_for(_EnumTypeOp)
def _render_enum_type(context: AutogenContext, operation: _EnumTypeOp) -> str:
    return f"op.{operation.operation_name}({operation.name!r}, {list(operation.values)!r})"


@renderers.dispatch_for(AddEnumValueOp)
def _render_add_enum_value(context: AutogenContext, operation: AddEnumValueOp) -> str:
    where = f", before={operation.before!r}" if operation.before else ""
    if operation.after:
        where = f", after={operation.after!r}"
    return f"op.add_enum_value({operation.name!r}, {operation.value!r}{where})"


def render_enum(type_: sa.Enum, autogen_context: AutogenContext) -> str:
    """An enum column's type in a revision: the type is the operations' business."""
    autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
    values = ", ".join(repr(value) for value in type_.enums)
    return f"postgresql.ENUM({values}, name={type_.name!r}, create_type=False)"


# --- comparison ---------------------------------------------------------------------


_ENUMS = """
    SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
    WHERE t.typnamespace = current_schema()::regnamespace
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                      AND d.objid = t.oid AND d.deptype = 'e')
    GROUP BY t.typname
"""


def declared_enums(tables: Sequence[sa.Table]) -> dict[str, tuple[str, ...]]:
    """The named native enum types the tables' columns use, with their values."""
    found: dict[str, tuple[str, ...]] = {}
    for table in tables:
        for column in table.columns:
            type_ = column.type
            if isinstance(type_, sa.Enum) and type_.native_enum and type_.name:
                found[type_.name] = tuple(type_.enums)
    return found


def read_enums(connection: Connection) -> dict[str, tuple[str, ...]]:
    return {name: tuple(values) for name, values in connection.exec_driver_sql(_ENUMS)}


def additions(name: str, have: tuple[str, ...], want: tuple[str, ...]) -> list[AddEnumValueOp]:
    """The values `want` adds to `have`, each before the value that follows it; one
    line refusing what PostgreSQL cannot do to an enum (values the database has and
    the models do not list stay, see the module's docstring)."""
    kept = [value for value in have if value in want]
    if [value for value in want if value in have] != kept:
        raise CommandError(
            f"enum type {name!r} would reorder its values {kept}: PostgreSQL cannot; "
            "create a new type, move the column to it, then drop the old one"
        )
    added = []
    for index, value in enumerate(want):
        if value not in have:
            following = next((v for v in want[index + 1 :] if v in have), None)
            # Appended: after the last value, said so (squawk's
            # require-enum-value-ordering asks for a place either way).
            preceding = None if following else (want[index - 1] if index else None)
            added.append(AddEnumValueOp(name, value, following, preceding))
    return added


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def compare_enum_types(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: set[str | None]
) -> Any:
    connection = autogen_context.connection
    if connection is None or None not in schemas:
        return PriorityDispatchResult.CONTINUE
    want = declared_enums(deparse.compared_tables(autogen_context))
    have = read_enums(connection)
    first: list[MigrateOperation] = []
    for name, values in sorted(want.items()):
        if name not in have:
            first.append(CreateEnumOp(name, values))
        elif added := additions(name, have[name], values):
            # Committed before the revision's transaction: PostgreSQL refuses to use a
            # value in the transaction that added it ("unsafe use of new value").
            first.append(AutocommitBlockOp(list(added), [], first=True))
    last = [DropEnumOp(name, values) for name, values in sorted(have.items()) if name not in want]
    upgrade_ops.ops[:0] = first
    upgrade_ops.ops += last
    return PriorityDispatchResult.CONTINUE


__all__ = ["AddEnumValueOp", "CreateEnumOp", "DropEnumOp", "compare_enum_types", "render_enum"]
