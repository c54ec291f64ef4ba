"""Autogenerate comparison: declared row security against the live catalog.

Reads ``pg_roles``, ``pg_class.relrowsecurity``/``relforcerowsecurity``,
``pg_policies`` and the tables' ACLs in four queries, and emits the operations of
:mod:`todo_database.operations.row_level` that bring the database to the
declarations. Runs after Alembic's own comparators, so policies come after the
tables they reference in an upgrade and go before them in a downgrade.

Policy expressions are compared as PostgreSQL itself prints them
(:mod:`todo_database.autogenerate.deparse`). A table the models drop gets its row security taken
apart first, so that the downgrade that recreates it brings all of it back. Roles are
ensured by every revision whose operations name them, whatever the cluster that
generates it already holds, so a fresh database can always replay the chain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation
from alembic.operations.ops import (
    AlterColumnOp,
    DropColumnOp,
    DropTableOp,
    ModifyTableOps,
    UpgradeOps,
)
from alembic.util import DispatchPriority, PriorityDispatchResult
from sqlalchemy import Table
from sqlalchemy.engine import Connection

from models.security import (
    DATABASE_GRANTS,
    PUBLIC,
    ROLES,
    DatabaseGrant,
    Policy,
    RowSecurity,
    declared_role,
)
from todo_database.autogenerate import deparse
from todo_database.autogenerate import order as dependency_order
from todo_database.declarations import row_security as declarations
from todo_database.declarations.grantees import managed_grantee
from todo_database.declarations.row_security import declared_row_security
from todo_database.operations import functions as routines
from todo_database.operations import row_level as ops

#: ``context.configure(compare_row_security=False)`` (``alembic -x row_security=off``)
#: switches this comparison off.
OPTION = declarations.COMPARE_OPTION

__all__ = ["OPTION", "PUBLIC", "Catalog", "declared_row_security", "diff_table", "read_catalog"]


@dataclass
class Catalog:
    """What the database has, for the tables and roles this project manages."""

    roles: set[str] = field(default_factory=set)
    #: Each managed role's attributes (``models.security.ROLE_ATTRIBUTES``).
    role_attributes: dict[str, dict[str, bool]] = field(default_factory=dict)
    #: The roles each managed role is a member of.
    memberships: dict[str, set[str]] = field(default_factory=dict)
    #: Managed roles something in this database depends on (a grant, a policy).
    roles_used_here: set[str] = field(default_factory=set)
    #: Roles that may use the sequence behind each serial column, by (table, column).
    sequence_usage: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: The columns each policy's expressions read, of any table: (table, column).
    policy_columns: dict[tuple[str, str], set[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    #: The other tables each policy's expressions read, by (table, policy).
    policy_tables: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    switches: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    policies: dict[str, dict[str, Policy]] = field(default_factory=lambda: defaultdict(dict))
    grants: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    #: Privileges a managed role may pass on (WITH GRANT OPTION): never declared, so drift.
    grant_options: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    #: Column privileges, by (table, role): privilege -> the columns it is held on.
    column_grants: dict[tuple[str, str], dict[str, frozenset[str]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    #: Column privileges a managed role may pass on: drift too.
    column_grant_options: dict[tuple[str, str], dict[str, frozenset[str]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    #: Privileges on the database itself, by managed grantee (WITH GRANT OPTION or not).
    database_grants: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Settings of each managed role and of its login members (``Role.login_settings``),
    #: by role: member -> (its role-wide settings, its settings in this database).
    login_settings: dict[str, dict[str, tuple[dict[str, str], dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    #: The settings this server knows (``transaction_timeout`` is PostgreSQL 17's).
    known_settings: set[str] = field(default_factory=set)


_ROLES = f"""
    SELECT r.rolname, {", ".join(ops.ROLE_COLUMNS.values())},
           ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                 WHERE m.member = r.oid)
    FROM pg_roles r WHERE r.rolname = ANY(%(roles)s)
"""
_ROLES_USED_HERE = """
    SELECT DISTINCT r.rolname FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
    WHERE d.refclassid = 'pg_authid'::regclass AND r.rolname = ANY(%(roles)s)
      AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""
_SWITCHES = """
    SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
    WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p')
"""
_POLICIES = """
    SELECT tablename, policyname, cmd, roles::text[], qual, with_check, permissive = 'PERMISSIVE'
    FROM pg_policies WHERE schemaname = current_schema()
"""
_GRANTS = f"""
    SELECT c.relname, coalesce(r.rolname, 'public'), a.privilege_type, a.is_grantable
    FROM pg_class c
    CROSS JOIN LATERAL aclexplode(c.relacl) a
    LEFT JOIN pg_roles r ON r.oid = a.grantee
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND {managed_grantee("a.grantee", "c.relowner")}
"""


