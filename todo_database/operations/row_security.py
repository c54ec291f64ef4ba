"""Row-level security switched on a table, and forced on its owner too
(``op.enable_row_security``, ``op.force_row_security`` and their reverses)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import Operations

from todo_database.operations.opposites import OppositeOp, opposites
from todo_database.operations.spelling import (
    call,
    qualified_table,
)


@dataclass
class _TableSwitchOp(OppositeOp):
    """``ALTER TABLE <table> <clause>``: one of four switches, each the reverse of another."""

    table_name: str
    schema: str | None = None

    #: What follows ``ALTER TABLE <table>``.
    clause: ClassVar[str] = ""

    @classmethod
    def switch(cls, operations: Operations, table_name: str, schema: str | None = None) -> None:
        """``op.<operation_name>(table_name, schema=None)``: every switch's entry point."""
        operations.invoke(cls(table_name, schema))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.operation_name, self.schema, self.table_name)


@Operations.register_operation("enable_row_security", "switch")
class EnableRowSecurityOp(_TableSwitchOp):
    clause = "ENABLE ROW LEVEL SECURITY"
    operation_name = "enable_row_security"


@Operations.register_operation("disable_row_security", "switch")
class DisableRowSecurityOp(_TableSwitchOp):
    clause = "DISABLE ROW LEVEL SECURITY"
    operation_name = "disable_row_security"


@Operations.register_operation("force_row_security", "switch")
class ForceRowSecurityOp(_TableSwitchOp):
    clause = "FORCE ROW LEVEL SECURITY"
    operation_name = "force_row_security"


@Operations.register_operation("no_force_row_security", "switch")
class NoForceRowSecurityOp(_TableSwitchOp):
    clause = "NO FORCE ROW LEVEL SECURITY"
    operation_name = "no_force_row_security"


opposites(EnableRowSecurityOp, DisableRowSecurityOp)
opposites(ForceRowSecurityOp, NoForceRowSecurityOp)


def _switch_table(operations: Operations, operation: _TableSwitchOp) -> None:
    table = qualified_table(operations, operation.table_name, operation.schema)
    operations.execute(f"ALTER TABLE {table} {operation.clause}")


for _switch in (
    EnableRowSecurityOp,
    DisableRowSecurityOp,
    ForceRowSecurityOp,
    NoForceRowSecurityOp,
):
    Operations.implementation_for(_switch)(_switch_table)


@renderers.dispatch_for(_TableSwitchOp)
def _render_switch(context: AutogenContext, operation: _TableSwitchOp) -> str:
    return call(operation.operation_name, operation.table_name, schema=operation.schema)


#: The operations here that act on one table (a ``table_name`` attribute each).
TABLE_OPERATIONS = (_TableSwitchOp,)
