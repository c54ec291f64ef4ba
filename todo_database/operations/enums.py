"""Enum types: ``op.create_enum``, ``op.drop_enum`` (each the other's reverse) and
``op.add_enum_value``, whose downgrade leaves the value (PostgreSQL cannot drop one)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from todo_database.operations.opposites import OppositeOp, opposites
from todo_database.operations.spelling import literal, quote


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


@Operations.implementation_for(CreateEnumOp)
def _create_enum(operations: Operations, operation: CreateEnumOp) -> None:
    values = ", ".join(literal(value) for value in operation.values)
    operations.execute(f"CREATE TYPE {quote(operations, operation.name)} AS ENUM ({values})")


@Operations.implementation_for(DropEnumOp)
def _drop_enum(operations: Operations, operation: DropEnumOp) -> None:
    operations.execute(f"DROP TYPE {quote(operations, operation.name)}")


@Operations.implementation_for(AddEnumValueOp)
def _add_enum_value(operations: Operations, operation: AddEnumValueOp) -> None:
    where = f" BEFORE {literal(operation.before)}" if operation.before else ""
    if operation.after:
        where = f" AFTER {literal(operation.after)}"
    name = quote(operations, operation.name)
    # IF NOT EXISTS: a downgrade leaves the value, and the upgrade that follows meets it.
    value = literal(operation.value)
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
