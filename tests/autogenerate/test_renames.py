"""Renames declared in the models (``renamed_from``), through the front door.

In a throwaway copy of the repository, with rows in its tables: a column renamed that
an index, a CHECK and a policy read, then its table renamed, which another table
references and reaches its owner through. Each goes through the whole cycle of
:func:`tests.support.evolution.evolve` (revision, upgrade, check, downgrade, check against the
previous models, upgrade, check): the revision renames rather than drops and adds, the
names that followed the old ones follow the new, the rows stay, the marker left in the
model is inert afterwards, squawk passes without a hand-written acknowledgement, and the
schema review shows a rename, not lost data. The tables are the test's own
(``online_*``): they prove the mechanism, not today's schema.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import cast

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import URL

from tests.conftest import NewDatabase, new_engine
from tests.support.evolution import (
    Project,
    calls,
    downgrade_part,
    evolve,
    registered,
    revision_id,
    upgrade_part,
    with_users,
)
from todo_database import lint
from todo_database.review import docs as schema_docs
from todo_database.review import report as review

ITEM_MODULE = '''
"""Items and their notes (tests/autogenerate/test_renames.py)."""

from sqlalchemy import CheckConstraint, Column, ForeignKey, Text
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.base import RENAMED_FROM, renamed_from  # noqa: F401
from models.security import ROW_SECURITY, Policy, RowSecurity, owned_by, owned_through


class OnlineItem(SQLModel, table=True):
    __tablename__ = "online_item"
    __table_args__ = (
        CheckConstraint("char_length(name) BETWEEN 1 AND 200", name="name_length"),
        {"info": {ROW_SECURITY: owned_by("user_id") + RowSecurity(
            policies=(
                Policy("todo_app_named", "SELECT", ("todo_app",), using="name <> ''",
                       permissive=False),
            ),
        )}},
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(
        sa_column=Column(
            "user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False,
            index=True,
        )
    )
    name: str = Field(sa_column=Column("name", Text, nullable=False, index=True))


class OnlineNote(SQLModel, table=True):
    __tablename__ = "online_note"
    __table_args__ = ({"info": {ROW_SECURITY: owned_through("item_id")}},)

    id: int | None = Field(default=None, primary_key=True)
    item_id: int = Field(foreign_key="online_item.id", ondelete="CASCADE", index=True)
    body: str
'''

ROWS = 3000


@pytest.fixture
def project(tmp_path: Path, new_database: NewDatabase, head_template: str) -> Project:
    """A copy of the repository whose database is at head, with a user to own rows."""
    return with_users(tmp_path / "project", new_database(template=head_template), "ada")


def add_items(p: Project) -> None:
    p.write("models/online_item.py", ITEM_MODULE)
    p.append("models/__init__.py", registered("online_item", "OnlineItem", "OnlineNote"))


def rename_column(p: Project) -> None:
    """name becomes title: its index, its CHECK and the policy reading it spelt anew."""
    p.replace(
        "models/online_item.py",
        'Column("name", Text, nullable=False, index=True)',
        'Column("title", Text, nullable=False, index=True, info=renamed_from("name"))',
    )
    p.replace("models/online_item.py", "    name: str = Field(", "    title: str = Field(")
    p.replace(
        "models/online_item.py",
        '"char_length(name) BETWEEN 1 AND 200", name="name_length"',
        '"char_length(title) BETWEEN 1 AND 200", name="title_length"',
    )
    p.replace("models/online_item.py", "using=\"name <> ''\"", "using=\"title <> ''\"")


def rename_table(p: Project) -> None:
    """online_item becomes online_task: online_note's foreign key and its policies, which
    reach the owner through it, follow. In the same revision, a column added to
    online_note (two live tables: locks taken up front, by the names they have then) and
    the renamed table's user_id index dropped (an online step: rebuilt by the downgrade
    once the table has its old name back)."""
    p.replace(
        "models/online_item.py", '__tablename__ = "online_item"', '__tablename__ = "online_task"'
    )
    p.replace(
        "models/online_item.py",
        '{"info": {ROW_SECURITY: owned_by("user_id") +',
        '{"info": {RENAMED_FROM: "online_item", ROW_SECURITY: owned_by("user_id") +',
    )
    p.replace(
        "models/online_item.py", 'foreign_key="online_item.id"', 'foreign_key="online_task.id"'
    )
    p.replace(
        "models/online_item.py", "nullable=False,\n            index=True,", "nullable=False,"
    )
    p.replace(
        "models/online_item.py",
        "    body: str\n",
        "    body: str\n    pinned: bool | None = None\n",
    )


def misspell(p: Project) -> None:
    """Markers that name nothing the database has, old or new."""
    p.replace(
        "models/online_item.py",
        '    title: str = Field(sa_column=Column("title", Text, nullable=False, index=True, '
        'info=renamed_from("name")))',
        '    heading: str = Field(sa_column_kwargs={"info": renamed_from("titel")})',
    )
    p.replace(
        "models/online_item.py",
        '__tablename__ = "online_note"\n    __table_args__ = ({"info": {',
        '__tablename__ = "online_memo"\n    __table_args__ = ({"info": {RENAMED_FROM: "memo", ',
    )


def rows(url: URL, table: str, column: str) -> tuple[int, int, int]:
    """How many rows `table` has, the sum of `column`'s lengths, and online_note's rows."""
    engine = new_engine(url)
    try:
        with engine.connect() as connection:
            count, length = connection.execute(
                sa.text(f"SELECT count(*), sum(char_length({column})) FROM {table}")
            ).one()
            notes = connection.execute(sa.text("SELECT count(*) FROM online_note")).scalar_one()
            return int(count), int(length), int(notes)
    finally:
        engine.dispose()


def read_schema(url: URL) -> schema_docs.Schema:
    engine = new_engine(url)
    try:
        with engine.connect() as connection:
            return schema_docs.read_schema(connection)
    finally:
        engine.dispose()


def reviewed(project: Project, texts: list[str], before: schema_docs.Schema) -> review.Review:
    """The review of the revisions `texts`, as ``make review`` makes it for a pull request
    that adds them: their upgrade SQL (rendered in one warm child) and squawk's findings,
    the schema `before` (the database as it was) compared with the schema after (as it is
    now), and the warnings."""
    script = ScriptDirectory.from_config(Config(str(project.root / "alembic.ini")))
    revisions = [script.get_revision(revision_id(text)) for text in texts]
    rendered = project.succeed(
        *(["upgrade", f"{lint.start_of(r)}:{r.revision}", "--sql"] for r in revisions)
    )
    reviews = [
        review.RevisionReview(
            r,
            Path(r.path).name,
            upgrade_sql=run.stdout,
            findings=lint.squawk_sql(run.stdout, project.root, name=r.revision),
        )
        for r, run in zip(revisions, rendered, strict=True)
    ]
    after = read_schema(sa.engine.make_url(project.database_url))
    renames = [rename for revision in reviews for rename in revision.renames]
    changes = review.compare(before, after, renames)
    explained = {loss for revision in reviews for loss in revision.upgrade_losses}
    alerts = [
        *(alert for revision in reviews for alert in review.revision_alerts(revision)),
        *review.schema_alerts(changes, explained, after),
    ]
    return review.Review("main", "0" * 40, None, None, reviews, changes, alerts, before, after, {})


def ruff_passes(project: Project) -> None:
    """The generated revisions are formatted and linted as written."""
    for arguments in (["check"], ["format", "--check"]):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *arguments, "migrations/versions"],
            cwd=project.root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def review_shows_renames(shown: review.Review) -> None:
    """The review of both revisions: squawk's rename findings answered by the
    declarations, every rename shown as one with the warning about readers, nothing
    dropped, nothing blocking."""
    for revision in shown.revisions:
        assert not revision.unacknowledged, revision.findings
    renaming = [f for r in shown.revisions for f in r.findings if f.rule in lint.RENAMING_RULES]
    assert len(renaming) == 9
    assert {(c.kind, c.action, c.name) for c in shown.changes} == {
        ("table", "renamed", "online_task"),
        ("table", "changed", "online_task"),
        ("table", "changed", "online_note"),
        ("column", "renamed", "online_task.title"),
        ("column", "added", "online_note.pinned"),
        ("index", "renamed", "online_item_title_idx"),
        ("index", "renamed", "online_task_title_idx"),
        ("index", "dropped", "online_item_user_id_idx"),
        ("constraint", "renamed", "online_item_title_length_check"),
        ("constraint", "renamed", "online_task_title_length_check"),
        ("constraint", "renamed", "online_task_pkey"),
        ("constraint", "renamed", "online_task_user_id_fkey"),
        ("sequence", "renamed", "online_task_id_seq"),
    }
    assert not [a.text for a in shown.alerts if a.level == review.BLOCKING]
    warned = [a.text for a in shown.alerts if "fails once it has run" in a.text]
    assert len(warned) == 2
    assert "renames table `online_item` to `online_task` (declared in the models)" in warned[1]
    text = shown.render()
    assert "🔀 table `online_task` renamed: from `online_item`" in text
    assert "🔀 column `online_task.title` renamed: from `name`" in text


@pytest.mark.slow  # a long story through the CLI on a live table: the slow tier
def test_declared_renames_keep_the_rows(project: Project) -> None:
    """A column, then its table, renamed as the models declare, each through the cycle of
    :func:`evolve`; the review of both, as a pull request that adds them shows them; and
    markers that name nothing, refused."""
    url = sa.engine.make_url(project.database_url)
    # The tables, with rows (their own cycle is test_evolution's business).
    add_items(project)
    project.succeed(["revision", "--autogenerate", "-m", "online items"], ["upgrade", "head"])
    engine = new_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "INSERT INTO online_item (user_id, name) "
                f"SELECT 'ada', 'item ' || g FROM generate_series(1, {ROWS}) g"
            )
            connection.exec_driver_sql(
                "INSERT INTO online_note (item_id, body) SELECT id, 'note' FROM online_item"
            )
    finally:
        engine.dispose()
    kept = rows(url, "online_item", "name")
    before = read_schema(url)

    # A column renamed, with the index, the CHECK and the policy that read it.
    column = evolve(project, "online item title", rename_column)
    up, down = upgrade_part(column), downgrade_part(column)
    assert calls(up, "alter_column") == [
        'op.alter_column("online_item", "name", new_column_name="title")'
    ]
    assert calls(up, "rename_index") == [
        'op.rename_index("online_item_name_idx", "online_item_title_idx")'
    ]
    (check,) = calls(up, "rename_constraint")
    assert '"online_item_name_length_check", "online_item_title_length_check"' in check
    assert calls(down, "alter_column") == [
        'op.alter_column("online_item", "title", new_column_name="name")'
    ]
    for destroying in ("drop_column", "add_column", "drop_index", "create_index", "drop_policy"):
        assert not calls(column, destroying), destroying
    assert "column online_item.name → title" in up
    assert rows(url, "online_item", "title") == kept

    # The table renamed: another table's foreign key to it and policies through it, RLS,
    # grants, a serial key; with a change to the other table and a dropped index.
    table = evolve(project, "online tasks", rename_table)
    up, down = upgrade_part(table), downgrade_part(table)
    assert calls(up, "rename_table") == ['op.rename_table("online_item", "online_task")']
    assert calls(up, "rename_sequence") == [
        'op.rename_sequence("online_item_id_seq", "online_task_id_seq")'
    ]
    assert 'op.rename_constraint("online_task", "online_item_pkey", "online_task_pkey")' in up
    # Locks are taken before the rename, by the old name; in the downgrade, by the new.
    assert 'op.lock_tables(["online_item", "online_note"])' in up
    assert 'op.lock_tables(["online_note", "online_task"])' in down
    # The downgrade rebuilds the dropped index once the table has its old name back.
    (rebuilt,) = calls(down.split("autocommit_block()", 1)[1], "create_index")
    assert '"online_item"' in rebuilt
    for destroying in ("create_table", "drop_table", "drop_policy", "create_policy"):
        assert not calls(table, destroying), destroying
    assert rows(url, "online_task", "title") == kept
    project.succeed(["downgrade", "-1"])
    assert rows(url, "online_item", "title") == kept
    project.succeed(["upgrade", "head"])

    ruff_passes(project)
    review_shows_renames(reviewed(project, [column, table], before))

    # Markers that name nothing: one line, nothing written.
    files, models = project.revision_files(), project.models()
    misspell(project)
    (refused,) = project.alembic(["revision", "--autogenerate", "-m", "misspelt"])
    assert refused.code != 0
    (line,) = refused.failed_lines()
    assert "'online_task' has neither 'titel' nor 'heading'" in line
    assert "the database has neither 'memo' nor 'online_memo'" in line
    assert "(tables it has that the models do not declare: 'online_note')" in line
    assert project.revision_files() == files
    project.restore_models(models)


def test_only_the_renames_an_upgrade_lists_are_acknowledged() -> None:
    """squawk's rename rules: a rename the upgrade's docstring lists (as autogenerate
    writes it for a declaration) is answered; another one, hand-written in the same
    revision, still needs its ``squawk_acknowledged`` reason. No database: the SQL is
    squawk's to read."""
    findings = lint.squawk_sql(
        "SET lock_timeout = '2s';\nSET statement_timeout = '15min';\nBEGIN;\n"
        'ALTER TABLE "user" RENAME "emailVerified" TO email_verified;\n'
        "ALTER TABLE todo RENAME TO task;\nCOMMIT;\n"
    )
    assert [f.rule for f in findings] == ["renaming-column", "renaming-table"]
    module = ModuleType("revision")

    def upgrade() -> None:
        """Renames declared in the models (renamed_from); the rows stay.

        Code that still reads an old name fails once this has run.

        column user.emailVerified → email_verified
        """

    module.upgrade = upgrade  # type: ignore[attr-defined]
    revision = cast(Script, SimpleNamespace(module=module))
    assert lint.listed_renames(module) == {
        lint.Rename("column", "emailVerified", "email_verified", "user")
    }
    assert [f.rule for f in lint.unacknowledged(revision, findings)] == ["renaming-table"]
    assert lint.renames_in("\n".join(f.statement for f in findings)) == [
        lint.Rename("column", "emailVerified", "email_verified", "user"),
        lint.Rename("table", "todo", "task"),
    ]
