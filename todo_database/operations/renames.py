"""Renames of what follows a renamed table or column: ``op.rename_constraint``,
``op.rename_index`` and ``op.rename_sequence``, each its own reverse backwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations


def _quoter(operations: Operations) -> Callable[[str], str]:
    return operations.impl.dialect.identifier_preparer.quote


@Operations.register_operation("rename_constraint")
@dataclass
class RenameConstraintOp(MigrateOperation):
    """``ALTER TABLE ... RENAME CONSTRAINT``; a primary key's or unique constraint's
    index takes the new name with it."""

    table_name: str
    old_name: str
    new_name: str

    @classmethod
    def rename_constraint(
        cls, operations: Operations, table_name: str, old_name: str, new_name: str
    ) -> None:
        operations.invoke(cls(table_name, old_name, new_name))

    def reverse(self) -> RenameConstraintOp:
        return RenameConstraintOp(self.table_name, self.new_name, self.old_name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("rename_constraint", self.table_name, self.old_name, self.new_name)

    def sql(self, quote: Callable[[str], str]) -> str:
        return (
            f"ALTER TABLE {quote(self.table_name)} RENAME CONSTRAINT {quote(self.old_name)} "
            f"TO {quote(self.new_name)}"
        )


@Operations.register_operation("rename_index")
@dataclass
class RenameIndexOp(MigrateOperation):
    """``ALTER INDEX ... RENAME TO``, for an index that backs no constraint.
    `table_name` is the index's table, for the locks the revision takes up front; the
    statement needs only the index's name."""

    old_name: str
    new_name: str
    table_name: str | None = None

    @classmethod
    def rename_index(cls, operations: Operations, old_name: str, new_name: str) -> None:
        operations.invoke(cls(old_name, new_name))

    def reverse(self) -> RenameIndexOp:
        return RenameIndexOp(self.new_name, self.old_name, self.table_name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("rename_index", self.old_name, self.new_name)

    def sql(self, quote: Callable[[str], str]) -> str:
        return f"ALTER INDEX {quote(self.old_name)} RENAME TO {quote(self.new_name)}"


@Operations.register_operation("rename_sequence")
@dataclass
class RenameSequenceOp(MigrateOperation):
    """``ALTER SEQUENCE ... RENAME TO``: a serial column's sequence. The column's
    default holds it by number (``nextval('...'::regclass)``), so it follows."""

    old_name: str
    new_name: str
    table_name: str | None = None

    @classmethod
    def rename_sequence(cls, operations: Operations, old_name: str, new_name: str) -> None:
        operations.invoke(cls(old_name, new_name))

    def reverse(self) -> RenameSequenceOp:
        return RenameSequenceOp(self.new_name, self.old_name, self.table_name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("rename_sequence", self.old_name, self.new_name)

    def sql(self, quote: Callable[[str], str]) -> str:
        return f"ALTER SEQUENCE {quote(self.old_name)} RENAME TO {quote(self.new_name)}"


DependentRename = RenameConstraintOp | RenameIndexOp | RenameSequenceOp


@Operations.implementation_for(RenameConstraintOp)
@Operations.implementation_for(RenameIndexOp)
@Operations.implementation_for(RenameSequenceOp)
def _rename_dependent(operations: Operations, operation: DependentRename) -> None:
    operations.execute(operation.sql(_quoter(operations)))


@renderers.dispatch_for(RenameConstraintOp)
def _render_rename_constraint(context: AutogenContext, operation: RenameConstraintOp) -> str:
    return (
        f"op.rename_constraint({operation.table_name!r}, {operation.old_name!r}, "
        f"{operation.new_name!r})"
    )


@renderers.dispatch_for(RenameIndexOp)
def _render_rename_index(context: AutogenContext, operation: RenameIndexOp) -> str:
    return f"op.rename_index({operation.old_name!r}, {operation.new_name!r})"


@renderers.dispatch_for(RenameSequenceOp)
def _render_rename_sequence(context: AutogenContext, operation: RenameSequenceOp) -> str:
    return f"op.rename_sequence({operation.old_name!r}, {operation.new_name!r})"
