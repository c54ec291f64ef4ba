"""Autogenerate comparison: declared row security against the live catalog.

Reads ``pg_roles``, ``pg_class.relrowsecurity``/``relforcerowsecurity``,
``pg_policies`` and the tables' ACLs in four queries, and emits the operations of
:mod:`migrations.rowsecurity.operations` that bring the database to the
declarations. Runs after Alembic's own comparators, so policies come after the
tables they reference in an upgrade and go before them in a downgrade.

Policy expressions are compared as PostgreSQL itself prints them: each declared
expression is deparsed by creating the policy on a temporary copy of the table's
columns inside a savepoint that is rolled back. The real table is never locked,
and one round trip per policy is the whole cost.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation
from alembic.operations.ops import UpgradeOps
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult
from sqlalchemy import MetaData, Table
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from migrations.rowsecurity import operations as ops
from models.security import ROLES, ROW_SECURITY, Policy, RowSecurity

log = logging.getLogger(__name__)

PUBLIC = "public"

#: ``context.configure(compare_row_security=False)`` (``alembic -x row_security=off``)
#: switches this comparison off.
OPTION = "compare_row_security"


@dataclass
class Catalog:
    """What the database has, for the tables and roles this project manages."""

    roles: set[str] = field(default_factory=set)
    switches: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    policies: dict[str, dict[str, Policy]] = field(default_factory=lambda: defaultdict(dict))
    grants: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    #: Privileges a managed role may pass on (WITH GRANT OPTION): never declared, so drift.
    grant_options: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)


_ROLES = "SELECT rolname FROM pg_roles WHERE rolname = ANY(%(roles)s)"
_SWITCHES = """
    SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
    WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p')
"""
_POLICIES = """
    SELECT tablename, policyname, cmd, roles::text[], qual, with_check, permissive = 'PERMISSIVE'
    FROM pg_policies WHERE schemaname = current_schema()
