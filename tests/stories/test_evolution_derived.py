"""The derived row-security tests hold on schemas the repository does not have yet, and
go red on a policy broken by hand: proven through the front door.

A throwaway copy of the repository gets the shapes a new user's first changes take
(issue 19): a project owned by its user, with a second permissive policy (public
projects, readable by every signed-in user, gated by a restrictive policy so that a
transaction without identity still scans nothing) and a status from a lookup table without
row security that the API reads; its members in a link table whose primary key is
``(project_id, user_id)``, owned through the project, with a native enum for their
role; tasks owned through the project, with a native enum and a restrictive policy;
checks owned through the task, two levels down; on ``todo``, a UNIQUE constraint on
``(user_id, title)``, a second permissive and a restrictive policy. ``alembic revision
--autogenerate`` writes them with the real template and hooks, ``upgrade head`` runs
them, and a second revision adds an enum value. Then the copy's own derived test
modules run, unchanged, against the test server, and must pass. Last, two policies are
broken in the models (a policy on the claimed user id whose ``claim_acknowledged`` is
taken out once migrated; a ``USING (true)`` on an owned table) and the same modules
must fail, naming those two tables and no other.

The models are the test's own, in modules and tables named ``evolution_*``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import NewDatabase
from tests.support.evolution import DERIVED, Project, failed_tests, registered, with_users

pytestmark = pytest.mark.slow


PROJECT_MODULE = '''
"""Projects shared with members, their tasks and the tasks' checks
(tests/stories/test_evolution_derived.py)."""

import enum
import uuid

from sqlalchemy import Boolean, Column, Enum, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import (
    APP_ROLE,
    IDENTITY,
    READ_ONLY,
    ROW_SECURITY,
    Grant,
    Policy,
    RowSecurity,
    owned_by,
    owned_through,
    without_row_security,
)


OID = "'evolution_project'::regclass::oid"
PROVEN = IDENTITY.proven


class MemberRole(enum.Enum):
    viewer = "viewer"
    editor = "editor"


class Priority(str, enum.Enum):
    low = "low"
    normal = "normal"
    high = "high"


class EvolutionProjectStatus(SQLModel, table=True):
    """What a project's status may be: reference data, the same for everyone."""

    __tablename__ = "evolution_project_status"
    __table_args__ = (
        {
            "info": {
                ROW_SECURITY: without_row_security(
                    "test: the statuses are no secret", grants=(Grant(APP_ROLE, READ_ONLY),)
                )
            }
        },
    )

    code: str = Field(sa_column=Column("code", Text, primary_key=True))
    label: str = Field(sa_column=Column("label", Text, nullable=False))


class EvolutionProject(SQLModel, table=True):
    __tablename__ = "evolution_project"
    __table_args__ = (
        Index("evolution_project_owner_id_idx", "owner_id"),
        {
            "info": {
                ROW_SECURITY: owned_by("owner_id")
                + RowSecurity(
                    policies=(
                        Policy(
                            "todo_app_select_public",
                            "SELECT",
                            (APP_ROLE,),
                            using="evolution_project.public "
                            "AND (SELECT public.verified_user_id()) IS NOT NULL",
                        ),
                        # Without it, a transaction without identity would scan the
                        # rows an index finds before the policies dropped them, as
                        # owned_through's derived policies say.
                        Policy(
                            "todo_app_signed_in_only",
                            "SELECT",
                            (APP_ROLE,),
                            using=f"evolution_project.tableoid = {OID} AND "
                            f"evolution_project.tableoid = (SELECT {OID} WHERE {PROVEN})",
                            permissive=False,
                        ),
                    ),
                    lint_acknowledged={
                        "owner-column": "test: a public project is for every user to read",
                        "policy-column-index:public": "test: few projects are public",
                    },
                )
            }
        },
    )

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
        ),
    )
    owner_id: str = Field(
        sa_column=Column(
            "owner_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False
        )
    )
    name: str = Field(sa_column=Column("name", Text, nullable=False))
    status: str = Field(
        sa_column=Column(
            "status", Text, ForeignKey("evolution_project_status.code"), nullable=False
        )
    )
    public: bool = Field(sa_column=Column("public", Boolean, nullable=False))


