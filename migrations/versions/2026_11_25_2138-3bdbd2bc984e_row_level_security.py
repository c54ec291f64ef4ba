"""row level security

Creates the NOLOGIN roles todo_app (the todo API) and todo_auth (Better Auth),
enables and FORCEs row-level security on every table, and adds the policies and
privileges declared in models/: todo_app reaches only the current user's todos and
its own "user" row; todo_auth reaches Better Auth's four tables and nothing else.
All five tables are locked at once, without waiting, before anything changes, so the
revision can never deadlock with writers (which lock todo before "user"); if any is
busy, the deploy retries. Downgrade removes it all; a role is dropped only if no
database of the cluster still uses it.

Revision ID: 3bdbd2bc984e
Revises: 652a3aa950af
Create Date: 2026-11-25 21:38:14.797374+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "3bdbd2bc984e"
down_revision: str | Sequence[str] | None = "652a3aa950af"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.lock_tables(["account", "session", "todo", "user", "verification"])
    op.ensure_role("todo_app")
    op.ensure_role("todo_auth")
    op.enable_row_security("user")
    op.force_row_security("user")
    op.create_policy(
        "user", "todo_auth_all", command="ALL", roles=["todo_auth"], using="true", with_check="true"
    )
    op.create_policy(
        "user",
        "todo_app_select_own",
        command="SELECT",
        roles=["todo_app"],
        using="id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.grant_privileges("user", "todo_app", ["SELECT"])
    op.grant_privileges("user", "todo_auth", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.enable_row_security("verification")
    op.force_row_security("verification")
    op.create_policy(
        "verification",
        "todo_auth_all",
        command="ALL",
        roles=["todo_auth"],
        using="true",
        with_check="true",
    )
    op.grant_privileges("verification", "todo_auth", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.enable_row_security("account")
    op.force_row_security("account")
    op.create_policy(
        "account",
        "todo_auth_all",
        command="ALL",
        roles=["todo_auth"],
        using="true",
        with_check="true",
    )
    op.grant_privileges("account", "todo_auth", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.enable_row_security("session")
    op.force_row_security("session")
    op.create_policy(
        "session",
        "todo_auth_all",
        command="ALL",
        roles=["todo_auth"],
        using="true",
        with_check="true",
    )
    op.grant_privileges("session", "todo_auth", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.enable_row_security("todo")
    op.force_row_security("todo")
    op.create_policy(
        "todo",
        "todo_app_select_own",
        command="SELECT",
        roles=["todo_app"],
        using="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.create_policy(
        "todo",
        "todo_app_insert_own",
        command="INSERT",
        roles=["todo_app"],
        with_check="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.create_policy(
        "todo",
        "todo_app_update_own",
        command="UPDATE",
        roles=["todo_app"],
        using="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
        with_check="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.create_policy(
        "todo",
        "todo_app_delete_own",
        command="DELETE",
        roles=["todo_app"],
        using="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.grant_privileges("todo", "todo_app", ["SELECT", "INSERT", "UPDATE", "DELETE"])


def downgrade() -> None:
    op.lock_tables(["account", "session", "todo", "user", "verification"])
    op.revoke_privileges("todo", "todo_app", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.drop_policy(
        "todo",
        "todo_app_delete_own",
        command="DELETE",
        roles=["todo_app"],
        using="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.drop_policy(
        "todo",
        "todo_app_update_own",
        command="UPDATE",
        roles=["todo_app"],
        using="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
        with_check="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.drop_policy(
        "todo",
        "todo_app_insert_own",
        command="INSERT",
        roles=["todo_app"],
        with_check="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.drop_policy(
        "todo",
        "todo_app_select_own",
        command="SELECT",
        roles=["todo_app"],
        using="user_id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.no_force_row_security("todo")
    op.disable_row_security("todo")
    op.revoke_privileges("session", "todo_auth", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.drop_policy(
        "session",
        "todo_auth_all",
        command="ALL",
        roles=["todo_auth"],
        using="true",
        with_check="true",
    )
    op.no_force_row_security("session")
    op.disable_row_security("session")
    op.revoke_privileges("account", "todo_auth", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.drop_policy(
        "account",
        "todo_auth_all",
        command="ALL",
        roles=["todo_auth"],
        using="true",
        with_check="true",
    )
    op.no_force_row_security("account")
    op.disable_row_security("account")
    op.revoke_privileges("verification", "todo_auth", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.drop_policy(
        "verification",
        "todo_auth_all",
        command="ALL",
        roles=["todo_auth"],
        using="true",
        with_check="true",
    )
    op.no_force_row_security("verification")
    op.disable_row_security("verification")
    op.revoke_privileges("user", "todo_auth", ["SELECT", "INSERT", "UPDATE", "DELETE"])
    op.revoke_privileges("user", "todo_app", ["SELECT"])
    op.drop_policy(
        "user",
        "todo_app_select_own",
        command="SELECT",
        roles=["todo_app"],
        using="id = (SELECT NULLIF(current_setting('app.user_id', true), ''))",
    )
    op.drop_policy(
        "user", "todo_auth_all", command="ALL", roles=["todo_auth"], using="true", with_check="true"
    )
    op.no_force_row_security("user")
    op.disable_row_security("user")
    op.drop_role_if_unused("todo_auth")
    op.drop_role_if_unused("todo_app")
