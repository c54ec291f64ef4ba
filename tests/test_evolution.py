"""The next changes a user makes, through the front door.

Each test takes a throwaway copy of the repository and a database of its own, migrated
to head, and makes a series of ordinary model changes to it, each through the whole
cycle (:func:`tests.evolution.evolve`): ``alembic revision --autogenerate`` with the real
``script.py.mako`` and post-write hooks, ``upgrade head``, ``check``, ``downgrade -1``,
``check`` against the previous models, ``upgrade head``, ``check``. Then the whole chain
is replayed on an empty database by the real ``alembic`` command, and the generated
revisions are linted as generated.

The models the tests add do not exist in the repository: they prove the machinery,
not today's schema. What each revision must say is asserted on its text, as a
reviewer reads it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import NewDatabase, child_url, new_engine
from tests.evolution import Project, evolve

TYPES_MODULE = '''
"""Column types of the project's own (tests/test_evolution.py)."""

from sqlalchemy import Text, types


class Trimmed(types.TypeDecorator[str]):
    """Text stored without surrounding blanks."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else value.strip()
'''

NOTE_MODULE = '''
"""Notes, a user's own (tests/test_evolution.py)."""

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer
from sqlalchemy import Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, owned_by
from models.types import Trimmed


class Note(SQLModel, table=True):
    __tablename__ = "note"
    __table_args__ = (
        Index("note_user_id_created_at_idx", "user_id", "created_at"),
        CheckConstraint("char_length(body) <= 1000", name="body_length"),
        CheckConstraint("priority BETWEEN 1 AND 5", name="priority_range"),
        {"info": {ROW_SECURITY: owned_by("user_id")}},
    )

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
        ),
    )
    user_id: str = Field(
        sa_column=Column("user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    body: str = Field(sa_column=Column("body", Trimmed(), nullable=False))
    priority: int = Field(
        sa_column=Column("priority", Integer, nullable=False, server_default=text("3"))
    )
    pinned: bool = Field(
        sa_column=Column("pinned", Boolean, nullable=False, server_default=text("false"))
    )
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            "created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")
        ),
    )
'''

TAG_MODULE = '''
"""Tags on todos, owned through the todo (tests/test_evolution.py)."""

import uuid

from sqlalchemy import CheckConstraint, Column, ForeignKey, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, owned_through