class EvolutionProjectMember(SQLModel, table=True):
    """Who else works on a project: a link table keyed by both its references."""

    __tablename__ = "evolution_project_member"
    __table_args__ = ({"info": {ROW_SECURITY: owned_through("project_id")}},)

    project_id: uuid.UUID = Field(
        sa_column=Column(
            "project_id",
            UUID(as_uuid=True),
            ForeignKey("evolution_project.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    user_id: str = Field(
        sa_column=Column(
            "user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True
        )
    )
    role: MemberRole = Field(
        sa_column=Column("role", Enum(MemberRole, name="evolution_member_role"), nullable=False)
    )


class EvolutionProjectTask(SQLModel, table=True):
    __tablename__ = "evolution_project_task"
    __table_args__ = (
        Index("evolution_project_task_project_id_idx", "project_id"),
        {
            "info": {
                ROW_SECURITY: owned_through("project_id")
                + RowSecurity(
                    policies=(
                        Policy(
                            "todo_app_done_tasks_stay",
                            "DELETE",
                            (APP_ROLE,),
                            using="NOT evolution_project_task.done",
                            permissive=False,
                        ),
                    ),
                    lint_acknowledged={
                        "policy-column-index:done": "test: narrows a project's own tasks"
                    },
                )
            }
        },
    )

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
        ),
    )
    project_id: uuid.UUID = Field(
        sa_column=Column(
            "project_id",
            UUID(as_uuid=True),
            ForeignKey("evolution_project.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    title: str = Field(sa_column=Column("title", Text, nullable=False))
    priority: Priority = Field(
        sa_column=Column("priority", Enum(Priority, name="evolution_priority"), nullable=False)
    )
    done: bool = Field(sa_column=Column("done", Boolean, nullable=False))


class EvolutionTaskCheck(SQLModel, table=True):
    """A task's checklist: owned two levels down, through the task and its project."""

    __tablename__ = "evolution_task_check"
    __table_args__ = (
        Index("evolution_task_check_task_id_idx", "task_id"),
        {"info": {ROW_SECURITY: owned_through("task_id")}},
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: uuid.UUID = Field(
        sa_column=Column(
            "task_id",
            UUID(as_uuid=True),
            ForeignKey("evolution_project_task.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    label: str = Field(sa_column=Column("label", Text, nullable=False))
'''

#: On todo: a UNIQUE constraint on live rows, a second permissive policy (the owner's
#: dated todos, again) and a restrictive one (a completed todo is no longer changed).
TODO_POLICIES = """\
{"info": {ROW_SECURITY: owned_by("user_id") + RowSecurity(
            policies=(
                Policy("todo_app_select_dated", "SELECT", ("todo_app",),
                       using=owner_is_current_user("user_id") + " AND due_at IS NOT NULL"),
                Policy("todo_app_completed_stay", "UPDATE", ("todo_app",),
                       using="NOT completed", with_check="true", permissive=False),
            ),
            lint_acknowledged={
                "policy-column-index:due_at": "test: narrows a user's own todos",
                "policy-column-index:completed": "test: narrows a user's own todos",
            },
        )}},"""

#: The two policies broken once migrated: members find their memberships by the id
#: the transaction claims, and that claim no longer says why it may be trusted; every
#: check is readable by anyone.
CLAIMED = (
    'Policy("todo_app_select_my_memberships", "SELECT", (APP_ROLE,), '
    'using=f"evolution_project_member.user_id = {CLAIMED_USER_ID}", '
    'claim_acknowledged="test: a trusted job")'
)
EVERY_CHECK = 'Policy("todo_app_select_every_check", "SELECT", (APP_ROLE,), using="true")'
#: What the catalog lint would say of them otherwise: the isolation tests are the point.
BROKEN_LINTS = (
    'lint_acknowledged={"owner-column": "test: broken on purpose", '
    '"policy-column-index:user_id": "test: broken on purpose"}'
)


def add_the_shapes(p: Project) -> None:
    p.write("models/evolution_project.py", PROJECT_MODULE)
    p.append(
        "models/__init__.py",
        registered(
            "evolution_project",
            "EvolutionProject",
            "EvolutionProjectMember",
            "EvolutionProjectStatus",
            "EvolutionProjectTask",
            "EvolutionTaskCheck",
        ),
    )
    p.replace(
        "models/todo.py",
        "        # The todo API sees and changes only the current user's todos.\n",
        '        UniqueConstraint("user_id", "title", name="todo_user_id_title_key"),\n'
        "        # The todo API sees and changes only the current user's todos.\n",
    )
    p.replace("models/todo.py", '{"info": {ROW_SECURITY: owned_by("user_id")}},', TODO_POLICIES)
    p.replace(
        "models/todo.py",
        "from sqlalchemy import CheckConstraint,",
        "from sqlalchemy import UniqueConstraint\nfrom sqlalchemy import CheckConstraint,",
    )
    p.replace(
        "models/todo.py",
        "from models.security import ROW_SECURITY, owned_by",
        "from models.security import (\n"
        "    ROW_SECURITY, Policy, RowSecurity, owned_by, owner_is_current_user\n)",
    )


def add_an_enum_value(p: Project) -> None:
    p.replace(
        "models/evolution_project.py",
        '    high = "high"\n',
        '    high = "high"\n    urgent = "urgent"\n',
    )


def break_two_policies(p: Project) -> None:
    p.replace(
        "models/evolution_project.py",
        '{"info": {ROW_SECURITY: owned_through("project_id")}},',
        '{"info": {ROW_SECURITY: owned_through("project_id") + RowSecurity(policies=('
        f"{CLAIMED},), {BROKEN_LINTS})}}}},",
    )
    p.replace(
        "models/evolution_project.py",
        '{"info": {ROW_SECURITY: owned_through("task_id")}},',
        '{"info": {ROW_SECURITY: owned_through("task_id") + RowSecurity(policies=('
        f"{EVERY_CHECK},), {BROKEN_LINTS})}}}},",
    )
    p.replace(
        "models/evolution_project.py", "    APP_ROLE,\n", "    APP_ROLE,\n    CLAIMED_USER_ID,\n"
    )


def tables_named(failures: list[str]) -> set[str]:
    """The evolution tables the failed tests' ids name (``[todo_app-<table>...]``)."""
    return {
        table
        for failure in failures
        for table in re.findall(r"\[todo_app-(evolution_[a-z_]+)[\]-]", failure)
    }


def test_the_derived_tests_hold_on_new_shapes_and_fail_on_broken_policies(
    tmp_path: Path, new_database: NewDatabase, head_template: str, admin_url: URL
) -> None:
    project = with_users(tmp_path / "project", new_database(template=head_template), "ada")
    add_the_shapes(project)
    project.succeed(
        ["revision", "--autogenerate", "-m", "projects, members, tasks, checks"],
        ["upgrade", "head"],
    )
    add_an_enum_value(project)
    project.succeed(["revision", "--autogenerate", "-m", "urgent tasks"], ["upgrade", "head"])
    project.succeed(["check"])

    derived = project.pytest(admin_url, "-v", *DERIVED)
    failures = failed_tests(derived.stdout)
    assert derived.returncode == 0, "\n".join(failures) + derived.stdout[-6000:]
    for table in (
        "evolution_project",
        "evolution_project_member",
        "evolution_project_status",
        "evolution_project_task",
        "evolution_task_check",
    ):
        assert f"todo_app-{table}" in derived.stdout, f"no derived test names {table}"
    assert "test_todo_app_does_what_the_declarations_say PASSED" in derived.stdout

    break_two_policies(project)
    project.succeed(["revision", "--autogenerate", "-m", "broken"], ["upgrade", "head"])
    # Migrated, the claim no longer says why its role may be trusted with it.
    project.replace("models/evolution_project.py", ', claim_acknowledged="test: a trusted job"', "")

    broken = project.pytest(admin_url, *DERIVED)
    failures = failed_tests(broken.stdout)
    assert broken.returncode != 0, broken.stdout[-3000:]
    broken_tables = {"evolution_project_member", "evolution_task_check"}
    assert tables_named(failures) == broken_tables, failures
    elsewhere = [f for f in failures if not tables_named([f])]
    assert elsewhere == [], f"failures that name neither broken table: {elsewhere}"
    # The claim fools only those who claim; USING (true) lets in anyone, claiming or not.
    claims = [f for f in failures if "forged_claim" in f or "claiming_another" in f]
    assert tables_named(claims) == broken_tables, failures
    nobody = [f for f in failures if "without_a_verified_user" in f]
    assert tables_named(nobody) == {"evolution_task_check"}, failures
    # Each failure names the policy that lets it through.
    assert "through todo_app_select_my_memberships" in broken.stdout
    assert "rests on the claimed user id" in broken.stdout
    assert "through todo_app_select_every_check" in broken.stdout
