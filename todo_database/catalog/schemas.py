"""Which schema a reader reads: SQL that yields the schema's oid, given to a reader's
``schema`` argument; and schemas by name, as a deploy asks of its lock's."""

from __future__ import annotations

from sqlalchemy.engine import Connection

#: The schema revisions migrate: the first of the search path.
CURRENT = "current_schema()::regnamespace"
#: The session's temporary schema, where autogenerate makes the declarations' twins
#: (:mod:`todo_database.autogenerate.deparse`).
TEMPORARY = "pg_my_temp_schema()"
#: ``public`` by name, for what an extension may have put there.
PUBLIC = "'public'::regnamespace"


def relation_exists(connection: Connection, schema: str, name: str) -> bool:
    """Whether schema `schema` holds a relation `name`, asked of the catalog:
    ``to_regclass()`` needs USAGE on a schema another role made."""
    return bool(
        connection.exec_driver_sql(
            "SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %(schema)s AND c.relname = %(table)s)",
            {"schema": schema, "table": name},
        ).scalar()
    )


def schema_owner(connection: Connection, schema: str) -> tuple[str | None, str]:
    """(the owner of schema `schema`, None when there is none; the session's role),
    both quoted as identifiers."""
    owner, role = connection.exec_driver_sql(
        "SELECT (SELECT quote_ident(pg_get_userbyid(nspowner)) FROM pg_namespace"
        " WHERE nspname = %(schema)s), quote_ident(current_user)",
        {"schema": schema},
    ).one()
    return owner, role
