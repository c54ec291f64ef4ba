"""The next changes a user makes, through the front door.

Each test takes a throwaway copy of the repository and a database of its own, migrated
to head, and makes a series of ordinary model changes to it, each through the whole
cycle (:func:`tests.support.evolution.evolve`): ``alembic revision --autogenerate`` with the real
``script.py.mako`` and post-write hooks, ``upgrade head``, ``check``, ``downgrade -1``,
``check`` against the previous models, ``upgrade head``, ``check``. Then the whole chain
is replayed on an empty database by the real ``alembic`` command, and the generated
revisions are linted as generated: ruff, and squawk with no finding left unanswered.

The models the tests add are their own, in modules and tables named ``evolution_*``,
so that they meet nothing a real change to the repository added; they prove the
machinery, not today's schema. What each revision must say is asserted on its text,
as a reviewer reads it.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from models.security import own_row_policies
from tests.conftest import NewDatabase, child_url
from tests.support.evolution import (
    PLACEHOLDER,
    Project,
    Run,
    acknowledged,
    calls,
    downgrade_part,
    evolve,
    linted_as_generated,
    registered,
    revision_id,
    upgrade_part,
    with_users,
)

TYPES_MODULE = '''
"""Column types of the project's own (tests/stories/test_evolution.py)."""

from sqlalchemy import Text, types


class Trimmed(types.TypeDecorator[str]):
    """Text stored without surrounding blanks."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else value.strip()
'''

NOTE_MODULE = '''
"""Notes, a user's own (tests/stories/test_evolution.py)."""

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer
from sqlalchemy import Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.evolution_types import Trimmed
from models.security import ROW_SECURITY, owned_by


