"""The todo list: each todo belongs to one user and goes when the user does."""

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Column, DateTime, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401  (the naming convention must be set before any table exists)
from models.security import ROW_SECURITY, owned_by

TITLE_MAX_LENGTH = 500
DESCRIPTION_MAX_LENGTH = 10_000


class TodoFields(SQLModel):
    """What a client may set on a todo; validated like any Pydantic model."""

    title: str = Field(min_length=1, max_length=TITLE_MAX_LENGTH, sa_type=Text)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX_LENGTH, sa_type=Text)
    completed: bool = Field(
        default=False,
        sa_column_kwargs={"server_default": text("false")},
    )
    due_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class TodoCreate(TodoFields):
    """A new todo as the API receives it; the owner comes from the session, not the body."""


class TodoUpdate(SQLModel):
    """A partial update: every field optional, each still validated."""

    title: str | None = Field(default=None, min_length=1, max_length=TITLE_MAX_LENGTH)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX_LENGTH)
    completed: bool | None = None
    due_at: datetime | None = None


class Todo(TodoFields, table=True):
    __tablename__ = "todo"
    __table_args__ = (
        CheckConstraint(
            f"char_length(title) BETWEEN 1 AND {TITLE_MAX_LENGTH}", name="title_length"
        ),
        CheckConstraint(
            f"char_length(description) <= {DESCRIPTION_MAX_LENGTH}", name="description_length"
        ),
        # (a) a user's todos, newest first, keyset-paginated on (created_at, id);
        #     also serves the foreign key's cascade and every policy on user_id.
        Index("todo_user_id_created_at_id_idx", "user_id", "created_at", "id"),
        # (b) a user's open todos by due date, undated last, and (c) their count:
        #     partial, so completed todos (most of them, over time) cost nothing here.
        Index(
            "todo_user_id_due_at_id_open_idx",
            "user_id",
            "due_at",
            "id",
            postgresql_where=text("NOT completed"),
        ),
        # (d) sync: a user's todos changed since the client's last (updated_at, id),
        #     oldest change first, keyset-paginated.
        Index("todo_user_id_updated_at_id_idx", "user_id", "updated_at", "id"),
        # The todo API sees and changes only the current user's todos.
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
    created_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            "created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")
        ),
    )
    updated_at: datetime | None = Field(
        default=None,
        sa_column=Column(
            "updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")
        ),
    )