"""
# PUBLIC is grantee 0, which pg_roles does not list: it is managed too (nothing for it).
_GRANTS = """
    SELECT c.relname, coalesce(r.rolname, 'public'), a.privilege_type, a.is_grantable
    FROM pg_class c
    CROSS JOIN LATERAL aclexplode(c.relacl) a
    LEFT JOIN pg_roles r ON r.oid = a.grantee
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND (a.grantee = 0 OR r.rolname = ANY(%(roles)s))
"""


def read_catalog(connection: Connection, roles: Iterable[str] = ROLES) -> Catalog:
    managed = {"roles": list(roles)}
    catalog = Catalog()
    catalog.roles = set(connection.exec_driver_sql(_ROLES, managed).scalars())
    for table, enabled, forced in connection.exec_driver_sql(_SWITCHES):
        catalog.switches[table] = (enabled, forced)
    for (
        table,
        name,
        command,
        policy_roles,
        using,
        with_check,
        permissive,
    ) in connection.exec_driver_sql(_POLICIES):
        roles = tuple(sorted(policy_roles))
        catalog.policies[table][name] = Policy(name, command, roles, using, with_check, permissive)
    for table, role, privilege, grantable in connection.exec_driver_sql(_GRANTS, managed):
        catalog.grants[(table, role)] = catalog.grants.get((table, role), frozenset()) | {privilege}
        if grantable:
            catalog.grant_options[(table, role)] = catalog.grant_options.get(
                (table, role), frozenset()
            ) | {privilege}
    return catalog


def declared_row_security(metadata: MetaData) -> Iterator[tuple[Table, RowSecurity]]:
    """Each table that declares row security, in dependency order."""
    for table in metadata.sorted_tables:
        declaration = table.info.get(ROW_SECURITY)
        if isinstance(declaration, RowSecurity):
            yield table, declaration


def deparse_policies(
    connection: Connection, table: Table, policies: Iterable[Policy]
) -> dict[str, Policy]:
    """The declared `policies` as ``pg_policies`` would show them on `table`.

    The probe has the model's columns, not the live table's, so a policy on a column
    this same revision adds deparses too, and a declaration that does not parse is
    reported now rather than at upgrade time.
    """
    policies = [policy for policy in policies if policy.using or policy.with_check]
    if not policies:
        return {}
    probe = f"rls_probe_{table.name}"
    quote = connection.dialect.identifier_preparer.quote
    columns = ", ".join(
        f"{quote(column.name)} {column.type.compile(dialect=connection.dialect)}"
        for column in table.columns
    )
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql(f"CREATE TEMP TABLE {quote(probe)} ({columns})")
        for policy in policies:
            clauses = f"{ops.policy_kind(policy)} {ops.policy_expressions(policy)}"
            try:
                nested = connection.begin_nested()
                connection.exec_driver_sql(
                    f"CREATE POLICY {quote(policy.name)} ON pg_temp.{quote(probe)} {clauses}"
                )
                nested.commit()
            except DBAPIError as exc:
                nested.rollback()
                reason = str(exc.orig).splitlines()[0]
                raise CommandError(f"policy {policy.name!r} on {table.name!r}: {reason}") from None
        rows = connection.exec_driver_sql(
            "SELECT policyname, qual, with_check FROM pg_policies "
            "WHERE schemaname = pg_my_temp_schema()::regnamespace::text AND tablename = %(probe)s",
            {"probe": probe},
        )
        deparsed = {name: (using, with_check) for name, using, with_check in rows}
    finally:
        savepoint.rollback()
    by_name = {policy.name: policy for policy in policies}
    return {
        name: Policy(
            name,
            by_name[name].command,
            tuple(sorted(by_name[name].roles)),
            using,
            with_check,
            by_name[name].permissive,
        )
        for name, (using, with_check) in deparsed.items()
    }


def diff_table(
    table: str,
    declaration: RowSecurity,
    catalog: Catalog,
    deparsed: dict[str, Policy],
) -> list[MigrateOperation]:
    """Operations that bring one existing-or-new `table` to its `declaration`."""
    return [
        *_switch_ops(table, declaration, catalog),
        *_policy_ops(table, declaration, catalog, deparsed),
        *_grant_ops(table, declaration, catalog),
    ]


def _switch_ops(table: str, declaration: RowSecurity, catalog: Catalog) -> list[MigrateOperation]:
    enabled, forced = catalog.switches.get(table, (False, False))
    result: list[MigrateOperation] = []
    if declaration.enabled != enabled:
        switch = ops.EnableRowSecurityOp if declaration.enabled else ops.DisableRowSecurityOp
        result.append(switch(table))
    if declaration.forced != forced:
        force = ops.ForceRowSecurityOp if declaration.forced else ops.NoForceRowSecurityOp
        result.append(force(table))
    return result


def _policy_ops(
    table: str, declaration: RowSecurity, catalog: Catalog, deparsed: dict[str, Policy]
) -> list[MigrateOperation]:
    """Drop what is not declared, create what is missing, alter in place where PostgreSQL
    can (roles, USING, WITH CHECK), replace otherwise."""
    existing = catalog.policies.get(table, {})
    wanted = {policy.name: policy for policy in declaration.policies}
    result: list[MigrateOperation] = [
        ops.DropPolicyOp(table, policy) for name, policy in existing.items() if name not in wanted
    ]
    for name, policy in wanted.items():
        current = existing.get(name)
        if current is None:
            result.append(ops.CreatePolicyOp(table, policy))
            continue
        normal = replace(deparsed.get(name, policy), roles=tuple(sorted(policy.roles)))
        if normal == current:
            continue
        in_place = (
            (policy.command, policy.permissive) == (current.command, current.permissive)
            and (policy.using is None) == (current.using is None)
            and (policy.with_check is None) == (current.with_check is None)
        )
        if in_place:
            result.append(ops.AlterPolicyOp(table, policy, current))
        else:
            result += [ops.DropPolicyOp(table, current), ops.CreatePolicyOp(table, policy)]
    return result


def _grant_ops(table: str, declaration: RowSecurity, catalog: Catalog) -> list[MigrateOperation]:
    """Managed grantees (the declared roles and PUBLIC) hold exactly what is declared,
    and never the right to pass it on."""
    wanted = {grant.role: frozenset(grant.privileges) for grant in declaration.grants}
    result: list[MigrateOperation] = []
    for role in sorted({*ROLES, PUBLIC, *wanted}):
        want = wanted.get(role, frozenset())
        have = catalog.grants.get((table, role), frozenset())
        if passable := catalog.grant_options.get((table, role), frozenset()) & want:
            revoke = ops.RevokePrivilegesOp(table, role, _ordered(passable), grant_option=True)
            result.append(revoke)
        if missing := want - have:
            result.append(ops.GrantPrivilegesOp(table, role, _ordered(missing)))
        if extra := have - want:
            result.append(ops.RevokePrivilegesOp(table, role, _ordered(extra)))
    return result


def _ordered(privileges: Iterable[str]) -> tuple[str, ...]:
    order = ops.PRIVILEGES
    return tuple(
        sorted(privileges, key=lambda p: (order.index(p) if p in order else len(order), p))
    )


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def compare_row_security(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: set[str | None]
) -> Any:
    connection = autogen_context.connection
    metadata = autogen_context.metadata
    if (
        connection is None
        or not isinstance(metadata, MetaData)
        or None not in schemas
        or not autogen_context.opts.get(OPTION, True)
    ):
        return PriorityDispatchResult.CONTINUE

    catalog = read_catalog(connection)
    upgrade_ops.ops.extend(ops.EnsureRoleOp(role) for role in ROLES if role not in catalog.roles)
    for table, declaration in declared_row_security(metadata):
        deparsed = deparse_policies(connection, table, declaration.policies)
        upgrade_ops.ops.extend(diff_table(table.name, declaration, catalog, deparsed))
    return PriorityDispatchResult.CONTINUE
