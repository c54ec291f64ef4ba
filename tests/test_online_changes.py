"""Autogenerate writes online schema changes for tables that already hold rows.

An index on an existing table is built CONCURRENTLY in an autocommit block, after
``op.drop_index_if_invalid``; a foreign key on an existing table is added NOT VALID
and validated in its own step; a revision changing several existing tables takes
their locks first. Each case is generated from a model change, written as a
revision, and applied to a database at head.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import produce_migrations, render_python_code
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

import migrations.rowsecurity  # noqa: F401  (registers the operations, as env.py does)
import models
from migrations import autogen, online
from tests.conftest import (
    HEAD,
    config_with_versions,
    scalar,
    write_revision,
)


def changed_models() -> sa.MetaData:
    """The models plus an index on todo.title and a foreign key from session to todo."""
    changed = sa.MetaData(naming_convention=models.metadata.naming_convention)
    for table in models.metadata.sorted_tables:
        table.to_metadata(changed)
    todo, session = changed.tables["todo"], changed.tables["session"]
    sa.Index("todo_title_idx", todo.c.title)
    session.append_column(sa.Column("lastTodoId", sa.Uuid(), nullable=True))
    session.append_constraint(sa.ForeignKeyConstraint(["lastTodoId"], ["todo.id"]))
    return changed


def generate(engine: Engine) -> MigrationScript:
    """What ``revision --autogenerate`` writes for :func:`changed_models`."""
    with engine.connect() as connection:
        object_filter = autogen.ObjectFilter(connection)
        context = MigrationContext.configure(
            connection,
            opts={
                "include_name": object_filter.include_name,
                "include_object": object_filter.include_object,
                **autogen.COMPARE_OPTIONS,
            },
        )
        script = produce_migrations(context, changed_models())
        online.rewriter(context, (), [script])
        online.lock_up_front(context, [script])
    return script


def test_online_changes_are_generated_and_apply(head_engine: Engine, tmp_path: Path) -> None:
    with head_engine.begin() as connection:
        connection.exec_driver_sql(
            """INSERT INTO "user" (id, name, email, "emailVerified")
               VALUES ('u1', 'Ada', 'ada@example.com', true)"""
        )
        connection.exec_driver_sql("INSERT INTO todo (user_id, title) VALUES ('u1', 'rows exist')")

    script = generate(head_engine)
    assert script.upgrade_ops is not None
    rendered = render_python_code(script.upgrade_ops)
    assert "op.lock_tables(['session', 'todo'])" in rendered
    assert "with op.get_context().autocommit_block():" in rendered
    assert "op.drop_index_if_invalid('todo_title_idx')" in rendered
    assert "postgresql_concurrently=True" in rendered
    assert "postgresql_not_valid=True" in rendered
    assert "op.validate_constraint('session', 'session_lastTodoId_fkey')" in rendered

    assert script.downgrade_ops is not None
    config = config_with_versions(head_engine, tmp_path)
    revision = write_revision(
        tmp_path,
        render_python_code(script.upgrade_ops),
        render_python_code(script.downgrade_ops),
    )
    command.upgrade(config, revision)

    index_valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'todo_title_idx'::regclass"
    assert scalar(head_engine, index_valid) is True
    fk_validated = (
        "SELECT convalidated FROM pg_constraint WHERE conname = 'session_lastTodoId_fkey'"
    )
    assert scalar(head_engine, fk_validated) is True

    command.downgrade(config, HEAD)
    assert scalar(head_engine, "SELECT to_regclass('todo_title_idx')") is None
