"""Bad input gets one clear line and a non-zero exit, never a traceback or a password.

Each case runs the real ``alembic`` command in a child process, as CI would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.conftest import HEAD, PROJECT_ROOT, NewDatabase, child_url
from tests.support import alembic_batch
from tests.support.evolution import Project
from tests.support.own_server import free_port, own_server
from todo_database.deploy import database

SECRET = "s3cret-Pa55word"


def run_alembic(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    # Without PGHOST: the URL alone must say where to go.
    environment = {key: value for key, value in os.environ.items() if key != "PGHOST"}
    return alembic_batch.alembic(
        args, root=str(PROJECT_ROOT), database_url=database_url, environment=environment
    )


def assert_one_clear_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    output = result.stdout + result.stderr
    failures = [line for line in output.splitlines() if line.startswith("FAILED:")]
    assert result.returncode != 0, output
    assert len(failures) == 1, output
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    for fragment in expected:
        assert fragment in failures[0], failures[0]
    return failures[0]


@pytest.fixture(scope="module")
def password_server() -> Iterator[URL]:
    """A throwaway PostgreSQL that demands a password (the shared servers trust everyone)."""
    with own_server(password=SECRET) as server:
        yield server.url()


def test_right_password_connects(password_server: URL) -> None:
    result = run_alembic("current", database_url=password_server.render_as_string(False))
    assert result.returncode == 0, result.stdout + result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert "postgres:***@127.0.0.1" in result.stderr


def test_wrong_password(password_server: URL) -> None:
    wrong = password_server.set(password="not-" + SECRET)
    result = run_alembic("upgrade", "head", database_url=wrong.render_as_string(False))
    assert_one_clear_line(result, "password authentication failed", "postgres:***@")
    assert "not-" + SECRET not in result.stdout + result.stderr


def test_a_password_in_the_query_is_masked_too(password_server: URL) -> None:
    given = password_server.set(password=None).update_query_dict({"password": SECRET})
    result = run_alembic("current", database_url=given.render_as_string(False))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "password=***" in result.stderr
    assert SECRET not in result.stdout + result.stderr

    wrong = given.update_query_dict({"password": "not-" + SECRET})
    result = run_alembic("upgrade", "head", database_url=wrong.render_as_string(False))
    assert_one_clear_line(result, "password authentication failed", "password=***")


def test_a_secret_in_the_options_is_masked(password_server: URL) -> None:
    """libpq's ``options`` sets server settings; one of them may be a token."""
    given = password_server.update_query_dict({"options": f"-c todo.api_token={SECRET}"})
    result = run_alembic("current", database_url=given.render_as_string(False))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "todo.api_token%3D***" in result.stderr
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{SECRET}@db.example.com/todo",
        f"postgresql://app@db.example.com/todo?password={SECRET}&sslmode=require",
        f"postgresql://app@db.example.com/todo?sslpassword={SECRET}",
        f"postgresql://app@db.example.com/todo?options=-c%20password%3D{SECRET}",
        f"postgresql://app@db.example.com/todo?options=-csearch_path%3Dx%20-capp.secret%3D{SECRET}",
        f"postgresql://app@db.example.com/todo?auth_token={SECRET}&api_key={SECRET}",
        f"postgresql://app@db.example.com/todo?PASSWD={SECRET}",
    ],
)
def test_mask_hides_every_secret_a_url_can_carry(url: str) -> None:
    masked = database.mask(url)
    assert SECRET not in masked
    assert "***" in masked
    assert (
        database.redact(f"failed for {url} with {SECRET}", database.parse_url(url)).count(SECRET)
        == 0
    )


def test_mask_keeps_what_is_not_secret() -> None:
    url = "postgresql://app@db.example.com/todo?options=endpoint%3Dep-cool-1&sslmode=require"
    assert database.mask(url) == url


def test_database_that_does_not_exist(password_server: URL) -> None:
    url = password_server.set(database="no_such_database")
    result = run_alembic("upgrade", "head", database_url=url.render_as_string(False))
    assert_one_clear_line(result, "'no_such_database' does not exist")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "not a URL"),
        ("mysql://user:" + SECRET + "@localhost/todo", "unsupported scheme 'mysql'"),
        ("postgresql://user:" + SECRET + "@localhost:port/todo", "malformed"),
        ("postgresql://user:" + SECRET + "@localhost:5432", "names no database"),
    ],
)
def test_malformed_urls(url: str, expected: str) -> None:
    assert_one_clear_line(run_alembic("upgrade", "head", database_url=url), expected)


def test_refused_connection() -> None:
    url = f"postgres://user:{SECRET}@127.0.0.1:{free_port()}/todo"
    assert_one_clear_line(run_alembic("upgrade", "head", database_url=url), "connection refused")


def test_host_that_never_answers_fails_within_the_connect_timeout() -> None:
    # A socket that listens but never accepts: the TCP handshake completes (the kernel does
    # it) and then nothing ever answers, as with a host behind a dropping firewall.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        url = f"postgresql://user:{SECRET}@127.0.0.1:{port}/todo?connect_timeout=2"
        started = time.monotonic()
        result = run_alembic("upgrade", "head", database_url=url)
        elapsed = time.monotonic() - started
    assert_one_clear_line(result, "no answer within the connect timeout")
    assert elapsed < 10


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_accepted_schemes_keep_query_parameters(scheme: str) -> None:
    url = database.parse_url(
        f"{scheme}://app:{SECRET}@ep-cool-name-123.eu-central-1.aws.neon.tech/neondb"
        "?sslmode=require&channel_binding=require"
    )
    assert url.drivername == "postgresql+psycopg"
    assert dict(url.query) == {"sslmode": "require", "channel_binding": "require"}
    assert SECRET not in database.mask(url)


@pytest.fixture
def project(tmp_path: Path, new_database: NewDatabase, head_template: str) -> Project:
    """A copy of the repository, its database at head."""
    return Project.copy(tmp_path / "project", child_url(new_database(template=head_template)))


BROKEN_REVISION = '''"""broken"""
from alembic import op

revision = "bbbb00000001"
down_revision = "{down}"
branch_labels = None
depends_on = None
{body}

def upgrade() -> None:
    {upgrade}


def downgrade() -> None:
    pass
'''


@pytest.mark.parametrize(
    ("body", "upgrade", "expected"),
    [
        pytest.param(
            "RowSecurity(policies=())", "pass", "does not import: NameError", id="does-not-import"
        ),
        pytest.param(
            "", 'op.create_table("t", sa.Column("id", sa.Integer))', "NameError", id="raises"
        ),
    ],
)
def test_a_revision_that_cannot_run_is_one_line(
    project: Project, body: str, upgrade: str, expected: str
) -> None:
    (project.versions / "2026_01_01_0000-bbbb00000001_broken.py").write_text(
        BROKEN_REVISION.format(down=HEAD, body=body, upgrade=upgrade)
    )
    result = project.cli("upgrade", "head")
    line = assert_one_clear_line(result, expected)
    assert "bbbb00000001" in line
    assert "nothing was changed" in line or f"still at {HEAD}" in line


def test_models_that_do_not_import_are_one_line(project: Project) -> None:
    project.append("models/__init__.py", "\nfrom models.no_such_module import Nothing  # noqa\n")
    result = project.cli("check")
    assert_one_clear_line(result, "the models do not import (__init__.py, line", "no_such_module")
