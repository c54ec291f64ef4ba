"""Alembic's environment for the todo schema.

The story of a run: resolve the database (or take the connection a test or tool
hands in); for a run that changes the schema, check the revisions, take the deploy
lock, bound every lock wait; configure the comparison; run the revisions, each in
its own transaction.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

import migrations.rowsecurity  # noqa: F401  (registers the row-security operations)
import models
from migrations import autogen, deploy
from migrations.connect import migration_connection

config = context.config
log = logging.getLogger("migrations")

if config.config_file_name and "connection" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

x_arguments = context.get_x_argument(as_dictionary=True)
settings = deploy.Settings.from_config(config, x_arguments)


def changes_schema() -> bool:
    """upgrade, downgrade and stamp name a destination; check, revision and current do not."""
    try:
        context.get_revision_argument()
    except KeyError:
        return False
    return True


def is_downgrade() -> bool:
    """Only ``alembic downgrade`` itself is held to the floor; tests downgrade freely."""
    command = getattr(config.cmd_opts, "cmd", None)
    return command is not None and command[0].__name__ == "downgrade"


def current_revisions() -> tuple[str, ...]:
    return tuple(context.get_context().get_current_heads())


def run_offline() -> None:
    """Render the SQL of the requested revisions (``--sql``) without a database."""
    context.configure(
        dialect_name="postgresql",
        target_metadata=models.metadata,
        literal_binds=True,
        transaction_per_migration=True,
        **autogen.COMPARE_OPTIONS,
    )
    deploy.check_single_head(context.script)
    for statement in settings.session_statements():
        context.execute(statement)
    with context.begin_transaction():
        context.run_migrations()


def configure_online(connection: Connection) -> None:
    object_filter = autogen.ObjectFilter(connection)
    context.configure(
        connection=connection,
        target_metadata=models.metadata,
        transaction_per_migration=True,
        include_name=object_filter.include_name,
        include_object=object_filter.include_object,
        process_revision_directives=autogen.process_revision_directives(config),
        compare_row_security=x_arguments.get("row_security") != "off",
        **autogen.COMPARE_OPTIONS,
    )


def run_migrations() -> None:
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with migration_connection(config) as connection:
        configure_online(connection)
        if not changes_schema() or connection.in_transaction():
            # A read-only command, or a caller (a test) that owns the transaction.
            run_migrations()
            return

        deploy.check_single_head(context.script)
        with (
            connection.engine.connect() as lock_connection,
            deploy.deploy_lock(lock_connection, settings) as watch,
        ):
            current = current_revisions()
            if not getattr(config.cmd_opts, "purge", False):  # stamp --purge: the way out
                deploy.check_known_revisions(context.script, current)
            if is_downgrade():
                destination = context.get_revision_argument()
                assert not isinstance(destination, tuple), "a downgrade has one destination"
                deploy.check_downgrade_floor(context.script, destination, settings.downgrade_floor)
            for statement in settings.session_statements():
                connection.exec_driver_sql(statement)
            connection.commit()
            watch.watch(connection)
            deploy.run_with_retries(run_migrations, settings, watch, current_revisions)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
