"""``neon-branch`` against a local stand-in of the Neon API (tests/support/neon_standin.py).

Each branch the stand-in creates is a real ``todo_test_neon_*`` database on the test
server, so ``create`` runs the project's real ``alembic upgrade head`` on it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

import session_binding
from models.security import APP_ROLE
from tests.conftest import ServerRoles, make_alembic_config, new_engine
from tests.support import pgbouncer
from tests.support.api_roles import create_login_role, drop_login_role
from tests.support.neon_standin import (
    API_KEY,
    DATABASE_PREFIX,
    FAKE_PASSWORD,
    PROJECT_ID,
    NeonStandin,
)
from tests.support.rls_helpers import live_token, seed_sessions
from todo_database.deploy import database
from todo_database.neon import branches
from todo_database.neon.client import NeonError
from todo_database.neon.settings import parse_duration

SECRETS = (API_KEY, FAKE_PASSWORD)
MACHINE_LINES = ("db_url=", "db_url_pooled=", "::add-mask::")


@pytest.fixture(scope="module")
def default_branch_database(admin_url: URL) -> Iterator[str]:
    """The empty database behind every stand-in's default branch: only ever copied."""
    name = f"{DATABASE_PREFIX}main_{uuid.uuid4().hex[:8]}"
    database.create_database(admin_url, name)
    yield name
    database.drop_database(admin_url, name)


@pytest.fixture
def standin(
    test_server: ServerRoles,
    default_branch_database: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[NeonStandin]:
    """The stand-in of one Neon project, the environment pointing ``neon-branch`` at it:
    its branches are the tests' Neon-shaped owner's, pooled through a real PgBouncer."""
    with NeonStandin(
        test_server.owner,
        default_branch_database,
        operator_url=test_server.superuser,
        pooler=pgbouncer.find_binary(),
    ) as api:
        monkeypatch.setenv("NEON_API_KEY", API_KEY)
        monkeypatch.setenv("NEON_PROJECT_ID", PROJECT_ID)
        monkeypatch.setenv("NEON_API_HOST", api.api_host)
        monkeypatch.setenv("NEON_RETRY_BASE_DELAY", "0.01")
        monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "github_output"))
        monkeypatch.delenv("NEON_DATABASE", raising=False)
        monkeypatch.delenv("NEON_ROLE", raising=False)
        monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
        yield api


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """env.py configures logging from alembic.ini, onto the captured stderr of the test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``neon-branch argv`` in-process; check no secret reached people."""
    code = branches.main(list(argv))
    out, err = capsys.readouterr()
    for secret in SECRETS:
        assert secret not in err, err
        for line in out.splitlines():
            machine = line.startswith(MACHINE_LINES) or "--show-password" in argv
            assert secret not in line or machine, out
    assert "Traceback" not in err, err
    return code, out, err


