"""Privileges: on tables and their columns (``op.grant_privileges``), on the database
itself (``op.grant_database_privileges``) and on the sequence behind a serial column
(``op.grant_sequence_usage``), each with its revoking reverse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import Operations

from todo_database.operations.opposites import OppositeOp, opposites
from todo_database.operations.spelling import (
    call,
    literal,
    qualified_table,
    quote,
    roles_sql,
)

#: Table privileges in the order GRANT statements list them (MAINTAIN: PostgreSQL 17+).
PRIVILEGES = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "MAINTAIN",
)


@dataclass
class _PrivilegesOp(OppositeOp):
    """Grant or revoke table privileges; each is the other's reverse.

    `grant_option` is WITH GRANT OPTION on a grant, and on a revoke GRANT OPTION FOR:
    only the right to pass the privileges on. With `columns`, the privileges are on
    those columns only (``GRANT SELECT (id, name) ON ...``)."""

    table_name: str
    role: str
    privileges: tuple[str, ...]
    schema: str | None = None
    grant_option: bool = False
    columns: tuple[str, ...] = ()

    #: GRANT and REVOKE change the catalog, not the table: no lock to take up front
    #: (:mod:`todo_database.online.forms`).
    takes_no_table_lock: ClassVar[bool] = True
    #: The ``op.`` method's keyword for `grant_option`.
    option_keyword: ClassVar[str] = ""

    def statement(self, privileges: str, table: str, role: str) -> str:
        raise NotImplementedError

    def to_diff_tuple(self) -> tuple[Any, ...]:
        only_option = ("grant option",) if self.grant_option else ()
        on_columns = (self.columns,) if self.columns else ()
        return (
            self.operation_name,
            self.schema,
            self.table_name,
            self.role,
            self.privileges,
            *on_columns,
            *only_option,
        )


@Operations.register_operation("grant_privileges")
class GrantPrivilegesOp(_PrivilegesOp):
    operation_name = "grant_privileges"
    option_keyword = "with_grant_option"

    @classmethod
    def grant_privileges(
        cls,
        operations: Operations,
        table_name: str,
        role: str,
        privileges: Sequence[str],
        *,
        schema: str | None = None,
        with_grant_option: bool = False,
        columns: Sequence[str] = (),
    ) -> None:
        operations.invoke(
            cls(table_name, role, tuple(privileges), schema, with_grant_option, tuple(columns))
        )

    def statement(self, privileges: str, table: str, role: str) -> str:
        option = " WITH GRANT OPTION" if self.grant_option else ""
        return f"GRANT {privileges} ON {table} TO {role}{option}"


@Operations.register_operation("revoke_privileges")
class RevokePrivilegesOp(_PrivilegesOp):
    operation_name = "revoke_privileges"
    option_keyword = "grant_option"

    @classmethod
    def revoke_privileges(
        cls,
        operations: Operations,
        table_name: str,
        role: str,
        privileges: Sequence[str],
        *,
        schema: str | None = None,
        grant_option: bool = False,
        columns: Sequence[str] = (),
    ) -> None:
        operations.invoke(
            cls(table_name, role, tuple(privileges), schema, grant_option, tuple(columns))
        )

    def statement(self, privileges: str, table: str, role: str) -> str:
        option = "GRANT OPTION FOR " if self.grant_option else ""
        return f"REVOKE {option}{privileges} ON {table} FROM {role}"


opposites(GrantPrivilegesOp, RevokePrivilegesOp)


def _change_privileges(operations: Operations, operation: _PrivilegesOp) -> None:
    table = qualified_table(operations, operation.table_name, operation.schema)
    role = roles_sql(operations, [operation.role])
    privileges = ", ".join(operation.privileges)
    if operation.columns:
        columns = ", ".join(quote(operations, column) for column in operation.columns)
        privileges = ", ".join(f"{privilege} ({columns})" for privilege in operation.privileges)
    operations.execute(operation.statement(privileges, table, role))


for _privileges in (GrantPrivilegesOp, RevokePrivilegesOp):
    Operations.implementation_for(_privileges)(_change_privileges)


@dataclass
class _DatabasePrivilegesOp(OppositeOp):
    """``GRANT`` or ``REVOKE`` privileges on the database the revision runs in (named at
    run time: a revision serves every database of the project); each the other's
    reverse."""

    role: str
    privileges: tuple[str, ...]

    takes_no_table_lock: ClassVar[bool] = True

    @classmethod
    def database_privileges(
        cls, operations: Operations, role: str, privileges: Sequence[str]
    ) -> None:
        operations.invoke(cls(role, tuple(privileges)))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.operation_name, self.role, self.privileges)


@Operations.register_operation("grant_database_privileges", "database_privileges")
class GrantDatabasePrivilegesOp(_DatabasePrivilegesOp):
    operation_name = "grant_database_privileges"


@Operations.register_operation("revoke_database_privileges", "database_privileges")
class RevokeDatabasePrivilegesOp(_DatabasePrivilegesOp):
    operation_name = "revoke_database_privileges"


opposites(GrantDatabasePrivilegesOp, RevokeDatabasePrivilegesOp)


def _change_database_privileges(operations: Operations, operation: _DatabasePrivilegesOp) -> None:
    role = roles_sql(operations, [operation.role]).replace("'", "''")
    verb, to = (
        ("GRANT", "TO") if isinstance(operation, GrantDatabasePrivilegesOp) else ("REVOKE", "FROM")
    )
    privileges = ", ".join(operation.privileges)
    operations.execute(
        f"""DO $$
