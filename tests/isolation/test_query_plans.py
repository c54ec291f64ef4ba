"""The todo API's query shapes are each served by an index, with no sort step.

Proven with EXPLAIN on a table of 100,000 todos spread over 1,000 users, so the
planner's choice reflects a realistic table rather than an empty one. The shapes are
the todo API's own queries, so they name the todo table; which of its indexes serves
each is the planner's choice (``data-model.md`` says which is meant to), so that a
better index added later is no failure. Every other owned table's policies are
proven index-served by ``tests/isolation/test_isolation.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from models import metadata
from tests.conftest import database_copy, new_engine

USERS = 1_000
TODOS_PER_USER = 100

# The shapes as the API runs them; data-model.md documents each. Shapes (a) to (c) must
# read their rows in index order (no sort step); the sync shape (d) returns a handful of
# rows per user, for which a bitmap scan and a sort of those few rows is as good.
ORDERED_BY_INDEX = {
    "newest first, keyset page",
    "newest first, first page",
    "open by due date, undated last",
    "count of open todos",
}
QUERIES = {
    "newest first, keyset page": """SELECT id, title, completed, due_at, created_at FROM todo
           WHERE user_id = :user_id AND (created_at, id) < (:after_created_at, :after_id)
           ORDER BY created_at DESC, id DESC LIMIT 50""",
    "newest first, first page": """SELECT id, title FROM todo WHERE user_id = :user_id
           ORDER BY created_at DESC, id DESC LIMIT 50""",
    "open by due date, undated last": """SELECT id, title, due_at FROM todo
           WHERE user_id = :user_id AND NOT completed
           ORDER BY due_at ASC NULLS LAST, id LIMIT 50""",
    "changed since, for sync": """SELECT id, title, completed, updated_at FROM todo
           WHERE user_id = :user_id AND (updated_at, id) > (:since_updated_at, :since_id)
           ORDER BY updated_at, id LIMIT 100""",
    "count of open todos": "SELECT count(*) FROM todo WHERE user_id = :user_id AND NOT completed",
}


#: The todo columns the fill writes itself.
FILLED = ("user_id", "title", "completed", "due_at", "created_at", "updated_at")


def other_required_columns() -> dict[str, str]:
    """A value (SQL, of the row number ``n``) for every other column of todo that an
    INSERT must name (NOT NULL, no default): the plans are about the API's shapes, and
    a column added to todo later must not keep the table from being filled."""
    table = metadata.tables["todo"]
    values = {}
    for column in table.columns:
        if column.name in FILLED or column.nullable or column.server_default is not None:
            continue
        if column.default is not None or column is table.autoincrement_column:
            continue
        type_ = column.type
        if isinstance(type_, sa.types.TypeDecorator):
            type_ = type_.impl_instance
        if column.foreign_keys:
            pytest.fail(f"todo.{column.name} references another table: say how to fill it")
        if isinstance(type_, sa.Enum) and type_.enums:
            first = type_.enums[0].replace("'", "''")
            values[column.name] = f"'{first}'"
        elif isinstance(type_, sa.Boolean):
            values[column.name] = "n % 2 = 0"
        elif isinstance(type_, sa.String):
            values[column.name] = "'value ' || n"
        elif isinstance(type_, sa.Integer | sa.Numeric):
            values[column.name] = "n"
        elif isinstance(type_, sa.Uuid):
            values[column.name] = "gen_random_uuid()"
        elif isinstance(type_, sa.DateTime | sa.Date):
            values[column.name] = "now()"
        else:
            pytest.fail(f"todo.{column.name} ({column.type}): say how to fill it in fill()")
    return values


def fill(engine: Engine) -> None:
    others = other_required_columns()
    quote = engine.dialect.identifier_preparer.quote
    columns = "".join(f", {quote(name)}" for name in others)
    values = "".join(f", {value}" for value in others.values())
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                """INSERT INTO "user" (id, name, email, "emailVerified")
                   SELECT 'user-' || n, 'User ' || n, 'user' || n || '@example.com', true
                   FROM generate_series(1, :users) AS n"""
            ),
            {"users": USERS},
        )
        connection.execute(
            sa.text(
                f"""INSERT INTO todo (user_id, title, completed, due_at, created_at, updated_at
                                      {columns})
                    SELECT 'user-' || (n % :users + 1), 'todo ' || n, n % 3 = 0,
                           CASE WHEN n % 4 = 0 THEN NULL
                                ELSE now() + make_interval(days => n % 90) END,
                           now() - make_interval(secs => n), now() - make_interval(secs => n)
                           {values}
                    FROM generate_series(1, :todos) AS n"""
            ),
            {"users": USERS, "todos": USERS * TODOS_PER_USER},
        )
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
            "VACUUM ANALYZE todo"
        )


@pytest.fixture(scope="module")
def filled_engine(admin_url: sa.URL, head_template: str) -> Iterator[Engine]:
    with database_copy(admin_url, head_template, "plans") as url:
        engine = new_engine(url)
        fill(engine)
        yield engine
        engine.dispose()


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(engine: Engine, query: str) -> dict[str, Any]:
    params = {
        "user_id": "user-42",
        "after_created_at": "2100-01-01T00:00:00Z",
        "after_id": "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "since_updated_at": datetime.now(UTC) - timedelta(hours=2),
        "since_id": "00000000-0000-0000-0000-000000000000",
    }
    with engine.connect() as connection:
        raw = connection.execute(sa.text(f"EXPLAIN (FORMAT JSON) {query}"), params).scalar_one()
    document = raw if isinstance(raw, list) else json.loads(raw)
    return dict(document[0]["Plan"])


@pytest.mark.parametrize("shape", sorted(QUERIES))
def test_query_shape_is_served_by_an_index(filled_engine: Engine, shape: str) -> None:
    nodes = list(plan_nodes(explain(filled_engine, QUERIES[shape])))
    node_types = [node["Node Type"] for node in nodes]
    assert "Seq Scan" not in node_types, node_types
    assert any("Index Name" in node for node in nodes), nodes
    if shape in ORDERED_BY_INDEX:
        assert "Sort" not in node_types, node_types
