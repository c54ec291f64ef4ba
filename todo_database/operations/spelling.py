"""How the operations write names and values: in SQL, and in a revision's ``op.*`` call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.operations import Operations


def quote(operations: Operations, name: str) -> str:
    """`name` as an SQL identifier, quoted only when it must be."""
    return str(operations.impl.dialect.identifier_preparer.quote(name))


def literal(value: str) -> str:
    """`value` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def qualified_table(operations: Operations, table: str, schema: str | None) -> str:
    quoted = quote(operations, table)
    return f"{quote(operations, schema)}.{quoted}" if schema else quoted


def roles_sql(operations: Operations, roles: Sequence[str]) -> str:
    """Roles as GRANT and CREATE POLICY list them (``public`` is the keyword PUBLIC)."""
    return ", ".join("PUBLIC" if role == "public" else quote(operations, role) for role in roles)


def plain(value: Any) -> Any:
    """`value` as a revision writes it: a declared ``Role`` as its name, so that a
    revision never depends on how the models spell a role today."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return type(value)(plain(item) for item in value)
    return value


def call(name: str, *args: Any, **kwargs: Any) -> str:
    rendered = [repr(plain(arg)) for arg in args]
    rendered += [f"{key}={plain(value)!r}" for key, value in kwargs.items() if value is not None]
    return f"op.{name}({', '.join(rendered)})"