class EvolutionNote(SQLModel, table=True):
    __tablename__ = "evolution_note"
    __table_args__ = (
        Index("evolution_note_user_id_created_at_idx", "user_id", "created_at"),
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
"""Tags and links on notes, owned through the note (tests/stories/test_evolution.py)."""

import uuid

from sqlalchemy import CheckConstraint, Column, ForeignKey, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, owned_through


class EvolutionNoteTag(SQLModel, table=True):
    __tablename__ = "evolution_note_tag"
    __table_args__ = (
        CheckConstraint("char_length(tag) BETWEEN 1 AND 50", name="tag_length"),
        {"info": {ROW_SECURITY: owned_through("note_id")}},
    )

    note_id: uuid.UUID = Field(
        sa_column=Column(
            "note_id",
            UUID(as_uuid=True),
            ForeignKey("evolution_note.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    tag: str = Field(sa_column=Column("tag", Text, primary_key=True))


class EvolutionNoteLink(SQLModel, table=True):
    """An integer primary key, as SQLModel writes one: a serial column."""

    __tablename__ = "evolution_note_link"
    __table_args__ = ({"info": {ROW_SECURITY: owned_through("note_id")}},)

    id: int | None = Field(default=None, primary_key=True)
    note_id: uuid.UUID = Field(foreign_key="evolution_note.id", ondelete="CASCADE", index=True)
    url: str
'''

NOTE_POLICIES = """\
{"info": {ROW_SECURITY: owned_by("user_id") + RowSecurity(
    policies=(
        Policy("todo_app_hide_archived", "SELECT", ("todo_app",),
               using="NOT evolution_note.archived", permissive=False),
        Policy("todo_app_no_future_notes", "INSERT", ("todo_app",),
               with_check="created_at <= now() + interval '1 minute'", permissive=False),
        Policy("todo_app_unless_locked", "UPDATE", ("todo_app",), using="true",
               with_check="NOT EXISTS (SELECT 1 FROM evolution_lock "
                          "WHERE evolution_lock.note_id = evolution_note.id)",
               permissive=False),
    ),
    lint_acknowledged={
        "policy-column-index:archived": "archived narrows a user's notes, found by user_id",
        "policy-column-index:created_at": "checked on the written row only",
    },
)}},"""

READER = "todo_evolution_reader"
#: The policies an owned table gets (owned_by, owned_through).
OWN_ROW_POLICIES = own_row_policies("todo_app", "true")


@pytest.fixture
def project(tmp_path: Path, new_database: NewDatabase, head_template: str) -> Project:
    """A copy of the repository whose database is at head, with a user in it: changes to
    live tables meet rows."""
    return with_users(tmp_path / "project", new_database(template=head_template), "ada")


def replayed_on_an_empty_database(project: Project, new_database: NewDatabase) -> None:
    """The whole chain, on a fresh database, by ``python -m alembic`` in a process of its
    own: it reaches head, then the models agree; and its offline SQL renders."""
    fresh = child_url(new_database())
    upgraded = project.cli("upgrade", "head", database_url=fresh)
    assert upgraded.returncode == 0, upgraded.stderr
    project.succeed(["check"], ["upgrade", "head", "--sql"], database_url=fresh)


# --- new tables, link tables, policies, a role, drops -------------------------------


def add_notes(p: Project) -> None:
    """A new table owned by its user, with a composite index, CHECK constraints and a
    column type of the project's own."""
    p.write("models/evolution_types.py", TYPES_MODULE)
    p.write("models/evolution_note.py", NOTE_MODULE)
    p.append("models/__init__.py", registered("evolution_note", "EvolutionNote"))


def add_tags(p: Project) -> None:
    """Link tables owned through their parent row, one with an integer (serial) key; a
    column with a foreign key to "user" added to the live note table: two live tables
    changed in one revision."""
    p.write("models/evolution_tag.py", TAG_MODULE)
    p.append(
        "models/__init__.py", registered("evolution_tag", "EvolutionNoteLink", "EvolutionNoteTag")
    )
    p.replace(
        "models/evolution_note.py",
        "    body: str",
        '    reviewer_id: str | None = Field(default=None, sa_column=Column("reviewer_id", Text, '
        'ForeignKey("user.id", ondelete="SET NULL"), nullable=True))\n    body: str',
    )


LOCK_MODULE = '''
"""Locks on notes, public to the API (tests/stories/test_evolution.py)."""

import uuid

from sqlalchemy import Column
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import APP_ROLE, READ_ONLY, ROW_SECURITY, Grant, without_row_security


class EvolutionLock(SQLModel, table=True):
    __tablename__ = "evolution_lock"
    __table_args__ = (
        {
            "info": {
                ROW_SECURITY: without_row_security(
                    "test: which notes are locked is no secret",
                    grants=(Grant(APP_ROLE, READ_ONLY),),
                )
            }
        },
    )

    note_id: uuid.UUID = Field(sa_column=Column("note_id", UUID(as_uuid=True), primary_key=True))
'''


def add_policies(p: Project) -> None:
    """Restrictive policies: on a new column (its lint acknowledged: no index), calling a
    function, naming its own table qualified and another table, one declared without
    row-level security."""
    p.write("models/evolution_lock.py", LOCK_MODULE)
    p.append("models/__init__.py", registered("evolution_lock", "EvolutionLock"))
    p.replace(
        "models/evolution_note.py",
        "    pinned: bool",
        '    archived: bool = Field(sa_column=Column("archived", Boolean, nullable=False, '
        'server_default=text("false")))\n    pinned: bool',
    )
    p.replace(
        "models/evolution_note.py", '{"info": {ROW_SECURITY: owned_by("user_id")}},', NOTE_POLICIES
    )
    p.replace(
        "models/evolution_note.py",
        "from models.security import ROW_SECURITY, owned_by",
        "from models.security import ROW_SECURITY, Policy, RowSecurity, owned_by",
    )


def add_reader(p: Project) -> None:
    """A new role, declared in models/security.py, reading its user's notes."""
    text = p.read("models/security.py")
    roles = re.search(r"^(ROLES(?:: [^=]+)?) = \((.*)\)$", text, re.M)
    assert roles, "models/security.py declares no ROLES tuple: the scenario needs updating"
    p.replace(
        "models/security.py",
        roles.group(0),
        f'{roles.group(1)} = ({roles.group(2)}, "{READER}")',
    )
    p.replace(
        "models/evolution_note.py",
        '{"info": {ROW_SECURITY: owned_by("user_id") + RowSecurity(',
        '{"info": {ROW_SECURITY: owned_by("user_id") + readable_own_row("user_id", '
        f'role="{READER}") + RowSecurity(',
    )
    p.replace(
        "models/evolution_note.py",
        "RowSecurity, owned_by",
        "RowSecurity, owned_by, readable_own_row",
    )


def unarchive(p: Project) -> None:
    """A column dropped with the policy that reads it."""
    p.replace(
        "models/evolution_note.py",
        '    archived: bool = Field(sa_column=Column("archived", Boolean, nullable=False, '
        'server_default=text("false")))\n',
        "",
    )
    p.replace(
        "models/evolution_note.py",
        """        Policy("todo_app_hide_archived", "SELECT", ("todo_app",),
               using="NOT evolution_note.archived", permissive=False),
""",
        "",
    )


def add_policies_and_reader(p: Project) -> None:
    add_policies(p)
    add_reader(p)


def unarchive_and_drop_links(p: Project) -> None:
    unarchive(p)
    drop_links(p)


def drop_links(p: Project) -> None:
    p.replace(
        "models/__init__.py",
        registered("evolution_tag", "EvolutionNoteLink", "EvolutionNoteTag"),
        registered("evolution_tag", "EvolutionNoteTag"),
    )
    text = p.read("models/evolution_tag.py")
    p.write(
        "models/evolution_tag.py", text[: text.index("class EvolutionNoteLink")].rstrip() + "\n"
    )


def derived_tests_cover(project: Project, admin_url: URL, *names: str) -> None:
    """The copy's own isolation tests for the new tables and roles, and its whole
    catalog lint, pass on the evolved schema, and their test ids name `names`: they
    cover the new tables and roles unchanged. (The isolation tests of the tables the
    repository ships run in this suite already.)"""
    derived = project.pytest(
        admin_url,
        *("-v", "-k", "evolution or test_catalog_lint"),
        *("tests/isolation/test_isolation.py", "tests/isolation/test_catalog_lint.py"),
    )
    failures = [line for line in derived.stdout.splitlines() if line.startswith(("E  ", "FAILED"))]
    assert derived.returncode == 0, "\n".join(failures[:80])
    for name in names:
        assert name in derived.stdout, f"no derived test names {name}"


def test_new_tables_link_tables_policies_roles_and_drops(
    project: Project, new_database: NewDatabase
) -> None:
    written = []
    notes = evolve(project, "evolution notes", add_notes)
    up, down = upgrade_part(notes), downgrade_part(notes)
    assert "info=" not in notes
    assert "import models.evolution_types" in notes
    assert 'op.create_table(\n        "evolution_note"' in up
    assert 'op.f("evolution_note_priority_range_check")' in up
    assert 'op.enable_row_security("evolution_note")' in up
    assert 'op.force_row_security("evolution_note")' in up
    assert len(calls(up, "create_policy")) == len(OWN_ROW_POLICIES)
    assert 'op.drop_table("evolution_note")' in down
    assert "drop_policy" not in down, "a dropped table takes its policies with it"
    assert "drop_index" not in down, "a dropped table takes its indexes with it"
    written.append(notes)

    tags = evolve(project, "evolution tags and links", add_tags)
    up = upgrade_part(tags)
    assert calls(up, "lock_tables"), "two live tables (evolution_note, user) are changed"
    assert "evolution_note_tag.note_id = ANY (ARRAY(SELECT evolution_note.id" in up
    assert "EXISTS (SELECT 1 FROM evolution_note WHERE evolution_note.id = " in up
    assert "postgresql_not_valid=True" in up
    assert 'op.validate_constraint("evolution_note", "evolution_note_reviewer_id_fkey")' in up
    assert 'op.grant_sequence_usage("evolution_note_link", "id", "todo_app")' in up
    written.append(tags)

    # Policies and a new role in one revision.
    policies = evolve(project, "evolution note policies and reader", add_policies_and_reader)
    up, down = upgrade_part(policies), downgrade_part(policies)
    assert len([c for c in calls(up, "create_policy") if "todo_app_" in c]) == 3
    assert f'op.ensure_role("{READER}")' in up
    assert up.index("ensure_role") < up.index(f'roles=["{READER}"]')
    assert f'op.drop_role_if_unused("{READER}")' in down
    written.append(policies)

    # A column dropped with the policy that reads it, and a table dropped.
    dropped = evolve(
        project,
        "evolution notes unarchived, links dropped",
        unarchive_and_drop_links,
        acknowledge="test: a trial",
    )
    up, down = upgrade_part(dropped), downgrade_part(dropped)
    assert up.index("drop_policy") < up.index("drop_column"), "a policy reads the column"
    assert down.index("add_column") < down.index('"todo_app_hide_archived"')
    assert 'op.drop_table("evolution_note_link")' in up
    assert "drop_index" not in up, "a dropped table takes its indexes with it"
    link_drops = [c for c in calls(up, "drop_policy") if '"evolution_note_link"' in c]
    assert link_drops == [], "a dropped table takes its policies with it"
    assert 'op.enable_row_security("evolution_note_link")' in down
    assert 'op.force_row_security("evolution_note_link")' in down
    link_policies = [c for c in calls(down, "create_policy") if '"evolution_note_link"' in c]
    assert len(link_policies) == len(OWN_ROW_POLICIES)
    assert 'op.grant_sequence_usage("evolution_note_link", "id", "todo_app")' in down
    assert "evolution_note_link_note_id_idx" in down
    written.append(dropped)

    replayed_on_an_empty_database(project, new_database)
    linted_as_generated(project, [revision_id(text) for text in written])


@pytest.mark.slow  # runs the copy's own tests: the slow tier
def test_the_derived_tests_cover_new_tables_link_tables_and_a_new_role(
    project: Project, admin_url: URL
) -> None:
    """The tables and the role of the story above, written as one revision: the copy's
    own derived isolation tests and catalog lint cover them unchanged."""

    def new_tables_and_a_role(p: Project) -> None:
        add_notes(p)
        add_tags(p)
        add_policies_and_reader(p)

    evolve(project, "evolution notes, links, tags, policies and reader", new_tables_and_a_role)
    derived_tests_cover(project, admin_url, "evolution_note_link", READER)


# --- tables that read each other: created and dropped in order ---------------------

PROJECT_MODULE = '''
"""Projects, their members and tasks, of the tests' own (tests/stories/test_evolution.py)."""

import uuid

from sqlalchemy import Column, ForeignKey, Integer, String, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, Policy, RowSecurity, owned_by

# The project's policy reads the member table, named with its schema, while the member
# table's foreign key references the project: neither table can go first on its own.
_MEMBERS_READ = Policy(
    "todo_app_members_read", "SELECT", ("todo_app",), permissive=False,
    using="EXISTS (SELECT 1 FROM public.evolution_member m "
          "WHERE m.project_id = evolution_project.id)",
)


class EvolutionProject(SQLModel, table=True):
    __tablename__ = "evolution_project"
    __table_args__ = (
        {"info": {ROW_SECURITY: owned_by("user_id") + RowSecurity(policies=(_MEMBERS_READ,))}},
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(
        sa_column=Column("user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    name: str


class EvolutionMember(SQLModel, table=True):
    __tablename__ = "evolution_member"
    __table_args__ = ({"info": {ROW_SECURITY: owned_by("user_id")}},)

    project_id: int = Field(
        sa_column=Column(
            "project_id", Integer, ForeignKey("evolution_project.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    user_id: str = Field(
        sa_column=Column(
            "user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True
        )
    )


class EvolutionTask(SQLModel, table=True):
    __tablename__ = "evolution_task"
    __table_args__ = ({"info": {ROW_SECURITY: owned_by("user_id")}},)

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
        ),
    )
    user_id: str = Field(
        sa_column=Column("user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    project_id: int | None = Field(
        default=None,
        sa_column=Column("project_id", Integer, ForeignKey("evolution_project.id"), nullable=True),
    )
    title: str = Field(sa_column=Column("title", String(40), nullable=False))
'''


def add_projects(p: Project) -> None:
    p.write("models/evolution_project.py", PROJECT_MODULE)
    p.append(
        "models/__init__.py",
        registered("evolution_project", "EvolutionMember", "EvolutionProject", "EvolutionTask"),
    )


def widen_task_titles(p: Project) -> None:
    """varchar(40) to varchar(80): in place; its downgrade is not."""
    p.replace("models/evolution_project.py", "String(40)", "String(80)")


def drop_projects(p: Project) -> None:
    """Projects and members dropped, and the live task table's column referencing them."""
    p.replace(
        "models/__init__.py",
        registered("evolution_project", "EvolutionMember", "EvolutionProject", "EvolutionTask"),
        registered("evolution_project", "EvolutionTask"),
    )
    text = p.read("models/evolution_project.py")
    start, end = text.index("class EvolutionProject"), text.index("class EvolutionTask")
    text = text[:start] + text[end:]
    text = text.replace(
        text[text.index("    project_id: int | None") : text.index("    title: str")], ""
    )
    p.write("models/evolution_project.py", text)


def before(text: str, first: str, then: str) -> bool:
    """Whether `first` comes before `then` in `text` (both must be there)."""
    assert first in text, first
    assert then in text, then
    return text.index(first) < text.index(then)


def test_tables_that_read_each_other_are_created_and_dropped_in_order(
    project: Project, new_database: NewDatabase
) -> None:
    """A project table whose policy reads a member table (named ``public.``, created in
    the same revision) whose foreign key references the project: the downgrade drops
    the policy first, then the member table, then the project. Dropped from the models
    with a live table's column referencing them, the upgrade takes the same care and
    its downgrade creates the project first, the member table, then the policy that
    reads it. Between the two, a widened title whose downgrade narrows it again is said
    to when written, and its downgrade fails on a title too long for the old type. And
    ``alembic check`` does not announce SERIAL columns."""
    written = []
    projects = evolve(project, "evolution projects", add_projects)
    up, down = upgrade_part(projects), downgrade_part(projects)
    assert "FROM public.evolution_member m" in up
    (members_read,) = [c for c in calls(down, "drop_policy") if "todo_app_members_read" in c]
    assert before(down, members_read, 'op.drop_table("evolution_member")')
    assert before(down, 'op.drop_table("evolution_member")', 'op.drop_table("evolution_project")')
    (checked,) = project.succeed(["check"])
    assert "No new upgrade operations detected" in checked.output
    assert "Detected sequence" not in checked.output, "SERIAL announced on every check"
    written.append(projects)

    said: list[Run] = []
    widened = evolve(project, "evolution task titles widened", widen_task_titles, said=said)
    narrowing = (
        "evolution_task.title: the downgrade changes it back from VARCHAR(80) to VARCHAR(40), "
        "which rewrites the table and rebuilds its indexes under ACCESS EXCLUSIVE, and fails on "
        "any value written since that VARCHAR(40) cannot hold: before downgrading, make every "
        "value fit VARCHAR(40)"
    )
    assert log_lines(said[0], "the downgrade changes") == [narrowing]
    account = " ".join(widened.split("Revision ID:", 1)[0].split())
    assert "Downgrade: 1. In one transaction: - change evolution_task.title back from" in account
    assert "VARCHAR(80) to VARCHAR(40), which rewrites the table" in account
    url = sa.make_url(project.database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as db:
        db.execute("INSERT INTO evolution_task (user_id, title) VALUES ('ada', repeat('x', 60))")
        (refused,) = project.alembic(["downgrade", "-1"])
        (line,) = refused.failed_lines()
        assert "value too long for type character varying(40)" in line, line
        db.execute("DELETE FROM evolution_task")
    written.append(widened)

    gone = evolve(project, "evolution projects gone", drop_projects, acknowledge="test: a trial")
    # As a reader scans it, whitespace aside (the downgrade's transaction is indented).
    up, down = (" ".join(part.split()) for part in (upgrade_part(gone), downgrade_part(gone)))
    (members_read,) = [c for c in calls(up, "drop_policy") if "todo_app_members_read" in c]
    assert before(up, members_read, 'op.drop_table("evolution_member")')
    assert before(up, 'op.drop_table("evolution_member")', 'op.drop_table("evolution_project")')
    task_unlinked = 'op.drop_column("evolution_task", "project_id")'
    assert before(up, task_unlinked, 'op.drop_table("evolution_project")')
    project_back = 'op.create_table( "evolution_project",'
    member_back = 'op.create_table( "evolution_member",'
    assert before(down, project_back, member_back)
    (recreated,) = [c for c in calls(down, "create_policy") if "todo_app_members_read" in c]
    assert before(down, member_back, recreated)
    assert before(down, project_back, 'op.add_column( "evolution_task"')
    written.append(gone)

    replayed_on_an_empty_database(project, new_database)
    linted_as_generated(project, [revision_id(text) for text in written])


# --- what a revision destroys, flagged when it is written ----------------------------

MOOD_MODULE = '''
"""Moods, and a log of them, of the tests' own (tests/stories/test_evolution.py)."""

from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, without_row_security

_NONE = {ROW_SECURITY: without_row_security("test: what a revision destroys")}


class EvolutionMood(SQLModel, table=True):
    __tablename__ = "evolution_mood"
    __table_args__ = ({"info": _NONE},)

    id: int | None = Field(default=None, primary_key=True)
    body: str
    mood: str | None = None


class EvolutionMoodLog(SQLModel, table=True):
    __tablename__ = "evolution_mood_log"
    __table_args__ = ({"info": _NONE},)

    id: int | None = Field(default=None, primary_key=True)
'''


def log_lines(run: Run, having: str) -> list[str]:
    """The log lines of `run` that hold `having`, without their level and logger."""
    return [line.split("] ", 1)[-1] for line in run.stderr.splitlines() if having in line]


def checked_as_code(project: Project, path: Path) -> None:
    """The revision at `path` passes ruff (lint and format) and mypy as written, with the
    copy's configuration, as ``make lint`` runs them."""
    relative = str(path.relative_to(project.root))
    for tool in (["ruff", "check"], ["ruff", "format", "--check"], ["mypy"]):
        result = subprocess.run(
            [sys.executable, "-m", *tool, relative],
            cwd=project.root,
            env=project.environment(None),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def squawk_gate(
    project: Project, admin_url: URL, revision: str
) -> subprocess.CompletedProcess[str]:
    """The copy's own test that gates every revision (``tests/chain/test_squawk.py``), for
    `revision`, as ``make test`` runs it."""
    return project.pytest(admin_url, "-k", revision, "tests/chain/test_squawk.py")


@pytest.mark.slow  # runs the copy's own tests and mypy: the slow tier
def test_a_revision_that_destroys_data_is_flagged_when_written(
    project: Project, admin_url: URL
) -> None:
    """A column and a table dropped from the models: ``alembic revision --autogenerate``
    says in one line what the revision destroys and writes its acknowledgement empty,
    in a file that lint and mypy pass as written; ``upgrade head`` runs it, saying in one
    line that it does not say why; the copy's own test suite fails on it until its
    author fills the line (the review does too: tests/review/test_review.py)."""
    project.write("models/evolution_mood.py", MOOD_MODULE)
    project.append(
        "models/__init__.py", registered("evolution_mood", "EvolutionMood", "EvolutionMoodLog")
    )
    created, _ = project.succeed(["revision", "--autogenerate", "-m", "moods"], ["upgrade", "head"])
    assert "destroys data" not in created.output

    project.replace("models/evolution_mood.py", "    mood: str | None = None\n", "")
    project.replace(
        "models/__init__.py",
        registered("evolution_mood", "EvolutionMood", "EvolutionMoodLog"),
        registered("evolution_mood", "EvolutionMood"),
    )
    text = project.read("models/evolution_mood.py")
    project.write("models/evolution_mood.py", text[: text.index("class EvolutionMoodLog")])
    before = project.revision_files()
    (written,) = project.succeed(["revision", "--autogenerate", "-m", "moods without mood"])
    (path,) = project.revision_files() - before
    what = "column evolution_mood.mood, table evolution_mood_log"
    assert log_lines(written, "destroys data") == [
        f"{path.name} destroys data on upgrade ({what}): say why in its "
        "destructive_acknowledged (written empty); make test and make review fail until it does"
    ]
    revision = path.read_text()
    # Last before the functions: the placeholder, under a comment saying what goes.
    top = revision.split("def upgrade()", 1)[0].rstrip().splitlines()
    assert top[-1] == PLACEHOLDER
    comment = list(itertools.takewhile(lambda line: line.startswith("# "), reversed(top[:-1])))
    said = " ".join(line.removeprefix("# ") for line in reversed(comment))
    assert said.startswith(f"Its upgrade destroys data: {what}. Say why"), said
    checked_as_code(project, path)

    (upgraded,) = project.succeed(["upgrade", "head"])
    (unsaid,) = log_lines(upgraded, "without saying why")
    assert unsaid.startswith(f"Revision {revision_id(revision)} ({path.name}) destroys data")
    assert "it runs all the same" in unsaid

    gated = squawk_gate(project, admin_url, revision_id(revision))
    assert gated.returncode != 0, gated.stdout
    said = (
        f"destroys data on upgrade ({what}) without saying why: fill its destructive_acknowledged"
    )
    assert said in gated.stdout, gated.stdout

    acknowledged(path, "test: moods are not kept")
    (again,) = project.succeed(["downgrade", "-1"], ["upgrade", "head"])[1:]
    assert log_lines(again, "without saying why") == []
    gated = squawk_gate(project, admin_url, revision_id(revision))
    assert gated.returncode == 0, gated.stdout


# --- changes to live tables ---------------------------------------------------------

TASK_MODULE = '''
"""Tasks on boards, a user's own (tests/stories/test_evolution.py)."""

import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, Column, DateTime, ForeignKey, Index, Integer
from sqlalchemy import Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, Policy, RowSecurity, owned_by


def _id() -> Column[uuid.UUID]:
    return Column(
        "id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


def _owner() -> Column[str]:
    return Column("user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)


class EvolutionBoard(SQLModel, table=True):
    __tablename__ = "evolution_board"
    __table_args__ = (
        Index("evolution_board_user_id_idx", "user_id"),
        {"info": {ROW_SECURITY: owned_by("user_id")}},
    )

    id: uuid.UUID | None = Field(default=None, sa_column=_id())
    user_id: str = Field(sa_column=_owner())
    name: str = Field(sa_column=Column("name", Text, nullable=False))


class EvolutionTask(SQLModel, table=True):
    __tablename__ = "evolution_task"
    __table_args__ = (
        CheckConstraint("char_length(title) BETWEEN 1 AND 500", name="title_length"),
        CheckConstraint("char_length(notes) <= 10000", name="notes_length"),
        Index("evolution_task_user_id_due_at_open_idx", "user_id", "due_at",
              postgresql_where=text("NOT done")),
        {"info": {ROW_SECURITY: owned_by("user_id") + RowSecurity(
            policies=(Policy("todo_app_ranked", "ALL", ("todo_app",), using="rank >= 0",
                             with_check="rank >= 0", permissive=False),),
            lint_acknowledged={"policy-column-index:rank": "narrows a user's tasks only"},
        )}},
    )

    id: uuid.UUID | None = Field(default=None, sa_column=_id())
    user_id: str = Field(sa_column=_owner())
    title: str = Field(sa_column=Column("title", Text, nullable=False))
    notes: str | None = Field(default=None, sa_column=Column("notes", Text, nullable=True))
    done: bool = Field(
        sa_column=Column("done", Boolean, nullable=False, server_default=text("false"))
    )
    rank: int = Field(sa_column=Column("rank", Integer, nullable=False, server_default=text("0")))
    due_at: datetime | None = Field(
        default=None, sa_column=Column("due_at", DateTime(timezone=True))
    )
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            "created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")
        ),
    )
'''

STATUS_TYPE = """

class TaskStatus(enum.Enum):
    OPEN = "open"
    BLOCKED = "blocked"
"""


def add_tasks(p: Project) -> None:
    p.write("models/evolution_task.py", TASK_MODULE)
    p.append("models/__init__.py", registered("evolution_task", "EvolutionBoard", "EvolutionTask"))


def change_checks(p: Project) -> None:
    """CHECK constraints on the live task table: one added, one changed, one dropped."""
    p.replace("models/evolution_task.py", "BETWEEN 1 AND 500", "BETWEEN 1 AND 300")
    p.replace(
        "models/evolution_task.py",
        '"char_length(notes) <= 10000", name="notes_length"',
        '"due_at IS NULL OR due_at > created_at", name="due_after_creation"',
    )


def change_predicate(p: Project) -> None:
    """A partial index's predicate: Alembic does not compare it; it is rebuilt online."""
    p.replace(
        "models/evolution_task.py", 'text("NOT done")', 'text("NOT done AND due_at IS NOT NULL")'
    )


def add_board_reference(p: Project) -> None:
    """A column, an index on it and a foreign key between two live tables."""
    p.replace(
        "models/evolution_task.py",
        "    title: str = Field(",
        '    board_id: uuid.UUID | None = Field(default=None, sa_column=Column("board_id", '
        'UUID(as_uuid=True), ForeignKey("evolution_board.id"), nullable=True))\n'
        "    title: str = Field(",
    )
    p.replace(
        "models/evolution_task.py",
        '        CheckConstraint("char_length(title)',
        '        Index("evolution_task_board_id_idx", "board_id"),\n'
        '        CheckConstraint("char_length(title)',
    )


def add_status(p: Project) -> None:
    """An enum column, a type of its own, on the live task table."""
    p.replace("models/evolution_task.py", "import uuid\n", "import enum\nimport uuid\n")
    p.replace("models/evolution_task.py", "\n\ndef _id()", STATUS_TYPE + "\n\ndef _id()")
    p.replace(
        "models/evolution_task.py",
        "    title: str = Field(",
        '    status: TaskStatus = Field(default=TaskStatus.OPEN, sa_column=Column("status", '
        'Enum(TaskStatus, name="evolution_task_status"), nullable=False, '
        "server_default=text(\"'OPEN'\")))\n    title: str = Field(",
    )
    p.replace("models/evolution_task.py", "DateTime, ForeignKey", "DateTime, Enum, ForeignKey")


def add_status_values(p: Project) -> None:
    """Enum values, one in the middle and one at the end, the new one the default at
    once: PostgreSQL refuses to use a value in the transaction that added it."""
    p.replace(
        "models/evolution_task.py",
        '    BLOCKED = "blocked"',
        '    WAITING = "waiting"\n    BLOCKED = "blocked"\n    DONE = "done"',
    )
    p.replace(
        "models/evolution_task.py",
        "server_default=text(\"'OPEN'\")",
        "server_default=text(\"'WAITING'\")",
    )


def widen_rank(p: Project) -> None:
    """A type change of a column a policy reads: the policy is set aside around it. The
    change rewrites the table, which the model accepts (a table of the tests' own)."""
    p.replace(
        "models/evolution_task.py",
        'Column("rank", Integer',
        'Column("rank", BigInteger, info={"rewrite_acknowledged": "a small table"}',
    )
    p.replace(
        "models/evolution_task.py",
        "from sqlalchemy import Boolean,",
        "from sqlalchemy import BigInteger, Boolean,",
    )


def change_checks_and_predicate(p: Project) -> None:
    change_checks(p)
    change_predicate(p)


def widen_rank_and_unlink(p: Project) -> None:
    widen_rank(p)
    drop_board_reference(p)


def drop_board_reference(p: Project) -> None:
    """A foreign key between two live tables, dropped with its column."""
    p.replace(
        "models/evolution_task.py",
        '    board_id: uuid.UUID | None = Field(default=None, sa_column=Column("board_id", '
        'UUID(as_uuid=True), ForeignKey("evolution_board.id"), nullable=True))\n',
        "",
    )
    p.replace(
        "models/evolution_task.py",
        '        Index("evolution_task_board_id_idx", "board_id"),\n',
        "",
    )


def test_changes_to_live_tables(project: Project, new_database: NewDatabase) -> None:
    written = [evolve(project, "evolution tasks", add_tasks)]

    # CHECKs added, changed and dropped, and a partial index's predicate, on a live table.
    checks = evolve(project, "evolution task checks and predicate", change_checks_and_predicate)
    up, down = upgrade_part(checks), downgrade_part(checks)
    assert any("evolution_task_notes_length_check" in c for c in calls(up, "drop_constraint"))
    assert len(calls(up, "create_check_constraint")) == 2
    assert up.count("postgresql_not_valid=True") == 2
    assert up.index("autocommit_block") > up.index("create_check_constraint")
    assert "((char_length(title) >= 1) AND (char_length(title) <= 500))" in down
    assert len(calls(up, "drop_index")) == 1
    assert "postgresql_concurrently=True" in up
    assert "NOT done AND due_at IS NOT NULL" in up
    written.append(checks)

    board = evolve(project, "evolution task boards", add_board_reference)
    up = upgrade_part(board)
    (lock,) = calls(up, "lock_tables")
    assert '"evolution_board"' in lock
    assert 'op.drop_index_if_invalid("evolution_task_board_id_idx")' in up
    assert 'op.validate_constraint("evolution_task", "evolution_task_board_id_fkey")' in up
    written.append(board)

    status = evolve(project, "evolution task status", add_status)
    up, down = upgrade_part(status), downgrade_part(status)
    assert up.index("op.create_enum(") < up.index("op.add_column(")
    assert "create_type=False" in up
    assert down.index("op.drop_column(") < down.index("op.drop_enum(")
    written.append(status)

    values = evolve(project, "evolution task status waiting by default", add_status_values)
    up = upgrade_part(values)
    committed_first = up.split("op.alter_column(", 1)[0]
    assert "autocommit_block()" in committed_first
    assert 'op.add_enum_value("evolution_task_status", "WAITING", before="BLOCKED")' in up
    assert 'op.add_enum_value("evolution_task_status", "DONE", after="BLOCKED")' in up
    written.append(values)

    # A type change of a column a policy reads, and a foreign key between live tables
    # dropped with its column.
    widened = evolve(
        project,
        "evolution task rank widened, tasks unlinked",
        widen_rank_and_unlink,
        acknowledge="test: unused",
        squawk={"changing-column-type": "test: the table is small"},
    )
    up = upgrade_part(widened)
    assert up.index("drop_policy") < up.index("alter_column") < up.index("create_policy")
    (lock,) = calls(up, "lock_tables")
    assert '"evolution_board"' in lock, "dropping the foreign key locks the table it references"
    written.append(widened)

    replayed_on_an_empty_database(project, new_database)
    linted_as_generated(project, [revision_id(text) for text in written])


def test_a_validation_that_fails_on_live_rows_reruns_once_they_are_fixed(
    project: Project,
) -> None:
    """Two CHECKs added to a live table with rows, one of them violated: the upgrade
    stops at that one's VALIDATE in one line (the other already validated), and once
    the rows are fixed a plain rerun of ``upgrade head`` completes and checks clean."""
    evolve(project, "evolution tasks", add_tasks)
    url = sa.make_url(project.database_url).set(drivername="postgresql")
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as db:
        db.execute("INSERT INTO evolution_task (user_id, title) VALUES ('ada', repeat('x', 400))")
    change_checks(project)
    project.succeed(["revision", "--autogenerate", "-m", "evolution task checks"])
    (failed,) = project.alembic(["upgrade", "head"])
    (line,) = failed.failed_lines()
    assert "VALIDATE CONSTRAINT evolution_task_title_length_check" in line, line
    assert "skips the committed transaction and runs the online steps again" in line, line
    with psycopg.connect(url.render_as_string(hide_password=False), autocommit=True) as db:
        db.execute("UPDATE evolution_task SET title = 'short'")
    project.succeed(["upgrade", "head"], ["check"])


# --- what cannot be migrated ----------------------------------------------------------


def test_a_policy_on_the_claimed_user_alone_is_refused_unless_acknowledged(
    project: Project,
) -> None:
    """``owned_by(..., identity=UNVERIFIED_CLAIM)`` or a policy of one's own on the
    claimed id (``app.user_id``, which any SQL may set) is refused, in one line, by
    ``alembic revision --autogenerate`` and by ``alembic check``, until the model says
    why the role may be trusted with it."""
    project.write("models/evolution_types.py", TYPES_MODULE)
    project.write(
        "models/evolution_note.py",
        NOTE_MODULE.replace(
            'owned_by("user_id")}},', 'owned_by("user_id", identity=UNVERIFIED_CLAIM)}},'
        ).replace(
            "from models.security import ROW_SECURITY, owned_by",
            "from models.security import ROW_SECURITY, UNVERIFIED_CLAIM, owned_by",
        ),
    )
    project.append("models/__init__.py", registered("evolution_note", "EvolutionNote"))
    before = project.revision_files()
    for command in (["revision", "--autogenerate", "-m", "claimed"], ["check"]):
        (refused,) = project.alembic(command)
        assert refused.code != 0, command
        (line,) = refused.failed_lines()
        assert "policy 'todo_app_select_own' on 'evolution_note' trusts the user id" in line
        assert "claim_acknowledged" in line
    assert project.revision_files() == before

    project.replace(
        "models/evolution_note.py",
        "identity=UNVERIFIED_CLAIM)}},",
        'identity=UNVERIFIED_CLAIM) + RowSecurity(policies=(Policy("todo_app_mine", "SELECT", '
        '("todo_app",), using=f"user_id = {CLAIMED_USER_ID}"),))}},',
    )
    project.replace(
        "models/evolution_note.py",
        "import ROW_SECURITY, UNVERIFIED_CLAIM, owned_by",
        "import CLAIMED_USER_ID, ROW_SECURITY, UNVERIFIED_CLAIM, Policy, RowSecurity, owned_by",
    )
    project.replace(
        "models/evolution_note.py",
        "identity=UNVERIFIED_CLAIM)",
        'identity=UNVERIFIED_CLAIM, claim_acknowledged="test: a trusted job")',
    )
    (mine,) = project.alembic(["revision", "--autogenerate", "-m", "claimed"])
    (line,) = mine.failed_lines()
    assert "policy 'todo_app_mine' on 'evolution_note' trusts the user id" in line
    assert "todo_app_select_own" not in line

    project.replace(
        "models/evolution_note.py",
        'using=f"user_id = {CLAIMED_USER_ID}")',
        'using=f"user_id = {CLAIMED_USER_ID}", claim_acknowledged="test: a trusted job")',
    )
    project.succeed(["revision", "--autogenerate", "-m", "claimed"])
    assert len(project.revision_files()) == len(before) + 1


def test_declarations_that_cannot_be_migrated_are_refused_in_one_line(project: Project) -> None:
    """A role nobody declared, a table that declares no row security, a policy for a
    command spelled otherwise, an expression that does not parse, a model module nobody
    imports: ``alembic revision --autogenerate`` fails with one line naming each, and
    writes nothing."""
    before = project.revision_files()
    project.write("models/evolution_types.py", TYPES_MODULE)
    project.write("models/evolution_note.py", NOTE_MODULE)
    project.append("models/__init__.py", registered("evolution_note", "EvolutionNote"))
    project.replace(
        "models/evolution_note.py",
        'owned_by("user_id")}},',
        'owned_by("user_id", role="todo_ghost") + RowSecurity(policies=(Policy("lower", '
        '"select", ("todo_app",), using="true"),))}},',
    )
    project.replace(
        "models/evolution_note.py",
        "from models.security import ROW_SECURITY, owned_by",
        "from models.security import ROW_SECURITY, Policy, RowSecurity, owned_by",
    )
    project.append(
        "models/evolution_note.py",
        textwrap.dedent(
            """

            class EvolutionBare(SQLModel, table=True):
                __tablename__ = "evolution_bare"
                id: int | None = Field(default=None, primary_key=True)
            """
        ),
    )
    (refused,) = project.alembic(["revision", "--autogenerate", "-m", "refused"])
    assert refused.code != 0
    (line,) = refused.failed_lines()
    assert "'todo_ghost', which is not declared in ROLES" in line
    assert "table 'evolution_bare' declares no row-level security" in line
    assert "policy 'lower' on 'evolution_note' is for 'select'" in line
    assert "Traceback" not in refused.output

    project.write(
        "models/evolution_note.py", NOTE_MODULE.replace("char_length(body) <= 1000", "body <=> 1")
    )
    (unparsable,) = project.alembic(["revision", "--autogenerate", "-m", "unparsable"])
    assert unparsable.code != 0
    (line,) = unparsable.failed_lines()
    assert "CHECK 'evolution_note_body_length_check' on 'evolution_note'" in line

    # A policy on the note that reads the tags, whose own policies read the notes.
    project.write("models/evolution_tag.py", TAG_MODULE)
    project.append(
        "models/__init__.py", registered("evolution_tag", "EvolutionNoteLink", "EvolutionNoteTag")
    )
    project.write(
        "models/evolution_note.py",
        NOTE_MODULE.replace(
            'owned_by("user_id")}},',
            'owned_by("user_id") + RowSecurity(policies=(Policy("todo_app_tagged", "SELECT", '
            '("todo_app",), using="EXISTS (SELECT 1 FROM evolution_note_tag WHERE '
            'evolution_note_tag.note_id = evolution_note.id)", permissive=False),))}},',
        ).replace(
            "from models.security import ROW_SECURITY, owned_by",
            "from models.security import ROW_SECURITY, Policy, RowSecurity, owned_by",
        ),
    )
    (recursive,) = project.alembic(["revision", "--autogenerate", "-m", "recursive"])
    assert recursive.code != 0
    (line,) = recursive.failed_lines()
    assert "read each other's tables ('evolution_note' -> 'evolution_note_tag'" in line

    project.write("models/evolution_note.py", NOTE_MODULE)
    project.replace(
        "models/__init__.py",
        registered("evolution_tag", "EvolutionNoteLink", "EvolutionNoteTag"),
        "",
    )
    project.replace("models/__init__.py", registered("evolution_note", "EvolutionNote"), "")
    (project.root / "models" / "evolution_tag.py").unlink()
    (unimported,) = project.alembic(["revision", "--autogenerate", "-m", "unimported"])
    assert unimported.code != 0
    (line,) = unimported.failed_lines()
    assert "does not import models.evolution_note" in line
    assert project.revision_files() == before


LIMITED_TYPE = '''

class Limited(types.TypeDecorator[str]):
    """Text of at most `length` characters (kept as `most`: Alembic cannot see it)."""

    impl = Text
    cache_ok = True

    def __init__(self, length: int) -> None:
        super().__init__()
        self.most = length
'''


def test_a_revision_written_that_cannot_run_fails_the_revision_command(project: Project) -> None:
    """Two revisions that Alembic writes and PostgreSQL or Python cannot run: a column
    type whose repr does not carry its argument (Alembic writes ``Limited()``), and a
    type change PostgreSQL cannot cast. ``alembic revision`` says so in one line naming
    the file, and exits non-zero, instead of leaving it to the deploy."""
    project.write("models/evolution_types.py", TYPES_MODULE + LIMITED_TYPE)
    project.write(
        "models/evolution_note.py",
        NOTE_MODULE.replace("Trimmed()", "Limited(80)").replace("import Trimmed", "import Limited"),
    )
    project.append("models/__init__.py", registered("evolution_note", "EvolutionNote"))
    before = project.revision_files()
    (written,) = project.alembic(["revision", "--autogenerate", "-m", "limited"])
    (path,) = project.revision_files() - before
    assert written.code != 0
    (line,) = written.failed_lines()
    assert path.name in line
    assert "TypeError" in line
    path.unlink()

    project.write("models/evolution_types.py", TYPES_MODULE)
    project.write("models/evolution_note.py", NOTE_MODULE)
    project.succeed(["revision", "--autogenerate", "-m", "notes"], ["upgrade", "head"])
    # A cast PostgreSQL cannot make is refused when the revision is written...
    project.replace("models/evolution_note.py", 'Column("pinned", Boolean', 'Column("pinned", UUID')
    before = project.revision_files()
    (refused,) = project.alembic(["revision", "--autogenerate", "-m", "uncastable"])
    assert refused.code != 0
    assert project.revision_files() == before
    (line,) = refused.failed_lines()
    assert "evolution_note.pinned: BOOLEAN to UUID cannot be changed in place" in line
    assert "expand/contract" in line
    # ...and, the rewrite accepted in the model, fails on the throwaway database.
    project.replace(
        "models/evolution_note.py",
        'Column("pinned", UUID',
        'Column("pinned", UUID, info={"rewrite_acknowledged": "no rows yet"}',
    )
    (cast,) = project.alembic(
        ["revision", "--autogenerate", "-m", "uncastable"], verify_on_a_database=True
    )
    (path,) = project.revision_files() - before
    assert cast.code != 0
    (line,) = cast.failed_lines()
    assert path.name in line
    assert "fails on a throwaway database" in line
    assert "cannot be cast" in line