# Sequences a serial column owns (deptype 'a'; identity columns' are 'i' and need no grant).
_SEQUENCES = f"""
    SELECT t.relname, a.attname,
           ARRAY(SELECT coalesce(r.rolname::text, 'public') FROM aclexplode(s.relacl) x
                 LEFT JOIN pg_roles r ON r.oid = x.grantee
                 WHERE x.privilege_type = 'USAGE' AND {managed_grantee("x.grantee", "s.relowner")})
    FROM pg_class s
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
    JOIN pg_class t ON t.oid = d.refobjid
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
    WHERE s.relkind = 'S' AND t.relnamespace = current_schema()::regnamespace
"""
_POLICY_COLUMNS = """
    SELECT c.relname, p.polname, r.relname, a.attname
    FROM pg_policy p
    JOIN pg_class c ON c.oid = p.polrelid
    JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
    JOIN pg_class r ON r.oid = d.refobjid
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE c.relnamespace = current_schema()::regnamespace
"""
# A table a policy reads is recorded by the columns it reads (refobjsubid > 0), or whole
# when it reads none.
_POLICY_TABLES = """
    SELECT DISTINCT c.relname, p.polname, r.relname
    FROM pg_policy p
    JOIN pg_class c ON c.oid = p.polrelid
    JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
                    AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class r ON r.oid = d.refobjid
    WHERE c.relnamespace = current_schema()::regnamespace AND r.oid <> c.oid
"""
_COLUMN_GRANTS = f"""
    SELECT c.relname, a.attname, coalesce(r.rolname, 'public'), x.privilege_type, x.is_grantable
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    CROSS JOIN LATERAL aclexplode(a.attacl) x
    LEFT JOIN pg_roles r ON r.oid = x.grantee
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND {managed_grantee("x.grantee", "c.relowner")}
"""


_DATABASE_GRANTS = f"""
    SELECT coalesce(r.rolname, 'public'), a.privilege_type
    FROM pg_database d
    CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
    LEFT JOIN pg_roles r ON r.oid = a.grantee
    WHERE d.datname = current_database() AND {managed_grantee("a.grantee", "d.datdba")}
"""


_LOGIN_SETTINGS = f"""
    SELECT g.rolname, m.rolname,
           coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                     WHERE s.setrole = m.oid AND s.setdatabase = 0), '{{}}'),
           coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                     WHERE s.setrole = m.oid AND s.setdatabase =
                           (SELECT oid FROM pg_database WHERE datname = current_database())),
                    '{{}}')
    FROM pg_roles g
    CROSS JOIN LATERAL (SELECT g.oid, g.rolname UNION
                        {ops.LOGIN_MEMBERS.format(role="g.rolname")}) m
    WHERE g.rolname = ANY(%(roles)s)
"""


def _settings(config: Iterable[str]) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in config)


def read_catalog(connection: Connection, roles: Iterable[str] = ROLES) -> Catalog:
    managed = {"roles": list(roles)}
    declared_settings = {
        key for role in managed["roles"] for key in declared_role(role).login_settings
    }
    catalog = Catalog()
    for name, *attributes, groups in connection.exec_driver_sql(_ROLES, managed):
        catalog.roles.add(name)
        catalog.role_attributes[name] = dict(zip(ops.ROLE_COLUMNS, attributes, strict=True))
        catalog.memberships[name] = set(groups)
    catalog.roles_used_here = set(connection.exec_driver_sql(_ROLES_USED_HERE, managed).scalars())
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
        to = tuple(sorted(policy_roles))
        catalog.policies[table][name] = Policy(name, command, to, using, with_check, permissive)
    for table, column, users in connection.exec_driver_sql(_SEQUENCES, managed):
        catalog.sequence_usage[(table, column)] = set(users)
    for table, name, other, column in connection.exec_driver_sql(_POLICY_COLUMNS):
        catalog.policy_columns[(table, name)].add((other, column))
    for table, name, other in connection.exec_driver_sql(_POLICY_TABLES):
        catalog.policy_tables[(table, name)].add(other)
    for table, role, privilege, grantable in connection.exec_driver_sql(_GRANTS, managed):
        catalog.grants[(table, role)] = catalog.grants.get((table, role), frozenset()) | {privilege}
        if grantable:
            catalog.grant_options[(table, role)] = catalog.grant_options.get(
                (table, role), frozenset()
            ) | {privilege}
    for role, member, everywhere, here in connection.exec_driver_sql(_LOGIN_SETTINGS, managed):
        catalog.login_settings[role][member] = (_settings(everywhere), _settings(here))
    catalog.known_settings = set(
        connection.exec_driver_sql(
            "SELECT name FROM pg_settings WHERE name = ANY(%(names)s)",
            {"names": sorted(declared_settings)},
        ).scalars()
    )
    for role, privilege in connection.exec_driver_sql(_DATABASE_GRANTS, managed):
        catalog.database_grants[role] = catalog.database_grants.get(role, frozenset()) | {privilege}
    for table, column, role, privilege, grantable in connection.exec_driver_sql(
        _COLUMN_GRANTS, managed
    ):
        held = catalog.column_grants[(table, role)]
        held[privilege] = held.get(privilege, frozenset()) | {column}
        if grantable:
            passable = catalog.column_grant_options[(table, role)]
            passable[privilege] = passable.get(privilege, frozenset()) | {column}
    return catalog


