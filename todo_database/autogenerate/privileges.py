"""Privileges compared: on each table and its columns, on the sequences behind serial
columns, and on the database itself; a managed grantee holds exactly what is declared."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import sqlalchemy as sa
from alembic.operations import MigrateOperation
from sqlalchemy import Table

from models.security import (
    PUBLIC,
    ROLES,
    DatabaseGrant,
    RowSecurity,
)
from todo_database.catalog.security import Catalog
from todo_database.operations.privileges import (
    PRIVILEGES,
    GrantDatabasePrivilegesOp,
    GrantPrivilegesOp,
    GrantSequenceUsageOp,
    RevokeDatabasePrivilegesOp,
    RevokePrivilegesOp,
    RevokeSequenceUsageOp,
)


def grant_ops(table: str, declaration: RowSecurity, catalog: Catalog) -> list[MigrateOperation]:
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
            revoke = RevokePrivilegesOp(table, role, _ordered(passable), grant_option=True)
            result.append(revoke)
        if missing := want - have:
            result.append(GrantPrivilegesOp(table, role, _ordered(missing)))
        if extra := have - want:
            result.append(RevokePrivilegesOp(table, role, _ordered(extra)))
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
                RevokePrivilegesOp(
                    table, role, on, grant_option=True, columns=tuple(sorted(options))
                )
            )
        if missing := wanted - held:
            result.append(GrantPrivilegesOp(table, role, on, columns=tuple(sorted(missing))))
        if extra := held - wanted:
            result.append(RevokePrivilegesOp(table, role, on, columns=tuple(sorted(extra))))
    return result


def _ordered(privileges: Iterable[str]) -> tuple[str, ...]:
    order = PRIVILEGES
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
            result.append(RevokeDatabasePrivilegesOp(role, ordered))
        if missing := want - have:
            ordered = tuple(p for p in _DATABASE_PRIVILEGES if p in missing)
            result.append(GrantDatabasePrivilegesOp(role, ordered))
    return result


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
            result.append(RevokeSequenceUsageOp(table, column, role))
        for role in sorted(inserting - have):
            result.append(GrantSequenceUsageOp(table, column, role))
    return result
