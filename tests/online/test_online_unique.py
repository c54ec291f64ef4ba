"""UNIQUE constraints and primary keys on live tables, in their online form, through
the front door.

In a throwaway copy of the repository (:class:`tests.support.evolution.Project`), tables of the
tests' own (``online_*``) hold rows; then the models declare a unique constraint, a
unique column, a unique index, a primary key where there was none and a primary key
on other columns. Each change goes through ``alembic revision --autogenerate`` and the
cycle of :func:`tests.support.evolution.evolve`, and what the revision says is asserted on its
text, as a reviewer reads it. The failures are real ones: a duplicate among the live
rows, a transaction that makes the build wait while a writer keeps writing, a key
column left nullable by a hand-written revision.

One copy carries the whole story (each step of it costs a child process or two): the
duplicate stops the first run, the revision is backed out, run again, fixed and rerun
under writers, then downgraded and upgraded as :func:`tests.support.evolution.evolve` does.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.util import CommandError
from sqlalchemy.engine import Engine

from tests.conftest import NewDatabase, config_with_versions, write_revision
from tests.support.evolution import (
    Project,
    Run,
    calls,
    downgrade_part,
    linted_as_generated,
    registered,
    revision_id,
    upgrade_part,
    with_users,
)

ITEM_MODULE = '''
"""Items, memberships and events of the tests' own (tests/online/test_online_unique.py)."""

import uuid

from sqlalchemy import Column, ForeignKey, Index, Integer, Table, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, owned_by


def _id(*, key: bool = True) -> Column[uuid.UUID]:
    return Column(
        "id", UUID(as_uuid=True), primary_key=key, nullable=False,
        server_default=text("gen_random_uuid()"),
    )


def _owner(*, key: bool = False) -> Column[str]:
    return Column(
        "user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False,
        primary_key=key,
    )


class OnlineItem(SQLModel, table=True):
    __tablename__ = "online_item"
    __table_args__ = ({"info": {ROW_SECURITY: owned_by("user_id")}},)

    id: uuid.UUID | None = Field(default=None, sa_column=_id())
    user_id: str = Field(sa_column=_owner())
    code: str = Field(sa_column=Column("code", Text, nullable=False))
    sku: str | None = Field(default=None, sa_column=Column("sku", Text))
    position: int = Field(sa_column=Column("position", Integer, nullable=False))


class OnlineMembership(SQLModel, table=True):
    __tablename__ = "online_membership"
    __table_args__ = ({"info": {ROW_SECURITY: owned_by("user_id")}},)

    id: uuid.UUID | None = Field(default=None, sa_column=_id(key=True))
    user_id: str = Field(sa_column=_owner(key=False))
    team: str = Field(sa_column=Column("team", Text, nullable=False))