def diff_table(
    table: str,
    declaration: RowSecurity,
    catalog: Catalog,
    deparsed: dict[str, tuple[str | None, str | None]],
) -> list[MigrateOperation]:
    """Operations that bring one existing-or-new `table` to its `declaration`;
    `deparsed` is its declared policies' (USING, WITH CHECK) as PostgreSQL prints them."""
    return [
        *_switch_ops(table, declaration, catalog),
        *_policy_ops(table, declaration, catalog, deparsed),
        *_grant_ops(table, declaration, catalog),
    ]


def serial_columns(table: Table) -> list[str]:
    """The columns PostgreSQL will back with a sequence (SERIAL): an integer primary key
    that increments by itself, with no identity and no default of its own."""
    column = table.autoincrement_column
    if column is None or column.identity is not None or column.server_default is not None:
        return []
    return [column.name] if isinstance(column.type, sa.Integer) else []


def sequence_ops(
    table: str, columns: Iterable[str], declaration: RowSecurity | None, catalog: Catalog
) -> list[MigrateOperation]:
    """The roles that may insert rows into `table` may use the sequences behind its
    serial `columns`, and no other managed grantee may."""
    inserting = {
        grant.role
        for grant in (declaration.grants if declaration else ())
        if "INSERT" in grant.privileges
    }
    result: list[MigrateOperation] = []
    for column in columns:
        have = catalog.sequence_usage.get((table, column), set())
        for role in sorted(have - inserting):
            result.append(ops.RevokeSequenceUsageOp(table, column, role))
        for role in sorted(inserting - have):
            result.append(ops.GrantSequenceUsageOp(table, column, role))
    return result


def take_apart(table: str, catalog: Catalog) -> list[MigrateOperation]:
    """Everything row-level a table has, removed: for a table the models drop, so
    that the downgrade, which recreates the table, recreates all of it too."""
    gone = RowSecurity(enabled=False, forced=False)
    sequences = [column for t, column in catalog.sequence_usage if t == table]
    return [
        *sequence_ops(table, sequences, None, catalog),
        *_grant_ops(table, gone, catalog),
        *_policy_ops(table, gone, catalog, {}),
        *reversed(_switch_ops(table, gone, catalog)),
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
        ops.DropPolicyOp(table, policy) for name, policy in existing.items() if name not in wanted
    ]
    for name, policy in wanted.items():
        current = existing.get(name)
        if current is None:
            result.append(ops.CreatePolicyOp(table, policy))
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
            result.append(ops.AlterPolicyOp(table, policy, current))
        else:
            result += [ops.DropPolicyOp(table, current), ops.CreatePolicyOp(table, policy)]
    return result


