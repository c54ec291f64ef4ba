"""Shared lists, as a new user adds them: through the front door, then tried as each
kind of user.

A copy of the repository gets models of its own that today's do not have: a list its
owner shares with members (``shared_with``), the membership table
(``member_of``, a composite key, three levels, one of which manages members), tasks
in a list (``owned_through`` the list) and comments on a task (owned through the task:
two levels down). ``alembic revision --autogenerate`` with the real template and hooks,
then upgrade, check, one down and up again; then, as the API's role bound to each
user's live session, what each may see and do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import URL

from models.security import APP_ROLE
from tests.conftest import NewDatabase, child_url
from tests.support.evolution import Project, evolve, with_users
from tests.support.shared_lists import add_shared_lists

OWNER, VIEWER, EDITOR, MANAGER, OUTSIDER = "olive", "vic", "eddie", "mia", "otto"
USERS = (OWNER, VIEWER, EDITOR, MANAGER, OUTSIDER)
INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True)
class Lists:
    project: Project
    url: URL
    shared: uuid.UUID  # olive's, shared with vic, eddie and mia
    others: uuid.UUID  # otto's, shared with nobody
    task: uuid.UUID  # in the shared list
    revision: str

    def connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(child_url(self.url.set(drivername="postgresql")))


@pytest.fixture(scope="module")
def lists(
    tmp_path_factory: pytest.TempPathFactory, admin_url: URL, head_template: str
) -> Iterator[Lists]:
    from todo_database.deploy import database

    with database.throwaway_database(
        admin_url, "todo_test_", "sharing", template=head_template
    ) as url:
        project = with_users(Path(tmp_path_factory.mktemp("sharing")) / "project", url, *USERS)
        revision = evolve(project, "shared lists", add_shared_lists)
        project.succeed(["upgrade", "head"], ["check"])
        with psycopg.connect(child_url(url.set(drivername="postgresql")), autocommit=True) as c:
            # As the owner, who bypasses row security: the lists, members, a task each.
            shared, others = (
                c.execute(
                    "INSERT INTO shared_list (user_id, name) VALUES (%s, %s) RETURNING id",
                    [owner, f"{owner}'s list"],
                ).fetchone()[0]  # type: ignore[index]
                for owner in (OWNER, OUTSIDER)
            )
            for member, level in ((VIEWER, "viewer"), (EDITOR, "editor"), (MANAGER, "manager")):
                c.execute(
                    "INSERT INTO shared_list_member (list_id, user_id, level) VALUES (%s, %s, %s)",
                    [shared, member, level],
                )
            task = c.execute(
                "INSERT INTO list_task (list_id, title) VALUES (%s, 'shared task') RETURNING id",
                [shared],
            ).fetchone()[0]  # type: ignore[index]
            c.execute(
                "INSERT INTO list_task (list_id, title) VALUES (%s, 'private task')", [others]
            )
            c.execute("INSERT INTO task_comment (task_id, body) VALUES (%s, 'a comment')", [task])
            for user in USERS:
                c.execute(
                    """INSERT INTO session (id, token, "userId", "expiresAt", "updatedAt")
                       VALUES (%s, %s, %s, now() + interval '1 day', now())""",
                    [f"session-{user}", token(user), user],
                )
        yield Lists(project, url, shared, others, task, revision)


def token(user: str) -> str:
    return f"live-session-of-{user}"


@contextmanager
def as_user(lists: Lists, user: str | None) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """One transaction as the API's role bound to `user`'s live session (None: nobody),
    rolled back."""
    with lists.connect() as connection:
        connection.execute(f"SET ROLE {APP_ROLE}")
        if user is not None:
            bound = connection.execute("SELECT public.bind_session(%s)", [token(user)]).fetchone()
            assert bound == (user,)
        yield connection
        connection.rollback()


def count(connection: psycopg.Connection[tuple[object, ...]], query: str, *args: object) -> int:
    row = connection.execute(query, list(args)).fetchone()
    assert row is not None
    return int(str(row[0]))


def refused(
    connection: psycopg.Connection[tuple[object, ...]], statement: str, *args: object
) -> bool:
    """Whether `statement` is refused for privilege or by a WITH CHECK (in a savepoint)."""
    try:
        with connection.transaction():
            connection.execute(statement, list(args))
    except psycopg.Error as exc:
        if exc.sqlstate == INSUFFICIENT_PRIVILEGE:
            return True
        raise
    return False


def changed(
    connection: psycopg.Connection[tuple[object, ...]], statement: str, *args: object
) -> int:
    with connection.transaction(force_rollback=True):
        return connection.execute(statement, list(args)).rowcount


def test_the_revision_derives_policies_and_functions_that_cannot_recurse(lists: Lists) -> None:
    text = lists.revision
    for access in ("readable", "writable", "managed"):
        assert f'"shared_list_{access}_ids"' in text
    assert 'owner="todo_sharing"' in text
    assert "shared_list_member" in text
    assert "recursion" not in text


@pytest.mark.parametrize("user", [OWNER, VIEWER, EDITOR, MANAGER])
def test_the_owner_and_every_member_read_the_list_its_tasks_comments_and_members(
    lists: Lists, user: str
) -> None:
    with as_user(lists, user) as c:
        assert count(c, "SELECT count(*) FROM shared_list WHERE id = %s", lists.shared) == 1
        assert count(c, "SELECT count(*) FROM list_task WHERE list_id = %s", lists.shared) == 1
        assert count(c, "SELECT count(*) FROM task_comment WHERE task_id = %s", lists.task) == 1
        assert (
            count(c, "SELECT count(*) FROM shared_list_member WHERE list_id = %s", lists.shared)
            == 3
        )


@pytest.mark.parametrize("user", [OUTSIDER, None])
def test_a_non_member_and_nobody_see_nothing_of_it(lists: Lists, user: str | None) -> None:
    with as_user(lists, user) as c:
        for table, column, value in (
            ("shared_list", "id", lists.shared),
            ("list_task", "list_id", lists.shared),
            ("task_comment", "task_id", lists.task),
            ("shared_list_member", "list_id", lists.shared),
        ):
            assert count(c, f"SELECT count(*) FROM {table} WHERE {column} = %s", value) == 0
        mine = 1 if user == OUTSIDER else 0
        assert count(c, "SELECT count(*) FROM shared_list") == mine


def test_a_viewer_reads_and_writes_nothing(lists: Lists) -> None:
    with as_user(lists, VIEWER) as c:
        assert (
            changed(c, "UPDATE shared_list SET name = 'mine now' WHERE id = %s", lists.shared) == 0
        )
        assert changed(c, "UPDATE list_task SET title = 'x' WHERE list_id = %s", lists.shared) == 0
        assert changed(c, "DELETE FROM list_task WHERE list_id = %s", lists.shared) == 0
        assert refused(c, "INSERT INTO list_task (list_id, title) VALUES (%s, 'x')", lists.shared)
        assert refused(c, "INSERT INTO task_comment (task_id, body) VALUES (%s, 'x')", lists.task)


@pytest.mark.parametrize("user", [EDITOR, MANAGER, OWNER])
def test_a_writer_changes_the_list_and_its_tasks_within_it(lists: Lists, user: str) -> None:
    with as_user(lists, user) as c:
        assert (
            changed(c, "UPDATE shared_list SET name = 'renamed' WHERE id = %s", lists.shared) == 1
        )
        assert (
            changed(c, "UPDATE list_task SET title = 'done' WHERE list_id = %s", lists.shared) == 1
        )
        assert not refused(
            c, "INSERT INTO list_task (list_id, title) VALUES (%s, 'new')", lists.shared
        )
        assert not refused(
            c, "INSERT INTO task_comment (task_id, body) VALUES (%s, 'noted')", lists.task
        )
        # Never into another list, nor moving a task there.
        assert refused(c, "INSERT INTO list_task (list_id, title) VALUES (%s, 'x')", lists.others)
        assert refused(
            c, "UPDATE list_task SET list_id = %s WHERE list_id = %s", lists.others, lists.shared
        )


@pytest.mark.parametrize("user", [EDITOR, MANAGER])
def test_no_member_takes_the_list_over_moves_it_or_deletes_it(lists: Lists, user: str) -> None:
    with as_user(lists, user) as c:
        assert refused(c, "UPDATE shared_list SET user_id = %s WHERE id = %s", user, lists.shared)
        assert refused(
            c, "UPDATE shared_list SET id = gen_random_uuid() WHERE id = %s", lists.shared
        )
        assert changed(c, "DELETE FROM shared_list WHERE id = %s", lists.shared) == 0
        assert refused(c, "INSERT INTO shared_list (user_id, name) VALUES (%s, 'theirs')", OWNER)


@pytest.mark.parametrize(
    ("user", "who", "level"),
    [
        pytest.param(OUTSIDER, OUTSIDER, "viewer", id="outsider-adds-themselves"),
        pytest.param(VIEWER, OUTSIDER, "viewer", id="viewer-adds-someone"),
        pytest.param(EDITOR, OUTSIDER, "editor", id="editor-adds-someone"),
        pytest.param(MANAGER, MANAGER, "manager", id="manager-adds-themselves"),
        pytest.param(MANAGER, OUTSIDER, "owner", id="manager-invents-a-level"),
    ],
)
def test_nobody_adds_themselves_and_only_managers_add_others(
    lists: Lists, user: str, who: str, level: str
) -> None:
    with as_user(lists, user) as c:
        assert refused(
            c,
            "INSERT INTO shared_list_member (list_id, user_id, level) VALUES (%s, %s, %s)",
            lists.shared,
            who,
            level,
        )


@pytest.mark.parametrize("user", [OWNER, MANAGER])
def test_the_owner_and_managers_add_change_and_remove_members(lists: Lists, user: str) -> None:
    with as_user(lists, user) as c:
        assert not refused(
            c,
            "INSERT INTO shared_list_member (list_id, user_id, level) VALUES (%s, %s, 'viewer')",
            lists.shared,
            OUTSIDER,
        )
        assert (
            changed(
                c,
                "UPDATE shared_list_member SET level = 'editor' "
                "WHERE list_id = %s AND user_id = %s",
                lists.shared,
                VIEWER,
            )
            == 1
        )
        assert (
            changed(
                c,
                "DELETE FROM shared_list_member WHERE list_id = %s AND user_id = %s",
                lists.shared,
                EDITOR,
            )
            == 1
        )


RAISE_OWN_LEVEL = (
    "UPDATE shared_list_member SET level = 'manager' WHERE list_id = %s AND user_id = %s"
)


@pytest.mark.parametrize("user", [VIEWER, EDITOR])
def test_no_member_raises_their_own_level(lists: Lists, user: str) -> None:
    with as_user(lists, user) as c:
        assert changed(c, RAISE_OWN_LEVEL, lists.shared, user) == 0


def test_a_manager_changes_no_membership_of_their_own(lists: Lists) -> None:
    """A manager may change the members' levels, not their own (the row written would
    be theirs)."""
    with as_user(lists, MANAGER) as c:
        assert refused(c, RAISE_OWN_LEVEL.replace("'manager'", "'editor'"), lists.shared, MANAGER)


def test_a_member_may_leave(lists: Lists) -> None:
    with as_user(lists, VIEWER) as c:
        assert (
            changed(
                c,
                "DELETE FROM shared_list_member WHERE list_id = %s AND user_id = %s",
                lists.shared,
                VIEWER,
            )
            == 1
        )


def test_a_removed_member_loses_access_at_their_next_statement(lists: Lists) -> None:
    """The member's transaction is open and has read the list; the owner removes them
    and commits; the member's very next statement, in that same transaction, sees
    nothing of it."""
    with as_user(lists, VIEWER) as member, lists.connect() as owner:
        assert count(member, "SELECT count(*) FROM list_task WHERE list_id = %s", lists.shared) == 1
        owner.execute(f"SET ROLE {APP_ROLE}")
        owner.execute("SELECT public.bind_session(%s)", [token(OWNER)])
        owner.execute(
            "DELETE FROM shared_list_member WHERE list_id = %s AND user_id = %s",
            [lists.shared, VIEWER],
        )
        owner.commit()
        try:
            assert (
                count(member, "SELECT count(*) FROM list_task WHERE list_id = %s", lists.shared)
                == 0
            )
            assert (
                count(member, "SELECT count(*) FROM shared_list WHERE id = %s", lists.shared) == 0
            )
        finally:
            with lists.connect() as restore:
                restore.execute(
                    "INSERT INTO shared_list_member (list_id, user_id, level) "
                    "VALUES (%s, %s, 'viewer')",
                    [lists.shared, VIEWER],
                )
                restore.commit()


@pytest.mark.parametrize("user", [OUTSIDER, None])
def test_explain_and_errors_tell_a_non_member_nothing(lists: Lists, user: str | None) -> None:
    """What the planner reads of the shared rows is nothing the policies hide: no row is
    removed by a filter (the keys are in the index condition, or the scan never starts),
    and writing into the list fails as writing into a list that does not exist does."""
    with as_user(lists, user) as c:
        for table, column, value in (
            ("list_task", "list_id", lists.shared),
            ("shared_list", "id", lists.shared),
            ("shared_list_member", "list_id", lists.shared),
        ):
            plan = "\n".join(
                str(row[0])
                for row in c.execute(
                    f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                    f"SELECT * FROM {table} WHERE {column} = %s",
                    [value],
                )
            )
            assert "Rows Removed by Filter" not in plan, plan
        missing = uuid.uuid4()
        for target in (lists.shared, missing):
            assert refused(c, "INSERT INTO list_task (list_id, title) VALUES (%s, 'x')", target)


def test_the_tables_are_what_the_declarations_say(lists: Lists, new_database: NewDatabase) -> None:
    """Replayed on an empty database by the plain CLI, the chain with the shared lists
    matches the models."""
    url = new_database()
    lists.project.succeed(["upgrade", "head"], ["check"], database_url=child_url(url))