def error_line(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("neon-branch: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def outputs(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if not line.startswith("::"))


def repository_head() -> str:
    head = ScriptDirectory.from_config(make_alembic_config()).get_current_head()
    assert head is not None
    return head


def test_create_migrates_the_branch_to_head_and_hands_out_its_urls(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = os.environ["DATABASE_URL"]
    standin.running_polls = 3
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    code, out, err = run(capsys, "create", "pr-1")
    assert code == 0, err
    mask, *machine_lines = out.splitlines(keepends=True)
    assert mask == f"::add-mask::{FAKE_PASSWORD}\n"  # before the runner logs any URL

    branch = standin.branch_named("pr-1")
    assert branch is not None
    printed = outputs(out)
    assert printed == {
        "branch_id": branch.id,
        "db_url": standin.direct_uri(branch),
        "db_url_pooled": standin.pooled_uri(branch),
    }
    assert Path(os.environ["GITHUB_OUTPUT"]).read_text() == "".join(machine_lines)
    assert f"{branch.endpoint_id}-pooler." in printed["db_url_pooled"]
    assert os.environ["DATABASE_URL"] == guard  # the migration's own URL is not left behind

    engine = new_engine(database.parse_url(printed["db_url"]))
    try:
        with engine.connect() as connection:
            version = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
            assert version.scalar_one() == repository_head()
            assert connection.execute(sa.text("SELECT to_regclass('public.todo')")).scalar()
    finally:
        engine.dispose()

    create_body = standin.requests_to("POST", r"/branches$")[0].body
    assert create_body == {
        "branch": {"name": "pr-1", "init_source": "parent-data"},
        "endpoints": [{"type": "read_write"}],
    }
    # Both operations are polled to the end (scheduling, running three times, finished),
    # before the migration starts.
    assert len(standin.requests_to("GET", r"/operations/")) == 2 * (3 + 1)
    assert "waiting for operation create_branch (scheduling, 0.0 s)" in err
    assert "waiting for operation create_branch (running" in err
    assert err.index("operation start_compute finished") < err.index("migrating")
    assert "***" in err  # the migrated URL is announced, password masked


def test_the_api_binds_its_users_through_the_branchs_pooled_url(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the API does with ``db_url_pooled``: its own login role, a member of
    todo_app that the owner made on the branch, through the branch's PgBouncer in
    transaction mode, binding a signed-in user's session and seeing only their todos."""
    if standin.pooler is None:
        pytest.skip(pgbouncer.INSTALL_HINT)
    code, out, err = run(capsys, "create", "pr-1")
    assert code == 0, err
    urls = outputs(out)
    api_role = f"todo_test_api_{uuid.uuid4().hex[:8]}"
    owner = new_engine(database.parse_url(urls["db_url"]))
    try:
        with database.admin_connection(database.parse_url(urls["db_url"])) as connection:
            create_login_role(connection, api_role, APP_ROLE)
        with owner.begin() as connection:
            seed_sessions_and_todos(connection, ("ada", "bob"))
        pooled = database.parse_url(urls["db_url_pooled"]).set(username=api_role)
        assert session_binding.is_pooled(pooled)
        assert (pooled.port, pooled.query["hostaddr"]) == standin.pooler_address("pr-1")
        api = session_binding.create_engine(pooled, poolclass=sa.pool.NullPool)
        try:
            with session_binding.acting_for(live_token("ada")), api.begin() as connection:
                session_binding.bind(connection, live_token("ada"))
                titles = connection.execute(sa.text("SELECT title FROM public.todo")).scalars()
                assert sorted(titles) == ["todo of ada"]
        finally:
            api.dispose()
    finally:
        with database.admin_connection(database.parse_url(urls["db_url"])) as connection:
            drop_login_role(connection, api_role)
        owner.dispose()


def seed_sessions_and_todos(connection: sa.Connection, users: tuple[str, ...]) -> None:
    """As the owner (who bypasses row security): each of `users` with a live session and
    one todo."""
    for user in users:
        connection.execute(
            sa.text(
                'INSERT INTO "user" (id, name, email, "emailVerified") '
                "VALUES (:u, :u, :u || '@example.com', true)"
            ),
            {"u": user},
        )
    seed_sessions(connection, list(users))
    for user in users:
        connection.execute(
            sa.text("INSERT INTO todo (user_id, title) VALUES (:u, 'todo of ' || :u)"), {"u": user}
        )


def test_a_second_create_reuses_the_branch(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(capsys, "create", "pr-1")
    second = run(capsys, "create", "pr-1", "--schema-only")
    assert first[0] == second[0] == 0, second[2]
    assert outputs(first[1]) == outputs(second[1])
    assert "reusing it (--schema-only ignored" in second[2]
    assert len(standin.requests_to("POST", r"/branches$")) == 1
    assert [b.name for b in standin.branches.values()] == ["main", "pr-1"]


def test_create_asks_for_schema_only_a_parent_and_an_expiry(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    parent = standin.add_branch("staging")
    code, _, err = run(
        capsys, "create", "pr-2", "--parent", "staging", "--schema-only", "--expires-in", "12h"
    )
    assert code == 0, err
    spec = standin.requests_to("POST", r"/branches$")[0].body["branch"]  # type: ignore[index]
    assert spec["init_source"] == "schema-only"
    assert spec["parent_id"] == parent.id
    expires_at = datetime.strptime(spec["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires_at - (datetime.now(UTC) + timedelta(hours=12))) < timedelta(minutes=1)


def test_a_failed_operation_is_one_line(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.failing_actions = {"start_compute"}
    code, out, err = run(capsys, "create", "pr-1")
    assert code == 2
    assert out == ""
    assert "operation start_compute failed" in error_line(err)


def test_locked_project_is_retried_until_it_answers(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.answer_locked(3)
    code, out, err = run(capsys, "create", "pr-1")
    assert code == 0, err
    assert len(standin.requests_to("POST", r"/branches$")) == 4
    assert err.count("/branches: 423 project already has running") == 3
    assert outputs(out)["branch_id"] == standin.branch_named("pr-1").id  # type: ignore[union-attr]


def test_server_errors_are_retried(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.add_branch("pr-1")
    standin.answer_error(2, 503, method="GET", path=r"/branches$")
    standin.answer_error(1, 429, method="GET", path=r"/branches$")
    code, out, err = run(capsys, "list")
    assert code == 0, err
    assert "pr-1" in out
    assert len(standin.requests_to("GET", r"/branches$")) == 4


def test_a_creation_answered_500_after_all_is_not_made_twice(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.answer_error(1, 500, method="POST", path=r"/branches$", after_applying=True)
    code, out, err = run(capsys, "create", "pr-1")
    assert code == 0, err
    assert len(standin.requests_to("POST", r"/branches$")) == 1
    assert [b.name for b in standin.branches.values()] == ["main", "pr-1"]
    assert outputs(out)["branch_id"] == standin.branch_named("pr-1").id  # type: ignore[union-attr]


def test_retries_stop_when_the_budget_is_spent(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.answer_error(10_000, 502)
    started = time.monotonic()
    code, out, err = run(capsys, "list", "--retry-for", "0.5")
    elapsed = time.monotonic() - started
    assert code == 2
    assert out == ""
    line = error_line(err)
    assert "--retry-for 0.5" in line
    assert "last answer: 502" in line
    assert 0.5 <= elapsed < 2.0
    assert len(standin.requests) > 3


def test_a_bad_api_key_is_one_line(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEON_API_KEY", "napi_wrong_key_0000")
    code, out, err = run(capsys, "create", "pr-1")
    assert (code, out) == (2, "")
    assert err == "neon-branch: error: Neon rejected the API key (401)\n"
    assert "napi_wrong_key_0000" not in err


def test_an_unknown_project_is_one_line(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "list", "--project-id", "no-such-project")
    assert (code, out) == (2, "")
    assert err == "neon-branch: error: project 'no-such-project' not found (404)\n"


@pytest.mark.parametrize(
    ("unset", "message"),
    [
        ("NEON_API_KEY", "NEON_API_KEY is not set"),
        ("NEON_PROJECT_ID", "set NEON_PROJECT_ID or pass --project-id"),
    ],
)
def test_missing_configuration_is_one_line(
    standin: NeonStandin,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    unset: str,
    message: str,
) -> None:
    monkeypatch.delenv(unset)
    code, _, err = run(capsys, "list")
    assert code == 2
    assert message in error_line(err)
    assert standin.requests == []


def test_a_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("7d") == timedelta(days=7)
    assert branches.main(["create", "pr-1", "--expires-in", "2w"]) == 2
    assert "invalid duration '2w'" in capsys.readouterr().err


def test_delete_twice_succeeds(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str], admin_url: URL
) -> None:
    branch = standin.add_branch("pr-1")
    code, out, err = run(capsys, "delete", "pr-1")
    assert code == 0, err
    assert out == f"deleted branch pr-1 ({branch.id})\n"
    assert standin.branch_named("pr-1") is None
    with database.admin_connection(admin_url) as connection:
        row = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [branch.database]
        ).fetchone()
    assert row is None

    code, out, err = run(capsys, "delete", "pr-1")
    assert (code, out) == (0, "")
    assert "branch pr-1 does not exist: nothing to delete" in err


def test_list_shows_parent_and_creation_time(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    pr1 = standin.add_branch("pr-1")
    pr2 = standin.add_branch("pr-2", parent="pr-1")
    code, out, err = run(capsys, "list")
    assert code == 0, err
    header, *rows = [line.split() for line in out.splitlines()]
    assert header == ["NAME", "ID", "PARENT", "CREATED"]
    main = standin.branch_named("main")
    assert main is not None
    assert rows == [
        ["main", "(default)", main.id, "-", main.created_at],
        ["pr-1", pr1.id, "main", pr1.created_at],
        ["pr-2", pr2.id, "pr-1", pr2.created_at],
    ]


def test_url_prints_the_direct_or_pooled_url(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    branch = standin.add_branch("pr-1")
    code, out, err = run(capsys, "url", "pr-1", "--pooled", "--show-password")
    assert code == 0, err
    pooled = sa.make_url(out.strip())
    assert pooled.host == f"{branch.endpoint_id}-pooler.eu-central-1.aws.neon.tech"
    assert (pooled.username, pooled.database) == (standin.owner, "neondb")

    code, out, err = run(capsys, "url", "pr-1", "--show-password")
    assert code == 0, err
    assert out == standin.direct_uri(branch) + "\n"

    code, out, err = run(capsys, "url", "pr-1")  # for people: the password masked
    assert code == 0, err
    assert out == database.mask(standin.direct_uri(branch)) + "\n"

    code, out, err = run(capsys, "url", "pr-9")
    assert (code, out) == (2, "")
    assert "branch 'pr-9' not found" in error_line(err)


def test_an_unknown_database_name_is_one_line(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.add_branch("pr-1")
    code, _, err = run(capsys, "url", "pr-1", "--database", "nope")
    assert code == 2
    assert "database 'nope' with role 'neondb_owner' on branch 'pr-1' not found" in err


def test_migrations_never_go_through_the_pooler(standin: NeonStandin) -> None:
    """env.py refuses Neon's pooled host; migrate() turns that into one line."""
    pooled = standin.pooled_uri(standin.add_branch("pr-1"))
    with pytest.raises(NeonError, match=r"^migration failed: .*-pooler\.") as failure:
        branches.migrate(pooled)
    assert FAKE_PASSWORD not in str(failure.value)
