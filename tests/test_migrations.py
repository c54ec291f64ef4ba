"""Migration chain tests beyond pytest-alembic's built-in ones.

The built-in tests (single head, upgrade, model definitions match the DDL, up/down
consistency, and the experimental downgrade-leaves-no-trace switched on in
pyproject.toml) are collected by the plugin when pytest runs with
``--test-alembic`` (set in ``addopts``), each on its own throwaway database.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pytest_alembic.tests.experimental import (
    test_all_models_register_on_metadata as all_models_register_on_metadata,
)

TODO_REVISION = "652a3aa950af"


def test_all_models_register_on_metadata(alembic_runner: Any) -> None:
    """A model module that ``models/__init__.py`` forgets to import is invisible to
    autogenerate; pytest-alembic's check, pointed at the models package."""
    all_models_register_on_metadata(alembic_runner, model_package="models")


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
