"""The real Better Auth server library works on a database at head, with no schema change.

``tests/better_auth/check.mjs`` drives Better Auth (its migration planner, then sign-up,
sign-in, session lookup and user deletion); ``make install`` installs it with npm.

Better Auth connects as it does in production: through a LOGIN role that is a member
of todo_auth, so only what the schema grants todo_auth is available to it. The test
creates that role (``todo_test_auth_<hex>``; the test servers trust local
connections, so it needs no password) and drops it afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import URL, Engine

from models.security import APP_ROLE, AUTH_ROLE
from tests.conftest import PROJECT_ROOT, scalar
from todo_database.deploy import database

CHECK_DIR = PROJECT_ROOT / "tests" / "better_auth"
# check.mjs gives up on its own after 60 s; this only guards against a wedged node.
TIMEOUT_S = 120

# Where each table points at its owner, and so what deleting the user must empty.
OWNED_ROWS = {
    "user": "id",
    "session": '"userId"',
    "account": '"userId"',
    "todo": "user_id",
}


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: install Node.js 20 or later, then run `make install`")
    if not (CHECK_DIR / "node_modules" / "better-auth").is_dir():
        pytest.fail(
            f"{CHECK_DIR.relative_to(PROJECT_ROOT)}/node_modules is missing: run `make install`"
        )
    return [node, str(CHECK_DIR / "check.mjs"), "--pause-before-delete"]


def node_url(url: URL) -> str:
    """`url` as pg in Node reads it: plain ``postgresql://``, any Unix socket in ``?host=``.

    On the embedded server the URL has no host: the socket directory is in PGHOST.
    """
    if not url.host and "host" not in url.query and os.environ.get("PGHOST"):
        url = url.update_query_dict({"host": os.environ["PGHOST"]})
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def run_check(
    database_url: str, auth_database_url: str, before_delete: Callable[[str], None]
) -> dict[str, Any]:
    """Run check.mjs, Better Auth connecting with `auth_database_url`, calling
    `before_delete(user_id)` while it waits to delete the user."""
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "AUTH_DATABASE_URL": auth_database_url,
    }
    with subprocess.Popen(
        node_command(),
        cwd=PROJECT_ROOT,
        env=environment,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as node:
        assert node.stdout is not None
        paused = node.stdout.readline()  # empty when node failed before pausing
        if paused:
            before_delete(json.loads(paused)["paused"]["userId"])
        try:
            stdout, stderr = node.communicate("go\n", timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            node.kill()
            pytest.fail(f"check.mjs did not finish within {TIMEOUT_S} s")
    if node.returncode != 0:
        pytest.fail(stderr.strip() or f"check.mjs exited with {node.returncode}")
    summary: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return summary


def owned_rows(engine: Engine, user_id: str) -> dict[str, object]:
    return {
        table: scalar(engine, f'SELECT count(*) FROM "{table}" WHERE {column} = :id', id=user_id)
        for table, column in OWNED_ROWS.items()
    }


@pytest.fixture
def auth_login_role(admin_url: URL, head_url: URL) -> Iterator[str]:
    """A LOGIN role, member of todo_auth and nothing else, created for this test only."""
    name = f"todo_test_auth_{secrets.token_hex(6)}"
    role = sql.Identifier(name)
    with database.admin_connection(admin_url) as connection:
        connection.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(role, sql.Identifier(AUTH_ROLE))
        )
    try:
        yield name
    finally:
        # Only the role created above is ever dropped. It can own nothing but what
        # Better Auth might have created in the test's database.
        try:
            with database.admin_connection(head_url) as connection:
                # Only a role with its privileges may drop what it owns: the owner, which
                # created it, makes itself one first.
                connection.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
                connection.execute(sql.SQL("DROP OWNED BY {}").format(role))
        finally:
            with database.admin_connection(admin_url) as connection:
                connection.execute(sql.SQL("DROP ROLE {}").format(role))


def member_of(engine: Engine, role: str, group: str) -> object:
    return scalar(engine, "SELECT pg_has_role(:role, :group, 'MEMBER')", role=role, group=group)


def connected_as(engine: Engine, role: str) -> object:
    """How many sessions `role` has open on the engine's database."""
    return scalar(
        engine,
        """SELECT count(*) FROM pg_stat_activity
           WHERE usename = :role AND datname = current_database()""",
        role=role,
    )


def test_better_auth_signs_up_signs_in_and_deletes_on_head(
    head_url: URL, head_engine: Engine, auth_login_role: str
) -> None:
    # The role Better Auth uses has todo_auth's rights and no others.
    assert member_of(head_engine, auth_login_role, AUTH_ROLE) is True
    assert member_of(head_engine, auth_login_role, APP_ROLE) is False
    privileged = scalar(
        head_engine,
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = :role",
        role=auth_login_role,
    )
    assert privileged is False
    before: dict[str, object] = {}

    def add_todo(user_id: str) -> None:
        # Better Auth's pool is still open: it is connected as the login role.
        before["connectedAsAuthRole"] = connected_as(head_engine, auth_login_role) != 0
        with head_engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO todo (user_id, title) VALUES (:id, 'outlive my owner')"),
                {"id": user_id},
            )
        before.update(owned_rows(head_engine, user_id))
        before["email"] = scalar(head_engine, 'SELECT email FROM "user" WHERE id = :id', id=user_id)

    result = run_check(
        node_url(head_url),
        node_url(head_url.set(username=auth_login_role, password=None)),
        add_todo,
    )

    assert result["planned"] == {"create": [], "add": [], "indexes": [], "problems": []}
    assert result["signedUp"] is True
    assert result["signedIn"] is True
    assert result["sessionUserEmail"] == result["email"]
    assert result["deleted"] is True
    # One user with its password account, sign-up's and sign-in's sessions, and the todo
    # (which todo_auth cannot even read: the deletion cascades to it as the owner).
    assert before == {
        "connectedAsAuthRole": True,
        "user": 1,
        "session": 2,
        "account": 1,
        "todo": 1,
        "email": result["email"],
    }
    assert owned_rows(head_engine, result["userId"]) == dict.fromkeys(OWNED_ROWS, 0)