class TodoTag(SQLModel, table=True):
    __tablename__ = "todo_tag"
    __table_args__ = (
        CheckConstraint("char_length(tag) BETWEEN 1 AND 50", name="tag_length"),
        {"info": {ROW_SECURITY: owned_through("todo_id")}},
    )

    todo_id: uuid.UUID = Field(
        sa_column=Column(
            "todo_id",
            UUID(as_uuid=True),
            ForeignKey("todo.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    tag: str = Field(sa_column=Column("tag", Text, primary_key=True))
'''


def registered(module: str, *names: str) -> str:
    return f"from models.{module} import {', '.join(names)}  # noqa: E402, F401\n"


@pytest.fixture
def project(tmp_path: Path, new_database: NewDatabase, head_template: str) -> Project:
    """A copy of the repository whose database is at head, with a user and a todo in it:
    changes to live tables meet rows."""
    url = new_database(template=head_template)
    engine = new_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                """INSERT INTO "user" (id, name, email, "emailVerified")
                   VALUES ('ada', 'Ada', 'ada@example.com', true)"""
            )
            connection.exec_driver_sql("INSERT INTO todo (user_id, title) VALUES ('ada', 'a')")
    finally:
        engine.dispose()
    return Project.copy(tmp_path / "project", child_url(url))


def calls(text: str, name: str) -> list[str]:
    """The ``op.<name>(...)`` calls in a revision's text, one string each (up to the next
    statement)."""
    return [
        match.group(0)
        for match in re.finditer(rf"op\.{name}\(.*?(?=\n\s*(?:op\.|with |#|$))", text, re.S)
    ]


def upgrade_part(revision: str) -> str:
    return revision.split("def upgrade()", 1)[1].split("def downgrade()", 1)[0]


def downgrade_part(revision: str) -> str:
    return revision.split("def downgrade()", 1)[1]


def replayed_on_an_empty_database(project: Project, new_database: NewDatabase) -> None:
    """The whole chain, on a fresh database, by the real ``alembic`` command: it reaches
    head and the models agree; and its offline SQL renders."""
    fresh = child_url(new_database())
    upgraded = project.cli("upgrade", "head", database_url=fresh)
    assert upgraded.returncode == 0, upgraded.stderr
    checked = project.cli("check", database_url=fresh)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    offline = project.cli("upgrade", "head", "--sql")
    assert offline.returncode == 0, offline.stderr


def linted_as_generated(project: Project) -> None:
    """The generated revisions pass ruff as written, with the project's configuration."""
    for arguments in (
        ["check", "migrations/versions"],
        ["format", "--check", "migrations/versions"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "ruff", *arguments],
            cwd=project.root,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def add_notes(p: Project) -> None:
    """A new table owned by its user, with a composite index, CHECK constraints and a
    column type of the project's own."""
    p.write("models/types.py", TYPES_MODULE)
    p.write("models/note.py", NOTE_MODULE)
    p.append("models/__init__.py", registered("note", "Note"))


def add_tags(p: Project) -> None:
    """A link table owned through its parent row; and a column with a foreign key added
    to the live note table: two live tables changed in one revision."""
    p.write("models/todo_tag.py", TAG_MODULE)
    p.append("models/__init__.py", registered("todo_tag", "TodoTag"))
    p.replace(
        "models/note.py",
        "    body: str",
        '    todo_id: uuid.UUID | None = Field(default=None, sa_column=Column("todo_id", '
        'UUID(as_uuid=True), ForeignKey("todo.id", ondelete="SET NULL"), nullable=True))\n'
        "    body: str",
    )


NOTE_POLICIES = """\
{"info": {ROW_SECURITY: owned_by("user_id") + RowSecurity(
    policies=(
        Policy("todo_app_hide_archived", "SELECT", ("todo_app",),
               using="NOT note.archived", permissive=False),
        Policy("todo_app_no_future_notes", "INSERT", ("todo_app",),
               with_check="created_at <= now() + interval '1 minute'", permissive=False),
        Policy("todo_app_on_own_todos", "UPDATE", ("todo_app",), using="true",
               with_check="todo_id IS NULL OR EXISTS (SELECT 1 FROM todo "
                          "WHERE todo.id = note.todo_id)",
               permissive=False),
    ),
    lint_acknowledged={
        "policy-column-index:archived": "archived narrows a user's notes, found by user_id",
        "policy-column-index:created_at": "checked on the written row only",
        "policy-column-index:todo_id": "checked on the written row only",
    },
)}},"""


def add_policies(p: Project) -> None:
    """Restrictive policies: on a new column (its lint acknowledged: no index), calling a
    function, naming its own table qualified and another table unqualified."""
    p.replace(
        "models/note.py",
        "    pinned: bool",
        '    archived: bool = Field(sa_column=Column("archived", Boolean, nullable=False, '
        'server_default=text("false")))\n    pinned: bool',
    )
    p.replace("models/note.py", '{"info": {ROW_SECURITY: owned_by("user_id")}},', NOTE_POLICIES)
    p.replace(
        "models/note.py",
        "from models.security import ROW_SECURITY, owned_by",
        "from models.security import ROW_SECURITY, Policy, RowSecurity, owned_by",
    )


def add_reader(p: Project) -> None:
    """A new role, declared in models/security.py, reading its user's notes."""
    p.replace(
        "models/security.py",
        "ROLES = (APP_ROLE, AUTH_ROLE)",
        'READER_ROLE = "todo_reader"\nROLES = (APP_ROLE, AUTH_ROLE, READER_ROLE)',
    )
    p.replace(
        "models/note.py",
        '{"info": {ROW_SECURITY: owned_by("user_id") + RowSecurity(',
        '{"info": {ROW_SECURITY: owned_by("user_id") + readable_own_row("user_id", '
        'role="todo_reader") + RowSecurity(',
    )
    p.replace("models/note.py", "RowSecurity, owned_by", "RowSecurity, owned_by, readable_own_row")


def drop_notes(p: Project) -> None:
    p.replace("models/__init__.py", registered("note", "Note"), "")
    (p.root / "models" / "note.py").unlink()


def test_new_tables_link_tables_policies_roles_and_a_drop(
    project: Project, new_database: NewDatabase
) -> None:
    notes = evolve(project, "notes", add_notes)
    up, down = upgrade_part(notes), downgrade_part(notes)
    assert "info=" not in notes
    assert "import models.types" in notes
    assert 'op.create_table(\n        "note"' in up
    assert 'op.f("note_priority_range_check")' in up
    assert 'op.enable_row_security("note")' in up
    assert 'op.force_row_security("note")' in up
    assert len(calls(up, "create_policy")) == 4
    assert 'op.drop_table("note")' in down
    assert "drop_policy" not in down, "a dropped table takes its policies with it"

    tags = evolve(project, "todo tags", add_tags)
    up = upgrade_part(tags)
    assert calls(up, "lock_tables"), "two live tables (note, todo) are changed"
    assert "todo_tag.todo_id = ANY (ARRAY(SELECT todo.id FROM todo WHERE" in up
    assert "EXISTS (SELECT 1 FROM todo WHERE todo.id = todo_tag.todo_id" in up
    assert "postgresql_not_valid=True" in up
    assert 'op.validate_constraint("note", "note_todo_id_fkey")' in up

    policies = evolve(project, "note policies", add_policies)
    assert len(calls(upgrade_part(policies), "create_policy")) == 3

    reader = evolve(project, "note reader", add_reader)
    assert 'op.ensure_role("todo_reader")' in upgrade_part(reader)
    assert 'op.drop_role_if_unused("todo_reader")' in downgrade_part(reader)

    # The notes go: their downgrade brings back everything they had.
    dropped = evolve(project, "drop notes", drop_notes, acknowledge="test: notes were a trial")
    up, down = upgrade_part(dropped), downgrade_part(dropped)
    assert 'op.drop_table("note")' in up
    assert "drop_policy" not in up, "a dropped table takes its policies with it"
    assert 'op.enable_row_security("note")' in down
    assert 'op.force_row_security("note")' in down
    assert len([c for c in calls(down, "create_policy") if '"note"' in c]) == 8
    assert calls(down, "grant_privileges")
    assert "note_priority_range_check" in down
    assert "note_user_id_created_at_idx" in down

    replayed_on_an_empty_database(project, new_database)
    linted_as_generated(project)


def test_changes_to_live_tables(project: Project, new_database: NewDatabase) -> None:
    # CHECK constraints on the live todo table: one added, one changed, one dropped.
    def change_checks(p: Project) -> None:
        p.replace(
            "models/todo.py",
            'f"char_length(title) BETWEEN 1 AND {TITLE_MAX_LENGTH}"',
            '"char_length(title) BETWEEN 1 AND 300"',
        )
        p.replace(
            "models/todo.py",
            'f"char_length(description) <= {DESCRIPTION_MAX_LENGTH}", name="description_length"',
            '"due_at IS NULL OR due_at > created_at", name="due_after_creation"',
        )

    checks = evolve(project, "todo checks", change_checks)
    up, down = upgrade_part(checks), downgrade_part(checks)
    assert any("todo_description_length_check" in c for c in calls(up, "drop_constraint"))
    assert len(calls(up, "create_check_constraint")) == 2
    assert up.count("postgresql_not_valid=True") == 2
    assert "op.get_context().autocommit_block()" in up
    assert up.index("autocommit_block") > up.index("create_check_constraint")
    assert "((char_length(title) >= 1) AND (char_length(title) <= 500))" in down

    # A partial index's predicate: Alembic does not compare it; it is rebuilt online.
    def change_predicate(p: Project) -> None:
        p.replace(
            "models/todo.py",
            'postgresql_where=text("NOT completed")',
            'postgresql_where=text("NOT completed AND due_at IS NOT NULL")',
        )

    predicate = evolve(project, "open todos with a due date", change_predicate)
    up = upgrade_part(predicate)
    assert len(calls(up, "drop_index")) == 1
    assert "postgresql_concurrently=True" in up
    assert "NOT completed AND due_at IS NOT NULL" in up

    # A column, an index on it and a foreign key from another live table.
    def add_priority(p: Project) -> None:
        p.replace(
            "models/todo.py",
            "        # The todo API sees and changes only the current user's todos.",
            '        Index("todo_user_id_priority_idx", "user_id", "priority"),\n'
            "        # The todo API sees and changes only the current user's todos.",
        )
        p.replace(
            "models/todo.py",
            "    user_id: str = Field(",
            '    priority: int | None = Field(default=None, sa_column=Column("priority", '
            "BigInteger, nullable=True))\n    user_id: str = Field(",
        )
        p.replace(
            "models/todo.py", "import CheckConstraint,", "import BigInteger, CheckConstraint,"
        )
        p.replace(
            "models/auth.py",
            "    user_id: str = Field(sa_column=_owning_user())\n\n\nclass Account",
            "    user_id: str = Field(sa_column=_owning_user())\n"
            "    last_todo_id: uuid.UUID | None = Field(default=None, sa_column=Column("
            '"lastTodoId", UUID(as_uuid=True), ForeignKey("todo.id"), nullable=True))\n\n\n'
            "class Account",
        )
        p.replace(
            "models/auth.py",
            "from datetime import datetime",
            "import uuid\nfrom datetime import datetime\n\n"
            "from sqlalchemy.dialects.postgresql import UUID",
        )

    priority = evolve(project, "todo priority", add_priority)
    up = upgrade_part(priority)
    (lock,) = calls(up, "lock_tables")
    assert '"session"' in lock
    assert 'op.drop_index_if_invalid("todo_user_id_priority_idx")' in up
    assert 'op.validate_constraint("session", "session_lastTodoId_fkey")' in up

    replayed_on_an_empty_database(project, new_database)
    linted_as_generated(project)


def test_declarations_that_cannot_be_migrated_are_refused_in_one_line(project: Project) -> None:
    """A role nobody declared, a table that declares no row security, an expression that
    does not parse: ``alembic revision --autogenerate`` fails with one line naming each,
    and writes nothing."""
    before = project.revision_files()
    project.write("models/types.py", TYPES_MODULE)
    project.write("models/note.py", NOTE_MODULE)
    project.append("models/__init__.py", registered("note", "Note"))
    project.replace(
        "models/note.py", 'owned_by("user_id")', 'owned_by("user_id", role="todo_ghost")'
    )
    project.append(
        "models/note.py",
        textwrap.dedent(
            """

            class Bare(SQLModel, table=True):
                __tablename__ = "bare"
                id: int | None = Field(default=None, primary_key=True)
            """
        ),
    )
    (refused,) = project.alembic(["revision", "--autogenerate", "-m", "refused"])
    assert refused.code != 0
    (line,) = refused.failed_lines()
    assert "'todo_ghost', which is not declared in ROLES" in line
    assert "table 'bare' declares no row-level security" in line
    assert "Traceback" not in refused.output

    project.write("models/note.py", NOTE_MODULE.replace("char_length(body) <= 1000", "body <=> 1"))
    (unparsable,) = project.alembic(["revision", "--autogenerate", "-m", "unparsable"])
    assert unparsable.code != 0
    (line,) = unparsable.failed_lines()
    assert "CHECK 'note_body_length_check' on 'note'" in line
    assert project.revision_files() == before


def test_a_revision_written_that_cannot_run_fails_the_revision_command(project: Project) -> None:
    """A column type whose repr does not carry its argument: Alembic writes
    ``Limited()``, which cannot run. ``alembic revision`` says so in one line naming the
    file, and exits non-zero, instead of leaving it to the deploy."""
    project.write("models/types.py", TYPES_MODULE + LIMITED_TYPE)
    project.write(
        "models/note.py",
        NOTE_MODULE.replace("Trimmed()", "Limited(80)").replace("import Trimmed", "import Limited"),
    )
    project.append("models/__init__.py", registered("note", "Note"))
    before = project.revision_files()
    (written,) = project.alembic(["revision", "--autogenerate", "-m", "limited"])
    (path,) = project.revision_files() - before
    assert written.code != 0
    (line,) = written.failed_lines()
    assert path.name in line
    assert "TypeError" in line


LIMITED_TYPE = '''

class Limited(types.TypeDecorator[str]):
    """Text of at most `length` characters (kept as `most`: Alembic cannot see it)."""

    impl = Text
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__()
        self.most = length
'''