def _grant_ops(table: str, declaration: RowSecurity, catalog: Catalog) -> list[MigrateOperation]:
    """Managed grantees (:func:`managed_grantee`) hold exactly what is declared,
    on the table and on its columns, and never the right to pass it on."""
    wanted: dict[str, frozenset[str]] = {}
    wanted_columns: dict[str, dict[str, frozenset[str]]] = defaultdict(dict)
    for grant in declaration.grants:
        if grant.columns is None:
            wanted[grant.role] = wanted.get(grant.role, frozenset()) | grant.privileges
            continue
        for privilege in grant.privileges:
            held = wanted_columns[grant.role].get(privilege, frozenset())
            wanted_columns[grant.role][privilege] = held | grant.columns
    result: list[MigrateOperation] = []
    granted = {role for (name, role) in (*catalog.grants, *catalog.column_grants) if name == table}
    for role in sorted({*ROLES, PUBLIC, *wanted, *wanted_columns, *granted}):
        want = wanted.get(role, frozenset())
        have = catalog.grants.get((table, role), frozenset())
        if passable := catalog.grant_options.get((table, role), frozenset()) & want:
            revoke = ops.RevokePrivilegesOp(table, role, _ordered(passable), grant_option=True)
            result.append(revoke)
        if missing := want - have:
            result.append(ops.GrantPrivilegesOp(table, role, _ordered(missing)))
        if extra := have - want:
            result.append(ops.RevokePrivilegesOp(table, role, _ordered(extra)))
        result += _column_grant_ops(table, role, wanted_columns.get(role, {}), catalog)
    return result


def _column_grant_ops(
    table: str, role: str, want: dict[str, frozenset[str]], catalog: Catalog
) -> list[MigrateOperation]:
    have = catalog.column_grants.get((table, role), {})
    passable = catalog.column_grant_options.get((table, role), {})
    result: list[MigrateOperation] = []
    for privilege in _ordered({*want, *have}):
        wanted, held = want.get(privilege, frozenset()), have.get(privilege, frozenset())
        on = (privilege,)
        if options := passable.get(privilege, frozenset()) & wanted:
            result.append(
                ops.RevokePrivilegesOp(
                    table, role, on, grant_option=True, columns=tuple(sorted(options))
                )
            )
        if missing := wanted - held:
            result.append(ops.GrantPrivilegesOp(table, role, on, columns=tuple(sorted(missing))))
        if extra := held - wanted:
            result.append(ops.RevokePrivilegesOp(table, role, on, columns=tuple(sorted(extra))))
    return result


def _ordered(privileges: Iterable[str]) -> tuple[str, ...]:
    order = ops.PRIVILEGES
    return tuple(
        sorted(privileges, key=lambda p: (order.index(p) if p in order else len(order), p))
    )


#: Database privileges in the order GRANT lists them.
_DATABASE_PRIVILEGES = ("CREATE", "CONNECT", "TEMPORARY")


def database_grant_ops(
    declared: Iterable[DatabaseGrant], catalog: Catalog
) -> list[MigrateOperation]:
    """Managed grantees hold exactly the declared privileges on the database itself
    (a grant option counts as a privilege held, and goes with it)."""
    wanted: dict[str, frozenset[str]] = {}
    for grant in declared:
        wanted[grant.role] = wanted.get(grant.role, frozenset()) | grant.privileges
    result: list[MigrateOperation] = []
    for role in sorted({*wanted, *catalog.database_grants}):
        want, have = wanted.get(role, frozenset()), catalog.database_grants.get(role, frozenset())
        if extra := have - want:
            ordered = tuple(p for p in _DATABASE_PRIVILEGES if p in extra)
            result.append(ops.RevokeDatabasePrivilegesOp(role, ordered))
        if missing := want - have:
            ordered = tuple(p for p in _DATABASE_PRIVILEGES if p in missing)
            result.append(ops.GrantDatabasePrivilegesOp(role, ordered))
    return result


def ensured_roles(operations: Iterable[MigrateOperation], catalog: Catalog) -> list[str]:
    """The roles a revision ensures: every declared role the cluster lacks, and every
    one its operations grant to, name in a policy or make own a function while
    nothing in this database uses it yet. Roles are cluster-wide, so a role another
    database (a test database, another branch) created is no sign that this
    database's revisions ever did: a revision must run on a fresh cluster too."""
    named: set[str] = set()
    for operation in operations:
        if isinstance(operation, ops.CreatePolicyOp | ops.AlterPolicyOp):
            named.update(operation.policy.roles)
        elif isinstance(
            operation,
            ops.GrantPrivilegesOp
            | ops.GrantSequenceUsageOp
            | ops.GrantDatabasePrivilegesOp
            | routines.GrantExecuteOp,
        ):
            named.add(operation.role)
        elif isinstance(operation, routines.FunctionOwnerOp):
            named.add(operation.owner)
    return [
        role
        for role in ROLES
        if role not in catalog.roles or (role in named and role not in catalog.roles_used_here)
    ]


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
    if isinstance(operation, ops.CreatePolicyOp | ops.DropPolicyOp | ops.AlterPolicyOp):
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
        first.append(ops.DropPolicyOp(table, catalog.policies[table][name]))
        moved.add((table, name))
    kept = [operation for operation in changes if _policy_of(operation) not in moved]
    kept += [
        ops.CreatePolicyOp(t, declared[(t, n)]) for t, n in sorted(moved) if (t, n) in declared
    ]
    return first, kept


