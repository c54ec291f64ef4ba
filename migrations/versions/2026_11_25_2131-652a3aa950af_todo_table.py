"""todo table

Creates the todo table, owned by "user" through user_id (ON DELETE CASCADE), with
the two indexes the todo API's list and count queries need. Downgrade drops every
todo.

Revision ID: 652a3aa950af
Revises: 328698ca5234
Create Date: 2026-11-25 21:31:58.175279+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "652a3aa950af"
down_revision: str | Sequence[str] | None = "328698ca5234"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "todo",
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("completed", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "char_length(description) <= 10000", name=op.f("todo_description_length_check")
        ),
        sa.CheckConstraint(
            "char_length(title) BETWEEN 1 AND 500", name=op.f("todo_title_length_check")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("todo_user_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("todo_pkey")),
    )
    op.create_index(
        "todo_user_id_created_at_id_idx", "todo", ["user_id", "created_at", "id"], unique=False
    )
    op.create_index(
        "todo_user_id_due_at_id_open_idx",
        "todo",
        ["user_id", "due_at", "id"],
        unique=False,
        postgresql_where=sa.text("NOT completed"),
    )


def downgrade() -> None:
    op.drop_index(
        "todo_user_id_due_at_id_open_idx",
        table_name="todo",
        postgresql_where=sa.text("NOT completed"),
    )
    op.drop_index("todo_user_id_created_at_id_idx", table_name="todo")
    op.drop_table("todo")
