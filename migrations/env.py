"""Alembic's environment for the todo schema.

The story of a run: load the revisions (one line for a file that does not import);
resolve the database (or take the connection a test or tool hands in); for a run
that changes the schema, check the revisions, take the deploy lock, make a restore
point when revisions that destroy data are to run on Neon, bound every lock wait;
configure the comparison; run the revisions, each in its own transaction.
Whatever ends a run early (a lost connection, a signal) ends it in one line.
A plain ``alembic revision`` (no ``--autogenerate``) needs no database at all.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from todo_database.deploy import runner as deploy

# The models first: everything below reads them, and models that do not import are one
# line, not a traceback.
models = deploy.import_models()
# Every operation a revision may call (op.create_policy, op.lock_tables...).
deploy.register_operations()

from todo_database.deploy.connect import migration_connection  # noqa: E402
from todo_database.neon import restore_point  # noqa: E402

config = context.config
log = logging.getLogger("migrations")

if (
    config.config_file_name
    and "connection" not in config.attributes
    and config.attributes.get("configure_logging", True)
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

x_arguments = context.get_x_argument(as_dictionary=True)
settings = deploy.Settings.from_config(config, x_arguments)
restore_settings = restore_point.Settings.from_config(config, x_arguments)


def command_name() -> str | None:
    """The ``alembic`` subcommand being run (None when called from code)."""
    command = getattr(config.cmd_opts, "cmd", None)
    return command[0].__name__ if command is not None else None


def changes_schema() -> bool:
    """upgrade, downgrade and stamp name a destination; check, revision and current do not."""
    try:
        context.get_revision_argument()
    except KeyError:
        return False
    return True


def writes_an_empty_revision() -> bool:
    """``alembic revision`` or ``merge`` without ``--autogenerate``: nothing to compare."""
    autogenerate = getattr(config.cmd_opts, "autogenerate", False)
    return command_name() in ("revision", "merge") and not autogenerate


def current_revisions() -> tuple[str, ...]:
    return tuple(context.get_context().get_current_heads())


def run_offline() -> None:
    """Render the SQL of the requested revisions (``--sql``) without a database."""
    context.configure(
        dialect_name="postgresql",
        # Rendered for psql, not a driver: a % stays one (pyformat would double it).
        dialect_opts={"paramstyle": "named"},
        target_metadata=models.metadata,
        literal_binds=True,
        transaction_per_migration=True,
    )
    deploy.check_single_head(context.script)
    for statement in settings.session_statements():
        context.execute(statement)
    restore_point.comment_offline(context.get_context())
    with context.begin_transaction():
        context.run_migrations()


def compares() -> bool:
    """Whether this run may compare the models with the database: ``revision
    --autogenerate`` and ``check``, or commands run from code (tests, tools)."""
    return command_name() in (None, "revision", "check")


def configure_online(connection: Connection) -> None:
    if not compares():
        context.configure(
            connection=connection,
            target_metadata=models.metadata,
            transaction_per_migration=True,
        )
        return
    # What autogenerate compares, registered by importing it: only a run that compares
    # loads it.
    import todo_database.autogenerate.constraints
    import todo_database.autogenerate.enums
    import todo_database.autogenerate.row_security  # noqa: F401
    from todo_database.autogenerate import revision as autogen

    if command_name() in ("revision", "check"):
        deploy.check_models_imported(models)
    object_filter = autogen.ObjectFilter(connection)
    context.configure(
        connection=connection,
        target_metadata=models.metadata,
        transaction_per_migration=True,
        include_name=object_filter.include_name,
        include_object=object_filter.include_object,
        render_item=autogen.render_item,
        process_revision_directives=autogen.process_revision_directives(
            drop_empty=command_name() == "revision"
        ),
        compare_row_security=x_arguments.get("row_security") != "off",
        **autogen.COMPARE_OPTIONS,
    )


def run_migrations() -> None:
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with (
        deploy.failures_in_one_line(settings, deploying=changes_schema()),
        migration_connection(config, settings) as connection,
    ):
        configure_online(connection)
        if not changes_schema() or connection.in_transaction():
            # A read-only command, or a caller (a test) that owns the transaction.
            run_migrations()
            return

        deploy.check_single_head(context.script)
        with deploy.deploy_lock(connection, settings) as watch:
            current = current_revisions()
            if not getattr(config.cmd_opts, "purge", False):  # stamp --purge: the way out
                deploy.check_known_revisions(context.script, current)
            if command_name() == "downgrade":  # tests and tools downgrade freely
                destination = context.get_revision_argument()
                assert not isinstance(destination, tuple), "a downgrade has one destination"
                deploy.check_downgrade_floor(
                    context.script, current, destination, settings.downgrade_floor
                )
            restore_point.make_before_data_is_lost(context.get_context(), restore_settings)
            settings.apply_to_session(connection)
            connection.commit()
            watch.watch(connection)
            deploy.run_with_retries(run_migrations, settings, watch, connection)


deploy.load_revisions(context.script)
if writes_an_empty_revision():
    # Alembic writes the file; this run only registers the post-write hook that proves it.
    import todo_database.autogenerate.revision  # noqa: F401
elif context.is_offline_mode():
    run_offline()
else:
    run_online()
