"""The revision chain, beyond pytest-alembic's default tests.

The four default tests (single head, upgrade, model definitions match the DDL,
up/down consistency) are collected by the plugin (``--test-alembic`` in
``addopts``), each on its own throwaway database. Here:

* pytest-alembic's experimental check that every model module is imported;
* every revision, walked in order on one real database, leaves no trace when it is
  downgraded: the catalog is as it was before it, whatever the revision does
  (concurrent index builds included, which pytest-alembic's own no-trace test cannot
  run inside the transaction it rolls back);
* rows survive the chain up and down.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from pytest_alembic.tests.experimental import (
    test_all_models_register_on_metadata as all_models_register_on_metadata,
)
from sqlalchemy.engine import Connection, Engine

from tests.conftest import SCRIPT, make_alembic_config
from todo_database import lint

#: Oldest first.
CHAIN = list(reversed(list(SCRIPT.walk_revisions())))


#: Alembic's own table: created by the first upgrade, left by the last downgrade.
ALEMBIC = "alembic_version"


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
        # Privileges in any order: a revoke and a grant back reorder the ACL, nothing more.
        "security": """SELECT relname, relrowsecurity, relforcerowsecurity,
                              ARRAY(SELECT unnest(coalesce(relacl, acldefault('r', relowner)))
                                    ::text ORDER BY 1)
                       FROM pg_class WHERE relnamespace = 'public'::regnamespace""",
        "column privileges": """SELECT attrelid::regclass::text, attname,
                                       ARRAY(SELECT unnest(attacl)::text ORDER BY 1)
                                FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                                WHERE c.relnamespace = 'public'::regnamespace
                                  AND a.attacl IS NOT NULL""",
        "functions": """SELECT oid::regprocedure::text, prosrc, prosecdef, proconfig,
                               pg_get_userbyid(proowner),
                               ARRAY(SELECT unnest(coalesce(proacl, acldefault('f', proowner)))
                                     ::text ORDER BY 1)
                        FROM pg_proc WHERE pronamespace = 'public'::regnamespace""",
    }
    return {
        name: sorted(
            (
                tuple(row)
                for row in connection.exec_driver_sql(query)
                if not str(row[0]).startswith(ALEMBIC)
            ),
            key=repr,
        )
        for name, query in queries.items()
    }


def snapshot(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        return schema_snapshot(connection)


def test_all_models_register_on_metadata(alembic_runner: Any) -> None:
    """A model module that ``models/__init__.py`` forgets to import is invisible to
    autogenerate; pytest-alembic's check, pointed at the models package."""
    all_models_register_on_metadata(alembic_runner, model_package="models")


def test_every_revision_downgrades_without_a_trace(alembic_engine: Engine) -> None:
    config = make_alembic_config(alembic_engine)
    for revision in CHAIN:
        before = snapshot(alembic_engine)
        command.upgrade(config, revision.revision)
        after = snapshot(alembic_engine)
        assert all(valid for *_, valid in after["indexes"]), f"{revision.revision}: INVALID index"
        command.downgrade(config, str(revision.down_revision or "base"))
        assert snapshot(alembic_engine) == before, f"{revision.revision} left a trace"
        command.upgrade(config, revision.revision)
        assert snapshot(alembic_engine) == after, f"{revision.revision} is not repeatable"


#: The revision that created the todo table.
TODO_REVISION = "652a3aa950af"


def last_keeping_data(after: str) -> str:
    """The newest revision after `after` that comes before the first one whose upgrade
    destroys data (read from its SQL, as the deploy reads it; its downgrade cannot bring
    the rows back)."""
    chain = [revision.revision for revision in CHAIN]
    kept = after
    for revision in CHAIN[chain.index(after) + 1 :]:
        if lint.upgrade_losses(revision.module):
            break
        kept = revision.revision
    return kept


def test_rows_survive_upgrade_to_head_and_back(
    alembic_runner: Any, alembic_engine: sa.Engine
) -> None:
    """Rows written when the todo table came survive every later revision, up and back
    down (up to the first that acknowledges destroying data). It names the revision that
    created the todo table and its columns: it is about the todo service's own data."""
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

    alembic_runner.migrate_up_to(last_keeping_data(TODO_REVISION))
    alembic_runner.migrate_down_to(TODO_REVISION)

    with alembic_engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                'SELECT u.email, t.title, t.completed FROM todo t JOIN "user" u ON u.id = t.user_id'
            )
        ).all()
    assert rows == [("ada@example.com", "write the tests", False)]