def role_ops(catalog: Catalog) -> list[MigrateOperation]:
    """Managed roles that exist with other attributes or memberships than declared:
    put back as declared (``alembic check`` reports them: a role made BYPASSRLS, or a
    member of another role, switches isolation off)."""
    result: list[MigrateOperation] = []
    for name in ROLES:
        if name not in catalog.roles:
            continue
        role = declared_role(name)
        have = catalog.role_attributes[name]
        want = role.attributes()
        if changed := {k: v for k, v in want.items() if have.get(k) != v}:
            result.append(ops.AlterRoleOp(str(name), changed, {k: have[k] for k in changed}))
        groups = catalog.memberships.get(name, set())
        result += [
            ops.RevokeRoleOp(group, str(name)) for group in sorted(groups - set(role.member_of))
        ]
        result += [
            ops.GrantRoleOp(group, str(name)) for group in sorted(set(role.member_of) - groups)
        ]
    return result


def login_settings_ops(catalog: Catalog) -> list[MigrateOperation]:
    """A managed role whose declared ``login_settings`` it, or one of its login members,
    does not get exactly in a session of this database (its settings here over its own),
    put back as declared: a role a person or an injection changed, or a login role made
    a member since without them."""
    result: list[MigrateOperation] = []
    for name in ROLES:
        if name not in catalog.roles:
            continue
        declared = declared_role(name).login_settings
        want = {k: v for k, v in declared.items() if k in catalog.known_settings}
        held = catalog.login_settings.get(name, {})
        # What a session of the member gets here: its settings in this database outrank
        # its own.
        if any({**everywhere, **here} != want for everywhere, here in held.values()):
            everywhere, here = held.get(str(name), ({}, {}))
            result.append(ops.SetLoginSettingsOp(str(name), dict(declared), {**everywhere, **here}))
    return result


def _ensure(role: str) -> ops.EnsureRoleOp:
    declared = declared_role(role)
    return ops.EnsureRoleOp(str(role), declared.attributes(), declared.member_of)


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def compare_row_security(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: set[str | None]
) -> Any:
    connection = autogen_context.connection
    if connection is None or None not in schemas or not autogen_context.opts.get(OPTION, True):
        return PriorityDispatchResult.CONTINUE

    deparsed = deparse.for_run(autogen_context)
    catalog = read_catalog(connection)
    # For the order of the revision's operations (a table dropped after the policies
    # that read it): what the policies read, as they are and as declared.
    dependency_order.remember_policy_reads(autogen_context.migration_context, catalog.policy_tables)
    dependency_order.remember_policy_reads(autogen_context.migration_context, deparsed.policy_reads)
    tables = deparse.compared_tables(autogen_context)
    # Functions before the policies that call them (after them in a downgrade).
    held = routines.read_functions(connection, "'public'::regnamespace")
    changes: list[MigrateOperation] = routines.diff_functions(
        declarations.declared_functions(tables), deparsed.functions, held
    )
    declared: dict[tuple[str, str], Policy] = {}
    for table in tables:
        declaration = declarations.row_security(table)
        if declaration is not None:
            changes += diff_table(table.name, declaration, catalog, deparsed.policies[table.name])
            changes += sequence_ops(table.name, serial_columns(table), declaration, catalog)
            declared.update({(table.name, p.name): p for p in declaration.policies})
    changes += database_grant_ops(DATABASE_GRANTS, catalog)
    first, changes = out_of_the_way(changes, catalog, columns_going(upgrade_ops), declared)
    upgrade_ops.ops[:0] = first
    # Taken apart just before the drop, in place: the downgrade rebuilds it right after
    # recreating the table.
    for index in reversed(range(len(upgrade_ops.ops))):
        dropped = upgrade_ops.ops[index]
        if isinstance(dropped, DropTableOp) and dropped.schema is None:
            upgrade_ops.ops[index:index] = take_apart(dropped.table_name, catalog)
    upgrade_ops.ops += role_ops(catalog)
    upgrade_ops.ops += [_ensure(role) for role in ensured_roles(changes, catalog)]
    upgrade_ops.ops += login_settings_ops(catalog)
    upgrade_ops.ops += changes
    return PriorityDispatchResult.CONTINUE
