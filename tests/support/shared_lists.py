"""Lists shared with members, as a new user declares them: models the repository does
not have, written into a copy of it (tests/stories/test_sharing.py, the sharing benchmark).

A list its owner shares with members (``shared_with``), the membership table
(``member_of``: a composite key, three levels, one of which manages members), tasks in
a list (``owned_through`` the list) and comments on a task (owned through the task:
two levels down).
"""

from __future__ import annotations

from tests.support.evolution import Project, registered

SHARED_MODULE = '''
"""Lists shared with members (tests/stories/test_sharing.py)."""

import uuid

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, member_of, owned_through, shared_with


class SharedList(SQLModel, table=True):
    __tablename__ = "shared_list"
    __table_args__ = (
        Index("shared_list_user_id_idx", "user_id"),
        {"info": {ROW_SECURITY: shared_with("shared_list_member", owner="user_id")}},
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
    name: str = Field(sa_column=Column("name", Text, nullable=False))


class SharedListMember(SQLModel, table=True):
    __tablename__ = "shared_list_member"
    __table_args__ = (
        # The lists a user is a member of: what the sharing functions look up.
        Index("shared_list_member_user_id_idx", "user_id"),
        CheckConstraint("level IN ('viewer', 'editor', 'manager')", name="level_known"),
        {
            "info": {
                ROW_SECURITY: member_of(
                    "list_id",
                    level="level",
                    levels=("viewer", "editor", "manager"),
                    writers=("editor", "manager"),
                    managers=("manager",),
                )
            }
        },
    )

    list_id: uuid.UUID = Field(
        sa_column=Column(
            "list_id",
            UUID(as_uuid=True),
            ForeignKey("shared_list.id", ondelete="CASCADE"),
            primary_key=True,
        )
    )
    user_id: str = Field(
        sa_column=Column(
            "user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), primary_key=True
        )
    )
    level: str = Field(sa_column=Column("level", Text, nullable=False))


class ListTask(SQLModel, table=True):
    __tablename__ = "list_task"
    __table_args__ = (
        Index("list_task_list_id_idx", "list_id"),
        {"info": {ROW_SECURITY: owned_through("list_id")}},
    )

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
        ),
    )
    list_id: uuid.UUID = Field(
        sa_column=Column(
            "list_id",
            UUID(as_uuid=True),
            ForeignKey("shared_list.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    title: str = Field(sa_column=Column("title", Text, nullable=False))


class TaskComment(SQLModel, table=True):
    __tablename__ = "task_comment"
    __table_args__ = (
        Index("task_comment_task_id_idx", "task_id"),
        {"info": {ROW_SECURITY: owned_through("task_id")}},
    )

    id: int | None = Field(default=None, primary_key=True)
    task_id: uuid.UUID = Field(
        sa_column=Column(
            "task_id",
            UUID(as_uuid=True),
            ForeignKey("list_task.id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    body: str = Field(sa_column=Column("body", Text, nullable=False))
'''


def add_shared_lists(project: Project) -> None:
    project.write("models/shared_lists.py", SHARED_MODULE)
    project.append(
        "models/__init__.py",
        registered("shared_lists", "ListTask", "SharedList", "SharedListMember", "TaskComment"),
    )
