"""The revision chain, beyond pytest-alembic's default tests.

The four default tests (single head, upgrade, model definitions match the DDL,
up/down consistency) are collected by the plugin (``--test-alembic`` in
``addopts``), each on its own throwaway database. The experimental ones run here:
they need to be told where the models are, and that revisions building indexes
CONCURRENTLY cannot run inside the transaction downgrade_leaves_no_trace rolls back;
those revisions get their own no-trace check on a database of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_alembic
import sqlalchemy as sa
from alembic import command
from pytest_alembic.tests.experimental import (
    test_all_models_register_on_metadata as all_models_register_on_metadata,
)
from pytest_alembic.tests.experimental import (
    test_downgrade_leaves_no_trace as downgrade_leaves_no_trace,
)
from sqlalchemy.engine import Connection, Engine

from tests.conftest import SCRIPT, make_alembic_config


def online_revisions() -> list[str]:
    """Revisions that run statements outside a transaction (CREATE INDEX CONCURRENTLY)."""
    return [
        revision.revision
        for revision in SCRIPT.walk_revisions()
        if "autocommit_block" in Path(str(revision.path)).read_text()
    ]


def schema_snapshot(connection: Connection) -> dict[str, Any]:
    """Everything a revision may change in the public schema, as the catalog prints it."""
    queries = {
        "columns": """SELECT table_name, column_name, data_type, is_nullable, column_default
                      FROM information_schema.columns WHERE table_schema = 'public'""",
        "indexes": """SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid), indisvalid
                      FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                      WHERE c.relnamespace = 'public'::regnamespace""",
        "constraints": """SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
                          FROM pg_constraint WHERE connamespace = 'public'::regnamespace""",
        "policies": "SELECT tablename, policyname, cmd, roles, qual, with_check FROM pg_policies",
        "security": """SELECT relname, relrowsecurity, relforcerowsecurity, relacl::text[]
                       FROM pg_class WHERE relnamespace = 'public'::regnamespace""",
    }
    return {
        name: sorted(map(tuple, connection.exec_driver_sql(query).all()), key=repr)
        for name, query in queries.items()
    }


TODO_REVISION = "652a3aa950af"


def test_all_models_register_on_metadata(alembic_runner: Any) -> None:
    """A model module that ``models/__init__.py`` forgets to import is invisible to
    autogenerate; pytest-alembic's check, pointed at the models package."""
    all_models_register_on_metadata(alembic_runner, model_package="models")


def test_downgrade_leaves_no_trace(alembic_engine: Engine) -> None:
    config = pytest_alembic.Config(
        alembic_config=make_alembic_config(), skip_revisions=online_revisions()
    )
    with pytest_alembic.runner(config=config, engine=alembic_engine) as runner:
        downgrade_leaves_no_trace(runner)


@pytest.mark.parametrize("revision", online_revisions())
def test_online_revision_leaves_no_trace(alembic_engine: Engine, revision: str) -> None:
    script = SCRIPT.get_revision(revision)
    assert script is not None
    before = str(script.down_revision)
    config = make_alembic_config(alembic_engine)

    command.upgrade(config, before)
    with alembic_engine.connect() as connection:
        snapshot_before = schema_snapshot(connection)
    command.upgrade(config, revision)
    with alembic_engine.connect() as connection:
        snapshot_after = schema_snapshot(connection)
    command.downgrade(config, before)
    with alembic_engine.connect() as connection:
        snapshot_downgraded = schema_snapshot(connection)

    assert snapshot_after != snapshot_before, "the revision changed nothing"
    assert all(valid for *_, valid in snapshot_after["indexes"]), "an index was left INVALID"
    assert snapshot_downgraded == snapshot_before


def test_rows_survive_upgrade_to_head_and_back(
    alembic_runner: Any, alembic_engine: sa.Engine
) -> None:
    alembic_runner.migrate_up_to(TODO_REVISION)
    with alembic_engine.begin() as connection:
        connection.execute(
            sa.text(
                'INSERT INTO "user" (id, name, email, "emailVerified") '
                "VALUES ('u1', 'Ada', 'ada@example.com', true)"
            )
        )
        connection.execute(
            sa.text("INSERT INTO todo (user_id, title) VALUES ('u1', 'write the tests')")
        )

    alembic_runner.migrate_up_to("heads")
    alembic_runner.migrate_down_to(TODO_REVISION)

    with alembic_engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                'SELECT u.email, t.title, t.completed FROM todo t JOIN "user" u ON u.id = t.user_id'
            )
        ).all()
    assert rows == [("ada@example.com", "write the tests", False)]
