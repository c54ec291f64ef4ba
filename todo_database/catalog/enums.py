"""Enum types as the catalog holds them: of the current schema, no extension's."""

from __future__ import annotations

from sqlalchemy.engine import Connection

#: The enum types of the schema that no extension owns, with their labels in order.
ENUMS = """
    SELECT t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
    FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
    WHERE t.typnamespace = current_schema()::regnamespace
      AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                      AND d.objid = t.oid AND d.deptype = 'e')
    GROUP BY t.typname
"""


def read_enums(connection: Connection) -> dict[str, tuple[str, ...]]:
    """Each enum type's labels, in their order, by type name."""
    return {name: tuple(values) for name, values in connection.exec_driver_sql(ENUMS)}