online_event = Table(
    "online_event",
    SQLModel.metadata,
    Column("id", Integer, nullable=False),
    Column("user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text),
    info={ROW_SECURITY: owned_by("user_id")},
)


class OnlineLabel(SQLModel, table=True):
    """Created with its unique constraint: inline, as a new table's always is."""

    __tablename__ = "online_label"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        {"info": {ROW_SECURITY: owned_by("user_id")}},
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(sa_column=_owner())
    name: str = Field(sa_column=Column("name", Text, nullable=False))
'''

ROWS = 3000


@pytest.fixture
def project(tmp_path: Path, new_database: NewDatabase, head_template: str) -> Project:
    """A copy of the repository at head plus the tests' tables (one revision, its text
    in ``tables.txt`` of the copy), with ROWS rows in each live table: items (codes
    unique per user, skus unique), memberships and events."""
    project = with_users(tmp_path / "project", new_database(template=head_template), "ada", "bob")
    project.write("models/online_item.py", ITEM_MODULE)
    project.append(
        "models/__init__.py",
        registered("online_item", "OnlineItem", "OnlineMembership", "OnlineLabel", "online_event"),
    )
    before = project.revision_files()
    project.succeed(["revision", "--autogenerate", "-m", "online tables"], ["upgrade", "head"])
    ((path,),) = [project.revision_files() - before]
    project.write("tables.txt", path.read_text())
    with connected(project) as db:
        db.execute(
            f"""INSERT INTO online_item (user_id, code, sku, position)
                SELECT CASE WHEN g % 2 = 0 THEN 'ada' ELSE 'bob' END, 'code-' || g,
                       'sku-' || g, g
                FROM generate_series(1, {ROWS}) g"""
        )
        db.execute(
            f"""INSERT INTO online_membership (user_id, team)
                SELECT CASE WHEN g % 2 = 0 THEN 'ada' ELSE 'bob' END, 'team-' || g
                FROM generate_series(1, {ROWS}) g"""
        )
        db.execute(
            f"""INSERT INTO online_event (id, user_id, kind)
                SELECT g, 'ada', 'kind-' || g % 7 FROM generate_series(1, {ROWS}) g"""
        )
    return project


@contextmanager
def connected(project: Project, *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    """A session on the copy's database, as the admin (row security bypassed)."""
    url = sa.make_url(project.database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=autocommit) as db:
        yield db


def one(db: psycopg.Connection, query: str, *params: object) -> object:
    row = db.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]


def unique_and_primary_keys(p: Project) -> None:
    """On the live tables: a unique constraint on two columns, a unique column, a unique
    index declared as an index, a primary key on other columns (memberships keyed by
    user and team) and one on a table that had none; and a new column, so that the
    revision has a transaction to commit before its online steps."""
    p.replace(
        "models/online_item.py",
        """    __tablename__ = "online_item"
    __table_args__ = (""",
        """    __tablename__ = "online_item"
    __table_args__ = (
        UniqueConstraint(
            "user_id", "code", deferrable=True, initially="DEFERRED",
            postgresql_nulls_not_distinct=True,
        ),
        # Where an item sits in its user's list: one item per place.
        Index("online_item_user_id_position_idx", "user_id", "position", unique=True),""",
    )
    p.replace(
        "models/online_item.py",
        'sa_column=Column("sku", Text))',
        'sa_column=Column("sku", Text, unique=True))\n'
        '    note: str | None = Field(default=None, sa_column=Column("note", Text))',
    )
    p.replace("models/online_item.py", "sa_column=_id(key=True)", "sa_column=_id(key=False)")
    p.replace("models/online_item.py", "sa_column=_owner(key=False)", "sa_column=_owner(key=True)")
    p.replace(
        "models/online_item.py",
        'Column("team", Text, nullable=False)',
        'Column("team", Text, primary_key=True)',
    )
    p.replace(
        "models/online_item.py",
        'Column("id", Integer, nullable=False),',
        'Column("id", Integer, primary_key=True, autoincrement=False),',
    )


def the_call(text: str, name: str, *having: str) -> str:
    """The one ``op.<name>(...)`` call of `text` that holds every one of `having`, its
    whitespace collapsed as a reader would write it on one line."""
    one_line = (
        " ".join(c.split()).replace("( ", "(").replace(", )", ")") for c in calls(text, name)
    )
    found = [c for c in one_line if all(h in c for h in having)]
    assert len(found) == 1, f"{len(found)} op.{name} calls hold {having}:\n{text}"
    return found[0]


def built_then_attached(
    steps: str, table: str, name: str, columns: str, kind: str, *, attach: str = ""
) -> str:
    """`steps` build the unique index of constraint `name` concurrently under its own
    name, after the guard against a failed build's leftover, and then attach it (with
    `attach` among its arguments). Returns the build."""
    guard = steps.index(f'op.drop_index_if_invalid("{name}")')
    build = the_call(steps, "create_index", f'op.f("{name}")')
    assert f'"{table}", {columns}, unique=True,' in build
    assert "postgresql_concurrently=True" in build
    assert "if_not_exists=True" in build
    attached = the_call(steps, "add_constraint_using_index", f'"{name}"')
    assert attached.startswith(f'op.add_constraint_using_index("{table}", "{name}", "{kind}"')
    assert attach in attached
    attach_at = re.search(rf'"{name}",\s*"{kind}"', steps)
    assert attach_at is not None
    assert guard < steps.index(f'op.f("{name}")') < attach_at.start()
    return build


def assert_written_online(keys: str) -> None:
    """What the revision says, as a reviewer reads it."""
    up, down = upgrade_part(keys), downgrade_part(keys)
    transaction, steps = up.split("with op.get_context().autocommit_block():")
    assert "op.add_column(" in transaction
    for plain in ("create_unique_constraint", "create_primary_key", "drop_constraint"):
        assert plain not in up, "the old key stays until the new one replaces it"
    built_then_attached(steps, "online_item", "online_item_sku_key", '["sku"]', "UNIQUE")
    # What the constraint declares goes to the index (NULLS NOT DISTINCT) or the attach.
    build = built_then_attached(
        steps,
        *("online_item", "online_item_user_id_code_key", '["user_id", "code"]', "UNIQUE"),
        attach='deferrable=True, initially="DEFERRED"',
    )
    assert "postgresql_nulls_not_distinct=True" in build
    built_then_attached(steps, "online_event", "online_event_pkey", '["id"]', "PRIMARY KEY")
    # An index declared unique is an index: built concurrently, nothing to attach.
    the_call(steps, "create_index", '"online_item_user_id_position_idx"', "concurrently=True")
    # The new key is built beside the old one, then swapped for it in one statement.
    build = the_call(steps, "create_index", '"online_membership_pkey_new"')
    assert '["user_id", "team"], unique=True, postgresql_concurrently=True' in build
    swap = the_call(steps, "add_constraint_using_index", '"online_membership_pkey"')
    assert 'index="online_membership_pkey_new", replaces="online_membership_pkey"' in swap

    # The downgrade drops what was added (a failed build's leftover first) and swaps back.
    first, rest = down.split("if not op.transaction_committed_before", 1)
    for name in ("online_item_user_id_code_key", "online_item_sku_key", "online_event_pkey"):
        assert f'op.drop_index_if_invalid("{name}")' in first
        assert "if_exists=True" in the_call(rest, "drop_constraint", f'op.f("{name}")')
    swap_back = the_call(rest, "add_constraint_using_index", '"online_membership_pkey"')
    assert 'index="online_membership_pkey_new", replaces="online_membership_pkey"' in swap_back
    assert '["id"], unique=True' in the_call(rest, "create_index", '"online_membership_pkey_new"')


_SHAPE = """
    SELECT coalesce(con.conname, i.relname), pg_get_indexdef(x.indexrelid), x.indisvalid,
           con.contype
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid
    WHERE x.indrelid = ANY ('{online_item, online_membership, online_event}'::regclass[])
    ORDER BY 1
"""


def shape(project: Project) -> list[tuple[object, ...]]:
    """Every index of the live tables, with the constraint it backs; and their columns."""
    with connected(project) as db:
        columns = db.execute(
            "SELECT attrelid::regclass::text, attname, attnotnull FROM pg_attribute "
            "WHERE attrelid = ANY ('{online_item, online_membership, online_event}'::regclass[]) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY 1, 2"
        ).fetchall()
        return [*db.execute(_SHAPE).fetchall(), *columns]


def invalid_indexes(project: Project) -> list[str]:
    with connected(project) as db:
        rows = db.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid ORDER BY 1"
        )
        return [name for (name,) in rows]


@pytest.mark.slow  # a long story through the CLI on a live table: the slow tier
def test_unique_and_primary_keys_on_live_tables_are_built_online(project: Project) -> None:
    """A new table keeps its unique constraint inline. On the live tables, every key is
    built concurrently and then attached, over ROWS rows one of which is a duplicate:
    the upgrade stops at that build in one line naming the index, with the revision's
    transaction committed, the keys built before it attached, and an INVALID index
    left. Backing out (``stamp``, ``downgrade -1``) leaves the tables exactly as they
    were. Forward again, fixed, a rerun drops the leftover, repeats what was done
    without harm and completes, while a writer keeps writing
    (:func:`upgraded_while_writers_write`); then downgrade, check against the previous
    models, upgrade and check, as :func:`tests.support.evolution.evolve` does."""
    tables = project.read("tables.txt")
    inline = 'sa.UniqueConstraint("user_id", "name", name=op.f("online_label_user_id_name_key"))'
    assert inline in tables
    assert "add_constraint_using_index" not in tables

    with connected(project) as db:
        db.execute("UPDATE online_item SET sku = 'sku-1' WHERE position = 2")
    previous, was = project.models(), shape(project)
    before = project.revision_files()
    unique_and_primary_keys(project)
    written, failed = project.alembic(
        ["revision", "--autogenerate", "-m", "online keys"], ["upgrade", "head"]
    )
    assert written.code == 0, written
    (path,) = project.revision_files() - before
    keys = path.read_text()
    assert_written_online(keys)
    (line,) = failed.failed_lines()
    assert 'could not create unique index "online_item_sku_key"' in line, line
    assert "(DETAIL: Key (sku)=(…) is duplicated.)" in line, line
    assert "sku-1" not in line, "a row's values stay out of a deploy's line"
    assert "skips the committed transaction and runs the online steps again" in line, line
    assert invalid_indexes(project) == ["online_item_sku_key"]

    # Backing out: the keys already attached go, and so does the invalid index.
    project.succeed(["stamp", revision_id(keys)], ["downgrade", "-1"])
    assert shape(project) == was

    (again,) = project.alembic(["upgrade", "head"])
    assert 'could not create unique index "online_item_sku_key"' in again.failed_lines()[0]
    with connected(project) as db:
        db.execute("UPDATE online_item SET sku = 'sku-2' WHERE position = 2")
    rerun, checked, downgraded = upgraded_while_writers_write(project, "online_item_sku_key")
    assert "Running upgrade" in rerun.output
    assert "No new upgrade operations detected" in checked.output
    assert "Running downgrade" in downgraded.output

    project.checked_without(path, previous)
    assert invalid_indexes(project) == []
    with connected(project) as db:
        assert one(db, "SELECT count(*) FROM online_membership") == ROWS
        key = "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s"
        assert one(db, key, "online_membership_pkey") == "PRIMARY KEY (user_id, team)"
    linted_as_generated(project, [revision_id(keys)])


WRITES = 50
#: The build's session, waiting for an older transaction to end.
_BUILD_WAITING = """
    SELECT count(*) FROM pg_stat_activity
    WHERE query LIKE 'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ' || %s || ' %%'
      AND wait_event_type = 'Lock'
"""


def upgraded_while_writers_write(project: Project, index: str) -> list[Run]:
    """``alembic upgrade head``, ``check`` and ``downgrade -1``, while a transaction
    left open (with a snapshot, as a long report holds one) makes the concurrent build
    of `index` wait for it, and meanwhile a writer inserts and updates WRITES rows, each
    statement allowed 1 s of lock waiting: a write the build blocked would fail. The
    build still waits after the last write; then the open transaction ends and the
    upgrade completes. (The upgrade may wait 60 s for its locks here instead of 2 s:
    the open transaction is the test's own.)"""
    runs: list[Run] = []
    commands = (["-x", "lock_timeout=60s", "upgrade", "head"], ["check"], ["downgrade", "-1"])
    with connected(project, autocommit=False) as holder, connected(project) as writer:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1")  # takes the snapshot, and no lock on the table
        upgrade = threading.Thread(target=lambda: runs.extend(project.alembic(*commands)))
        upgrade.start()
        try:
            deadline = time.monotonic() + 60
            while not one(writer, _BUILD_WAITING, index):
                assert upgrade.is_alive(), runs
                assert time.monotonic() < deadline, f"{index} was never built"
                time.sleep(0.05)
            writer.execute("SET lock_timeout = '1s'")
            for n in range(WRITES):
                writer.execute(
                    "INSERT INTO online_item (user_id, code, sku, position) "
                    "VALUES ('bob', %s, %s, %s)",
                    (f"written-{n}", f"sku-written-{n}", -n),
                )
                writer.execute(
                    "UPDATE online_item SET note = 'seen' WHERE code = %s", (f"code-{n}",)
                )
            assert one(writer, _BUILD_WAITING, index), "the build was over before the writes"
        finally:
            holder.rollback()
            upgrade.join()
        assert [run.code for run in runs] == [0, 0, 0], "\n".join(map(str, runs))
        assert one(writer, "SELECT count(*) FROM online_item") == ROWS + WRITES
    return runs


def test_a_primary_key_on_a_nullable_column_is_refused_in_one_line(
    head_engine: Engine, tmp_path: Path
) -> None:
    """Autogenerate makes a key's columns NOT NULL before it attaches the key; a
    revision written by hand may not. Attached to a nullable column, PostgreSQL would
    set NOT NULL itself, scanning the table under ACCESS EXCLUSIVE: the step refuses
    instead, in one line, and changes nothing."""
    with head_engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE online_guard (id integer NOT NULL, kind text)")
        connection.exec_driver_sql(
            "INSERT INTO online_guard SELECT g, 'k' FROM generate_series(1, 100) g"
        )
    write_revision(
        tmp_path,
        """with op.get_context().autocommit_block():
    op.create_index(
        "online_guard_pkey", "online_guard", ["id", "kind"], unique=True,
        postgresql_concurrently=True, if_not_exists=True,
    )
    op.add_constraint_using_index("online_guard", "online_guard_pkey", "PRIMARY KEY")""",
    )
    with pytest.raises(CommandError) as refused:
        command.upgrade(config_with_versions(head_engine, tmp_path), "heads")
    message = str(refused.value)
    assert "NullableKeyColumnsError: primary key online_guard_pkey needs" in message
    assert "online_guard.kind NOT NULL first" in message
    with head_engine.connect() as connection:
        keys = connection.exec_driver_sql(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'online_guard'::regclass "
            "AND contype = 'p'"
        )
        assert keys.scalar() == 0


def test_a_duplicate_names_the_key_not_its_values(head_engine: Engine, tmp_path: Path) -> None:
    """A unique index built online over rows that break it fails in one line with
    PostgreSQL's DETAIL, naming the key's columns and leaving out the duplicated values
    (data, on their way to CI logs)."""
    with head_engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE online_guest (email text NOT NULL, code text)")
        connection.exec_driver_sql(
            "INSERT INTO online_guest VALUES ('ada@example.com', 'x'), ('ada@example.com', 'x')"
        )
    write_revision(
        tmp_path,
        """with op.get_context().autocommit_block():
    op.drop_index_if_invalid("online_guest_email_key")
    op.create_index(
        "online_guest_email_key", "online_guest", [sa.text("lower(email)"), "code"],
        unique=True, postgresql_concurrently=True, if_not_exists=True,
    )""",
    )
    with pytest.raises(CommandError) as refused:
        command.upgrade(config_with_versions(head_engine, tmp_path), "heads")
    message = str(refused.value)
    assert 'could not create unique index "online_guest_email_key"' in message
    assert "(DETAIL: Key (lower(email), code)=(…) is duplicated.)" in message
    assert "ada@example.com" not in message
