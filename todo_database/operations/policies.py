"""Policies: ``op.create_policy``, ``op.alter_policy``, ``op.drop_policy``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from models.security import Policy
from todo_database.operations.opposites import OppositeOp, opposites
from todo_database.operations.spelling import (
    call,
    qualified_table,
    quote,
    roles_sql,
)


def policy_kind(policy: Policy) -> str:
    """``AS PERMISSIVE|RESTRICTIVE FOR <command>``: what ALTER POLICY cannot change."""
    return f"AS {'PERMISSIVE' if policy.permissive else 'RESTRICTIVE'} FOR {policy.command}"


def policy_expressions(policy: Policy) -> str:
    """``USING (...) WITH CHECK (...)``, each clause only when the policy has it."""
    clauses = []
    if policy.using is not None:
        clauses.append(f"USING ({policy.using})")
    if policy.with_check is not None:
        clauses.append(f"WITH CHECK ({policy.with_check})")
    return " ".join(clauses)


def policy_clauses(policy: Policy) -> str:
    """Everything of a ``CREATE POLICY`` after ``ON <table>`` but the roles."""
    return f"{policy_kind(policy)} {policy_expressions(policy)}".rstrip()


@dataclass
class _PolicyDefinitionOp(OppositeOp):
    """Create or drop a policy. Both carry the whole definition: each is the other's
    reverse, and a drop must be able to recreate what it dropped."""

    table_name: str
    policy: Policy
    schema: str | None = None

    @classmethod
    def from_definition(
        cls,
        operations: Operations,
        table_name: str,
        name: str,
        *,
        command: str = "ALL",
        roles: Sequence[str] = ("public",),
        using: str | None = None,
        with_check: str | None = None,
        permissive: bool = True,
        schema: str | None = None,
    ) -> None:
        """``op.create_policy(...)`` / ``op.drop_policy(...)``, with the same arguments."""
        policy = Policy(name, command, tuple(roles), using, with_check, permissive)  # type: ignore[arg-type]
        operations.invoke(cls(table_name, policy, schema))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.operation_name, self.schema, self.table_name, self.policy.name)


@Operations.register_operation("create_policy", "from_definition")
class CreatePolicyOp(_PolicyDefinitionOp):
    operation_name = "create_policy"


@Operations.register_operation("drop_policy", "from_definition")
class DropPolicyOp(_PolicyDefinitionOp):
    operation_name = "drop_policy"


opposites(CreatePolicyOp, DropPolicyOp)


@Operations.register_operation("alter_policy")
@dataclass
class AlterPolicyOp(MigrateOperation):
    """ALTER POLICY: what PostgreSQL lets change in place (roles, USING, WITH CHECK).

    A change of command or of PERMISSIVE/RESTRICTIVE is a drop and a create instead.
    """

    table_name: str
    policy: Policy
    previous: Policy
    schema: str | None = None

    @classmethod
    def alter_policy(
        cls,
        operations: Operations,
        table_name: str,
        name: str,
        *,
        roles: Sequence[str],
        using: str | None = None,
        with_check: str | None = None,
        schema: str | None = None,
    ) -> None:
        # The previous definition matters only to reverse(); revisions pass the new one.
        policy = Policy(name, "ALL", tuple(roles), using, with_check)
        operations.invoke(cls(table_name, policy, policy, schema))

    def reverse(self) -> AlterPolicyOp:
        return AlterPolicyOp(self.table_name, self.previous, self.policy, self.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("alter_policy", self.schema, self.table_name, self.policy.name)


@Operations.implementation_for(CreatePolicyOp)
def _create_policy(operations: Operations, operation: CreatePolicyOp) -> None:
    policy = operation.policy
    table = qualified_table(operations, operation.table_name, operation.schema)
    operations.execute(
        f"CREATE POLICY {quote(operations, policy.name)} ON {table} {policy_kind(policy)} "
        f"TO {roles_sql(operations, policy.roles)} {policy_expressions(policy)}".rstrip()
    )


@Operations.implementation_for(DropPolicyOp)
def _drop_policy(operations: Operations, operation: DropPolicyOp) -> None:
    table = qualified_table(operations, operation.table_name, operation.schema)
    operations.execute(f"DROP POLICY {quote(operations, operation.policy.name)} ON {table}")


@Operations.implementation_for(AlterPolicyOp)
def _alter_policy(operations: Operations, operation: AlterPolicyOp) -> None:
    policy = operation.policy
    table = qualified_table(operations, operation.table_name, operation.schema)
    operations.execute(
        f"ALTER POLICY {quote(operations, policy.name)} ON {table} "
        f"TO {roles_sql(operations, policy.roles)} {policy_expressions(policy)}".rstrip()
    )


def _policy_kwargs(policy: Policy) -> dict[str, Any]:
    return {
        "command": policy.command,
        "roles": list(policy.roles),
        "using": policy.using,
        "with_check": policy.with_check,
        "permissive": None if policy.permissive else False,
    }


@renderers.dispatch_for(_PolicyDefinitionOp)
def _render_policy_definition(context: AutogenContext, operation: _PolicyDefinitionOp) -> str:
    return call(
        operation.operation_name,
        operation.table_name,
        operation.policy.name,
        **_policy_kwargs(operation.policy),
        schema=operation.schema,
    )


@renderers.dispatch_for(AlterPolicyOp)
def _render_alter_policy(context: AutogenContext, operation: AlterPolicyOp) -> str:
    policy = operation.policy
    return call(
        "alter_policy",
        operation.table_name,
        policy.name,
        roles=list(policy.roles),
        using=policy.using,
        with_check=policy.with_check,
        schema=operation.schema,
    )


#: The operations here that act on one table (a ``table_name`` attribute each).
TABLE_OPERATIONS = (
    _PolicyDefinitionOp,
    AlterPolicyOp,
)
