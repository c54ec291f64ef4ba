"""todo sync index

Adds todo_user_id_updated_at_id_idx for the sync query (a user's todos changed since
the client's last (updated_at, id)). The table is live, so the index is built
CONCURRENTLY outside a transaction: writers are never blocked by the build, and a
rerun after an interrupted build first drops the INVALID leftover.

Revision ID: 157d7df8d597
Revises: 3bdbd2bc984e
Create Date: 2026-11-25 21:44:41.269570+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "157d7df8d597"
down_revision: str | Sequence[str] | None = "3bdbd2bc984e"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index_if_invalid("todo_user_id_updated_at_id_idx")
        op.create_index(
            "todo_user_id_updated_at_id_idx",
            "todo",
            ["user_id", "updated_at", "id"],
            unique=False,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "todo_user_id_updated_at_id_idx",
            table_name="todo",
            postgresql_concurrently=True,
            if_exists=True,
        )