BEGIN
    EXECUTE format('{verb} {privileges} ON DATABASE %I {to} {role}', current_database());
END
$$"""
    )


for _database_privileges in (GrantDatabasePrivilegesOp, RevokeDatabasePrivilegesOp):
    Operations.implementation_for(_database_privileges)(_change_database_privileges)


@dataclass
class _SequenceUsageOp(OppositeOp):
    """``GRANT`` or ``REVOKE USAGE`` on the sequence behind a serial column (an integer
    primary key): a role that may insert rows needs it to draw the next id. Found at
    run time (``pg_get_serial_sequence``), so it works on a table the same revision
    creates. Identity columns need no such grant."""

    table_name: str
    column_name: str
    role: str

    takes_no_table_lock: ClassVar[bool] = True

    @classmethod
    def sequence_usage(
        cls, operations: Operations, table_name: str, column_name: str, role: str
    ) -> None:
        operations.invoke(cls(table_name, column_name, role))


@Operations.register_operation("grant_sequence_usage", "sequence_usage")
class GrantSequenceUsageOp(_SequenceUsageOp):
    operation_name = "grant_sequence_usage"


@Operations.register_operation("revoke_sequence_usage", "sequence_usage")
class RevokeSequenceUsageOp(_SequenceUsageOp):
    operation_name = "revoke_sequence_usage"


opposites(GrantSequenceUsageOp, RevokeSequenceUsageOp)


def _change_sequence_usage(operations: Operations, operation: _SequenceUsageOp) -> None:
    table = literal(quote(operations, operation.table_name))
    role = roles_sql(operations, [operation.role])
    verb, to = (
        ("GRANT", "TO") if isinstance(operation, GrantSequenceUsageOp) else ("REVOKE", "FROM")
    )
    operations.execute(
        f"""DO $$
BEGIN
    EXECUTE '{verb} USAGE ON SEQUENCE '
        || pg_get_serial_sequence({table}, {literal(operation.column_name)}) || ' {to} {role}';
END
$$"""
    )


for _sequence_usage in (GrantSequenceUsageOp, RevokeSequenceUsageOp):
    Operations.implementation_for(_sequence_usage)(_change_sequence_usage)


@renderers.dispatch_for(_DatabasePrivilegesOp)
def _render_database_privileges(context: AutogenContext, operation: _DatabasePrivilegesOp) -> str:
    return call(operation.operation_name, operation.role, list(operation.privileges))


@renderers.dispatch_for(_SequenceUsageOp)
def _render_sequence_usage(context: AutogenContext, operation: _SequenceUsageOp) -> str:
    return call(
        operation.operation_name, operation.table_name, operation.column_name, operation.role
    )


@renderers.dispatch_for(_PrivilegesOp)
def _render_privileges(context: AutogenContext, operation: _PrivilegesOp) -> str:
    return call(
        operation.operation_name,
        operation.table_name,
        operation.role,
        list(operation.privileges),
        schema=operation.schema,
        columns=list(operation.columns) or None,
        **{operation.option_keyword: operation.grant_option or None},
    )


#: The operations here that act on one table (a ``table_name`` attribute each).
TABLE_OPERATIONS = (
    _PrivilegesOp,
    _SequenceUsageOp,
)
