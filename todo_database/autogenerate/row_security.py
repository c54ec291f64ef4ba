"""Autogenerate comparison: declared row security against what the database holds.

Reads the catalog through the run's snapshot (:mod:`todo_database.catalog.snapshot`:
:func:`todo_database.catalog.security.read_catalog`, the functions too), has each kind
compared by its own module (:mod:`.policies`, :mod:`.privileges`, :mod:`.roles`,
:mod:`.functions`; the ENABLE/FORCE switches here) and emits the operations of
:mod:`todo_database.operations` that bring the database to the declarations. Runs after
Alembic's own comparators, so policies come after the tables they reference in an
upgrade and go before them in a downgrade.

Policy expressions are compared as PostgreSQL itself prints them
(:mod:`todo_database.autogenerate.deparse`). A table the models drop gets its row
security taken apart first, so that the downgrade that recreates it brings all of it
back. Roles are ensured by every revision whose operations name them, whatever the
cluster that generates it already holds, so a fresh database can always replay the
chain.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation
from alembic.operations.ops import DropTableOp, UpgradeOps
from alembic.util import DispatchPriority, PriorityDispatchResult

from models.security import DATABASE_GRANTS, Policy, RowSecurity
from todo_database.autogenerate import deparse, policies, privileges, roles
from todo_database.autogenerate import functions as routines
from todo_database.autogenerate import order as dependency_order
from todo_database.catalog import snapshot
from todo_database.catalog.security import Catalog
from todo_database.declarations import row_security as declarations
from todo_database.operations import row_security as switches

#: ``context.configure(compare_row_security=False)`` (``alembic -x row_security=off``)
#: switches this comparison off.
OPTION = declarations.COMPARE_OPTION


def diff_table(
    table: str,
    declaration: RowSecurity,
    catalog: Catalog,
    deparsed: dict[str, tuple[str | None, str | None]],
) -> list[MigrateOperation]:
    """Operations that bring one existing-or-new `table` to its `declaration`;
    `deparsed` is its declared policies' (USING, WITH CHECK) as PostgreSQL prints them."""
    return [
        *switch_ops(table, declaration, catalog),
        *policies.policy_ops(table, declaration, catalog, deparsed),
        *privileges.grant_ops(table, declaration, catalog),
    ]


def take_apart(table: str, catalog: Catalog) -> list[MigrateOperation]:
    """Everything row-level a table has, removed: for a table the models drop, so
    that the downgrade, which recreates the table, recreates all of it too."""
    gone = RowSecurity(enabled=False, forced=False)
    sequences = [column for t, column in catalog.sequence_usage if t == table]
    return [
        *privileges.sequence_ops(table, sequences, None, catalog),
        *privileges.grant_ops(table, gone, catalog),
        *policies.policy_ops(table, gone, catalog, {}),
        *reversed(switch_ops(table, gone, catalog)),
    ]


def switch_ops(table: str, declaration: RowSecurity, catalog: Catalog) -> list[MigrateOperation]:
    enabled, forced = catalog.switches.get(table, (False, False))
    result: list[MigrateOperation] = []
    if declaration.enabled != enabled:
        switch = (
            switches.EnableRowSecurityOp if declaration.enabled else switches.DisableRowSecurityOp
        )
        result.append(switch(table))
    if declaration.forced != forced:
        force = switches.ForceRowSecurityOp if declaration.forced else switches.NoForceRowSecurityOp
        result.append(force(table))
    return result


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def compare_row_security(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: set[str | None]
) -> Any:
    connection = autogen_context.connection
    if connection is None or None not in schemas or not autogen_context.opts.get(OPTION, True):
        return PriorityDispatchResult.CONTINUE

    deparsed = deparse.for_run(autogen_context)
    held_now = snapshot.for_run(autogen_context.migration_context, connection)
    catalog = held_now.security
    # For the order of the revision's operations (a table dropped after the policies
    # that read it): what the policies read, as they are and as declared.
    dependency_order.remember_policy_reads(autogen_context.migration_context, catalog.policy_tables)
    dependency_order.remember_policy_reads(autogen_context.migration_context, deparsed.policy_reads)
    tables = deparse.compared_tables(autogen_context)
    # Functions before the policies that call them (after them in a downgrade).
    changes: list[MigrateOperation] = routines.diff_functions(
        declarations.declared_functions(tables), deparsed.functions, held_now.functions
    )
    declared: dict[tuple[str, str], Policy] = {}
    for table in tables:
        declaration = declarations.row_security(table)
        if declaration is not None:
            changes += diff_table(table.name, declaration, catalog, deparsed.policies[table.name])
            changes += privileges.sequence_ops(
                table.name, privileges.serial_columns(table), declaration, catalog
            )
            declared.update({(table.name, p.name): p for p in declaration.policies})
    changes += privileges.database_grant_ops(DATABASE_GRANTS, catalog)
    first, changes = policies.out_of_the_way(
        changes, catalog, policies.columns_going(upgrade_ops), declared
    )
    upgrade_ops.ops[:0] = first
    # Taken apart just before the drop, in place: the downgrade rebuilds it right after
    # recreating the table.
    for index in reversed(range(len(upgrade_ops.ops))):
        dropped = upgrade_ops.ops[index]
        if isinstance(dropped, DropTableOp) and dropped.schema is None:
            upgrade_ops.ops[index:index] = take_apart(dropped.table_name, catalog)
    upgrade_ops.ops += roles.role_ops(catalog)
    upgrade_ops.ops += [roles.ensure(role) for role in roles.ensured_roles(changes, catalog)]
    upgrade_ops.ops += roles.login_settings_ops(catalog)
    upgrade_ops.ops += changes
    return PriorityDispatchResult.CONTINUE
