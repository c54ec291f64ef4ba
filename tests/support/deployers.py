"""Deployers to end halfway: the real ``alembic`` command line in processes of their
own (started warm, :mod:`tests.support.warm_start`), in a copy of the repository whose
chain ends with two test-only revisions. The first commits at once; the second creates
a table, then sleeps for as long as its deployer's ``PGOPTIONS`` says
(``-c todo_test.sleep=<s>``), so that a rerun, which sets nothing, goes straight through.
For :mod:`tests.deploy.test_deploy_failures` and :mod:`tests.support.lock_release`.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from sqlalchemy.engine import URL

from tests.conftest import HEAD, child_url
from tests.support import alembic_batch, warm_start
from tests.support.evolution import Project
from todo_database.deploy import database
from todo_database.deploy import runner as deploy

PROBE, SLOW = "fff1000000a1", "fff1000000a2"
#: What the slow revision runs, both ways, after its table is made or dropped.
SLEEPING = (
    "SELECT pg_sleep(coalesce(nullif(current_setting('todo_test.sleep', true), ''), '0')::float)"
)
REVISION = '''"""deploy failure {slug}"""
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE deploy_failure_{slug} (id integer)")
    {sleep}


def downgrade() -> None:
    op.execute("DROP TABLE deploy_failure_{slug}")
    {sleep}
'''


#: The alembic console script (``alembic.config.main``), with Ctrl-C delivered as on a
#: terminal even when this test process was started with SIGINT ignored (a background
#: job), which every child would otherwise inherit.
ALEMBIC = (
    "import signal, sys; from alembic.config import main; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); sys.exit(main(prog='alembic'))"
)


def slow_project(root: Path) -> Project:
    """A copy of the repository in `root` with the two test-only revisions after head."""
    copy = Project.copy(root, "")
    for revision, slug, down, sleep in (
        (PROBE, "probe", HEAD, "pass"),
        (SLOW, "slow", PROBE, f"op.execute({SLEEPING!r})"),
    ):
        (copy.versions / f"2099_01_01_0000-{revision}_{slug}.py").write_text(
            REVISION.format(slug=slug, revision=revision, down=down, sleep=sleep)
        )
    return copy


@dataclass
class Deployer:
    """One ``alembic`` process, to be ended by the test; what it says is read as it
    says it, so a test can wait for a line."""

    process: subprocess.Popen[str] | warm_start.WarmProcess
    _said: dict[str, list[str]] = field(default_factory=lambda: {"stdout": [], "stderr": []})
    _readers: list[threading.Thread] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, lines in self._said.items():
            reader = threading.Thread(
                target=self._read, args=(getattr(self.process, name), lines), daemon=True
            )
            reader.start()
            self._readers.append(reader)

    @staticmethod
    def _read(stream: IO[str], lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def said(self, text: str) -> bool:
        """Whether a line of its stderr so far holds `text`."""
        return any(text in line for line in list(self._said["stderr"]))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        code = self.process.wait(timeout=timeout)
        for reader in self._readers:
            reader.join(timeout)
        stdout, stderr = ("".join(self._said[name]) for name in ("stdout", "stderr"))
        return subprocess.CompletedProcess(self.process.args, code, stdout, stderr)


def start(
    project: Project,
    url: URL | str,
    *arguments: str,
    sleep: int = 0,
    launch: Callable[..., subprocess.Popen[str] | warm_start.WarmProcess] = warm_start.popen,
) -> Deployer:
    environment = project.environment(url if isinstance(url, str) else child_url(url))
    if sleep:
        environment["PGOPTIONS"] = f"-c todo_test.sleep={sleep}"
    process = launch(
        [sys.executable, "-c", ALEMBIC, *arguments],
        cwd=project.root,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Deployer(process)


def alembic(project: Project, url: URL | str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """One ``alembic`` command run to its end, in a warm child
    (:mod:`tests.support.alembic_batch`)."""
    environment = project.environment(url if isinstance(url, str) else child_url(url))
    results = alembic_batch.run(str(project.root), environment, [arguments])
    ((code, stdout, stderr),) = results or [(1, "", "the alembic child died")]
    return subprocess.CompletedProcess(["alembic", *arguments], code, stdout, stderr)


def admin(url: URL) -> psycopg.Connection[Any]:
    """An autocommit session on `url`'s database, for looking and for killing."""
    return database.admin_connection(url)


def wait_until(what: str, probe: Callable[[], object], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := probe()):
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)
    return found


def sleeping_pid(url: URL) -> int:
    """The backend of the deployer sleeping in the slow revision, once it is."""

    def probe() -> int | None:
        with admin(url) as connection:
            row = connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND state = 'active' AND starts_with(query, %s)",
                [SLEEPING],
            ).fetchone()
        return int(row[0]) if row else None

    return int(wait_until("the deployer sleeping in its slow revision", probe))


def version(url: URL) -> str:
    with admin(url) as connection:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return str(row[0]) if row else "base"


def trying_for_the_lock(connection: psycopg.Connection[Any]) -> bool:
    """Whether a deployer is waiting for the deploy lock on `connection`'s database: its
    lock session is there, and does not hold the lock. (Inside a transaction, as a
    test holding the lock is, the activity statistics are read afresh.)"""
    connection.execute("SELECT pg_stat_clear_snapshot()")
    row = connection.execute(
        "SELECT 1 FROM pg_stat_activity a WHERE a.datname = current_database() "
        "AND starts_with(a.application_name, 'todo-migrations lock ') "
        "AND NOT EXISTS (SELECT FROM pg_locks l WHERE l.pid = a.pid AND l.granted "
        "AND l.relation = %s::regclass)",
        [deploy.LOCK_TABLE],
    ).fetchone()
    return row is not None
