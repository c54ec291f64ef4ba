"""Alembic's environment for the todo schema.

The story of a run: resolve the database (or take the connection a test or tool
hands in), configure the comparison, run the revisions.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context

import migrations.rowsecurity  # noqa: F401  (registers the row-security operations)
import models
from migrations import autogen
from migrations.connect import migration_connection

config = context.config
log = logging.getLogger("migrations")

if config.config_file_name and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_offline() -> None:
    """Render the SQL of the requested revisions (``--sql``) without a database."""
    context.configure(
        dialect_name="postgresql",
        target_metadata=models.metadata,
        literal_binds=True,
        transaction_per_migration=True,
        **autogen.COMPARE_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with migration_connection(config) as connection:
        object_filter = autogen.ObjectFilter(connection)
        x_arguments = context.get_x_argument(as_dictionary=True)
        context.configure(
            connection=connection,
            target_metadata=models.metadata,
            transaction_per_migration=True,
            include_name=object_filter.include_name,
            include_object=object_filter.include_object,
            process_revision_directives=autogen.drop_empty_revision(config),
            compare_row_security=x_arguments.get("row_security") != "off",
            **autogen.COMPARE_OPTIONS,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
