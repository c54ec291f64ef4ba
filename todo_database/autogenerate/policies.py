"""Policies compared: dropped, created, altered in place where PostgreSQL can or
replaced, and moved out of the way of a column the revision drops or retypes."""

from __future__ import annotations

from alembic.operations import MigrateOperation
from alembic.operations.ops import (
    AlterColumnOp,
    DropColumnOp,
    DropTableOp,
    ModifyTableOps,
    UpgradeOps,
)

from models.security import (
    Policy,
    RowSecurity,
)
from todo_database.catalog.security import Catalog
from todo_database.operations.policies import AlterPolicyOp, CreatePolicyOp, DropPolicyOp


def policy_ops(
    table: str,
    declaration: RowSecurity,
    catalog: Catalog,
    deparsed: dict[str, tuple[str | None, str | None]],
) -> list[MigrateOperation]:
    """Drop what is not declared, create what is missing, alter in place where PostgreSQL
    can (roles, USING, WITH CHECK), replace otherwise."""
    existing = catalog.policies.get(table, {})
    wanted = {policy.name: policy for policy in declaration.policies}
    result: list[MigrateOperation] = [
        DropPolicyOp(table, policy) for name, policy in existing.items() if name not in wanted
    ]
    for name, policy in wanted.items():
        current = existing.get(name)
        if current is None:
            result.append(CreatePolicyOp(table, policy))
            continue
        using, with_check = deparsed.get(name, (policy.using, policy.with_check))
        normal = Policy(
            name, policy.command, tuple(sorted(policy.roles)), using, with_check, policy.permissive
        )
        if normal == current:
            continue
        in_place = (
            (policy.command, policy.permissive) == (current.command, current.permissive)
            and (policy.using is None) == (current.using is None)
            and (policy.with_check is None) == (current.with_check is None)
        )
        if in_place:
            result.append(AlterPolicyOp(table, policy, current))
        else:
            result += [
                DropPolicyOp(table, current),
                CreatePolicyOp(table, policy),
            ]
    return result


def columns_going(upgrade_ops: UpgradeOps) -> set[tuple[str, str]]:
    """(table, column) of every column the revision drops or changes the type of; a
    dropped table's columns as ``(table, "*")``."""
    going: set[tuple[str, str]] = set()
    for operation in upgrade_ops.ops:
        if isinstance(operation, DropTableOp):
            going.add((operation.table_name, "*"))
        elif isinstance(operation, ModifyTableOps):
            for inner in operation.ops:
                if isinstance(inner, DropColumnOp) or (
                    isinstance(inner, AlterColumnOp) and inner.modify_type is not None
                ):
                    going.add((operation.table_name, inner.column_name))
    return going


def _policy_of(operation: MigrateOperation) -> tuple[str, str] | None:
    if isinstance(operation, CreatePolicyOp | DropPolicyOp | AlterPolicyOp):
        return (operation.table_name, operation.policy.name)
    return None


def out_of_the_way(
    changes: list[MigrateOperation],
    catalog: Catalog,
    going: set[tuple[str, str]],
    declared: dict[tuple[str, str], Policy],
) -> tuple[list[MigrateOperation], list[MigrateOperation]]:
    """(first, changes): the policies that read a column the revision drops or retypes
    must be dropped before the column goes (PostgreSQL refuses either with a policy on
    it) and, when still declared, created again after. `first` runs before the
    revision's table changes, so its downgrade recreates them after the columns are
    back."""
    dropped_tables = {table for table, column in going if column == "*"}
    first: list[MigrateOperation] = []
    moved: set[tuple[str, str]] = set()
    for (table, name), reads in sorted(catalog.policy_columns.items()):
        hit = {(t, c) for t, c in reads if (t, c) in going or (t, "*") in going}
        if not hit or table in dropped_tables:
            continue
        first.append(DropPolicyOp(table, catalog.policies[table][name]))
        moved.add((table, name))
    kept = [operation for operation in changes if _policy_of(operation) not in moved]
    kept += [CreatePolicyOp(t, declared[(t, n)]) for t, n in sorted(moved) if (t, n) in declared]
    return first, kept
