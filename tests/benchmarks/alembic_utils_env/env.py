"""``alembic check`` with alembic_utils' PGPolicy instead of todo_database.operations.

The same models, filters and comparison options as ``migrations/env.py``, and the
same database resolution (``DATABASE_URL``); row security is compared by
alembic_utils alone (this project's comparator switched off), through one ``PGPolicy``
per policy declared in ``models/`` (derived from the declarations, so both sides always
declare the same policies). Only policies: alembic_utils has no entity for
ENABLE/FORCE ROW LEVEL SECURITY or roles.
"""

from __future__ import annotations

from collections.abc import Iterator

from alembic import context
from alembic_utils.pg_policy import PGPolicy
from alembic_utils.replaceable_entity import register_entities

import models
from models.security import ROW_SECURITY, RowSecurity
from todo_database.autogenerate import revision as autogen
from todo_database.deploy.connect import migration_connection


def declared_policies() -> Iterator[PGPolicy]:
    """A PGPolicy for every policy the models declare."""
    for table in models.metadata.sorted_tables:
        declaration = table.info.get(ROW_SECURITY)
        if not isinstance(declaration, RowSecurity):
            continue
        for policy in declaration.policies:
            kind = "PERMISSIVE" if policy.permissive else "RESTRICTIVE"
            definition = f"AS {kind} FOR {policy.command} TO {', '.join(policy.roles)}"
            if policy.using is not None:
                definition += f" USING ({policy.using})"
            if policy.with_check is not None:
                definition += f" WITH CHECK ({policy.with_check})"
            yield PGPolicy(
                schema="public",
                signature=policy.name,
                on_entity=f'public."{table.name}"',
                definition=definition,
            )


register_entities(list(declared_policies()), entity_types=[PGPolicy])


def run_online() -> None:
    with migration_connection(context.config) as connection:
        object_filter = autogen.ObjectFilter(connection)
        context.configure(
            connection=connection,
            target_metadata=models.metadata,
            transaction_per_migration=True,
            include_name=object_filter.include_name,
            include_object=object_filter.include_object,
            # todo_database.autogenerate registers this project's comparator: alembic_utils
            # alone.
            compare_row_security=False,
            **autogen.COMPARE_OPTIONS,
        )
        with context.begin_transaction():
            context.run_migrations()


run_online()
