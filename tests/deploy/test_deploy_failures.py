"""Whatever ends a deploy ends it in one line, and the database is where that line says.

Each deployer the test ends is the real ``alembic`` command line in a process of its
own (:mod:`tests.support.deployers`), in a copy of the repository with two test-only
revisions: one that commits at once, and one that creates a table and then sleeps (for
as long as its deployer's ``PGOPTIONS`` asks; a rerun does not sleep). While the second
one runs, the test ends it the way a deploy is ended in life: its backends terminated
(``pg_terminate_backend``), the server restarted or stopped (a server of the test's
own), Ctrl-C, SIGTERM, or the deployer's machine vanishing from the network. Each time:
one ``FAILED:`` line naming the revision, the statement and where the database stands,
a non-zero exit, no traceback, the database at the revision that line names, and a
rerun that continues from there.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import suppress

import psycopg
import pytest
from sqlalchemy.engine import URL

from tests.conftest import HEAD, child_url, upgrade
from tests.support import vanishing_host
from tests.support.deployers import (
    PROBE,
    SLEEPING,
    SLOW,
    admin,
    alembic,
    sleeping_pid,
    slow_project,
    start,
    trying_for_the_lock,
    version,
    wait_until,
)
from tests.support.evolution import Project
from tests.support.own_server import OwnServer, own_server
from todo_database.deploy import database
from todo_database.deploy import runner as deploy


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    return slow_project(tmp_path_factory.mktemp("deploy_failures") / "project")


def one_failed_line(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    output = result.stdout + result.stderr
    failures = [line for line in output.splitlines() if line.startswith("FAILED:")]
    assert result.returncode != 0, output
    assert len(failures) == 1, output
    assert "Traceback" not in output, output
    for fragment in expected:
        assert fragment in failures[0], failures[0]
    return failures[0]


def assert_rerun_continues(project: Project, url: URL) -> None:
    rerun = alembic(project, url, "upgrade", "head")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"Running upgrade {PROBE} -> {SLOW}" in rerun.stderr
    assert f"Running upgrade {HEAD} -> {PROBE}" not in rerun.stderr
    assert version(url) == SLOW


def slow_revision_line(*more: str) -> tuple[str, ...]:
    """What every failure of the slow revision names: it, its statement, and that the
    database stays at the revision before it."""
    return (
        f"revision {SLOW} (2099_01_01_0000-{SLOW}_slow.py)",
        SLEEPING,
        f"still at {PROBE}",
        *more,
    )


def assert_nothing_half_applied(url: URL) -> None:
    with admin(url) as connection:
        row = connection.execute("SELECT to_regclass('deploy_failure_slow')").fetchone()
    assert row == (None,), "the interrupted revision left its table behind"


@pytest.mark.parametrize(
    ("sessions", "debug"),
    [
        pytest.param("migration", False, id="migration-session"),
        pytest.param("all", False, id="both-sessions"),  # the lock session too, as a restart does
        pytest.param("all", True, id="both-sessions-debug"),
    ],
)
def test_a_killed_backend_is_one_line(
    project: Project, head_url: URL, sessions: str, debug: bool
) -> None:
    deployer = start(project, head_url, *(["-x", "debug=1"] * debug), "upgrade", "head", sleep=60)
    pid = sleeping_pid(head_url)
    with admin(head_url) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND (pid = %s OR %s)",
            [pid, sessions == "all"],
        )
    result = deployer.finish()

    if debug:
        output = result.stdout + result.stderr
        assert "Traceback" in output, output
        assert "AdminShutdown" in output, output
        assert len([line for line in output.splitlines() if line.startswith("FAILED:")]) == 1
    else:
        one_failed_line(
            result,
            *slow_revision_line("terminating connection", "the connection was lost"),
        )
        # A lock session that died with the run is no news.
        assert "The migration lock's session ended" not in result.stderr
    assert_nothing_half_applied(head_url)
    assert_rerun_continues(project, head_url)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_a_revision_is_one_line(
    project: Project, head_url: URL, signum: signal.Signals
) -> None:
    deployer = start(project, head_url, "upgrade", "head", sleep=60)
    pid = sleeping_pid(head_url)
    deployer.signal(signum)
    result = deployer.finish()

    one_failed_line(result, *slow_revision_line(f"was interrupted ({signum.name})", "rerun"))
    with admin(head_url) as connection:  # cancelled, not left running on the server
        row = connection.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
        assert row.fetchone() is None
    current = alembic(project, head_url, "current")
    assert current.stdout.split() == [PROBE], current.stdout
    assert_nothing_half_applied(head_url)
    assert_rerun_continues(project, head_url)


def test_ctrl_c_during_a_downgrade_is_one_line(project: Project, head_url: URL) -> None:
    assert alembic(project, head_url, "upgrade", "head").returncode == 0
    deployer = start(project, head_url, "downgrade", "-1", sleep=60)
    sleeping_pid(head_url)
    deployer.signal(signal.SIGINT)
    result = deployer.finish()

    one_failed_line(
        result,
        f"revision {SLOW} (2099_01_01_0000-{SLOW}_slow.py, downgrade) was interrupted (SIGINT)",
        SLEEPING,
        f"still at {SLOW}",
    )
    with admin(head_url) as connection:  # the downgrade's DROP TABLE was rolled back
        row = connection.execute("SELECT to_regclass('deploy_failure_slow')::text").fetchone()
    assert row == ("deploy_failure_slow",)
    rerun = alembic(project, head_url, "downgrade", "-1")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert version(head_url) == PROBE


@pytest.mark.slow  # seconds of waiting by design: the slow tier (make test-slow)
def test_a_lost_lock_session_is_said_and_the_revision_goes_on(
    project: Project, head_url: URL
) -> None:
    """The lock's own session ends while a revision runs: the revision finishes (the
    lock protects the start of a deploy, and the revision's transaction protects
    itself); releasing a lock that is already gone is no error, and the deployer says
    that another deploy could have started meanwhile."""
    deployer = start(project, head_url, "upgrade", "head", sleep=3)
    sleeping_pid(head_url)
    with admin(head_url) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() "
            "AND starts_with(application_name, 'todo-migrations lock ')"
        )
    result = deployer.finish()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "The migration lock's session ended during the run" in result.stderr
    assert version(head_url) == SLOW


def test_ctrl_c_while_waiting_to_retry_is_one_line(project: Project, head_url: URL) -> None:
    """A revision whose lock was not had waits before its next attempt; Ctrl-C then."""
    assert alembic(project, head_url, "upgrade", PROBE).returncode == 0
    with admin(head_url) as blocker:
        blocker.execute("BEGIN")
        blocker.execute("CREATE TABLE deploy_failure_slow (id integer)")  # the same name
        deployer = start(
            project,
            head_url,
            "-x",
            "lock_timeout=100ms",
            "-x",
            "retry_backoff=30",
            "upgrade",
            "head",
        )

        # Its warning says it waits: the server's view (its session idle after ROLLBACK)
        # came before the deployer had left the attempt, and a Ctrl-C then was one
        # during the attempt.
        wait_until("the deployer waiting to retry", lambda: deployer.said("); retry 1/"))
        deployer.signal(signal.SIGINT)
        result = deployer.finish()
        blocker.execute("ROLLBACK")

    one_failed_line(
        result,
        f"revision {SLOW} (2099_01_01_0000-{SLOW}_slow.py) was interrupted (SIGINT) while "
        "waiting to retry it [statement: CREATE TABLE deploy_failure_slow (id integer)]",
        f"still at {PROBE}",
    )


def test_ctrl_c_while_waiting_for_the_lock_is_one_line(project: Project, head_url: URL) -> None:
    with admin(head_url) as holder:
        holder.execute("BEGIN")
        holder.execute(f"LOCK TABLE {deploy.LOCK_TABLE} IN {deploy.LOCK_MODE} MODE")
        deployer = start(project, head_url, "upgrade", "head")

        def waiting() -> bool:
            return trying_for_the_lock(holder)

        wait_until("the deployer waiting for the lock", waiting)
        deployer.signal(signal.SIGINT)
        result = deployer.finish()
    one_failed_line(
        result, "interrupted (SIGINT) while waiting for the migration lock", "nothing was changed"
    )
    assert version(head_url) == HEAD


def test_a_waiting_deployer_says_what_the_holder_is_doing(project: Project, head_url: URL) -> None:
    """Who holds the lock, from where, since when, and what its deploy runs; never the
    lock watch's own polling, which is all the lock session itself ever runs."""
    holder = start(project, head_url, "upgrade", "head", sleep=60)
    sleeping_pid(head_url)
    waiting = alembic(project, head_url, "-x", "deploy_lock_wait=1", "upgrade", "head")
    holder.signal(signal.SIGTERM)
    holder.finish()

    line = one_failed_line(waiting, "another deploy held the migration lock", "nothing was changed")
    assert "(todo-migrations lock " in line
    assert " from " in line
    assert "connected " in line
    assert "idle for " in line or "active for " in line
    assert "its migration session pid " in line
    assert SLEEPING in line
    assert "pg_blocking_pids" not in waiting.stdout + waiting.stderr
    assert "pg_terminate_backend" in line


@pytest.fixture(scope="module")
def vanishing() -> Iterator[vanishing_host.VanishingHost | None]:
    """A host that can vanish, when this machine can make one (root, iproute2)."""
    if vanishing_host.unavailable() is not None:
        yield None
        return
    with vanishing_host.vanishing_host() as host:
        yield host


@pytest.fixture(scope="module")
def server(vanishing: vanishing_host.VanishingHost | None) -> Iterator[OwnServer]:
    """A server to restart and stop, reachable from the vanishing host when there is one;
    a database at head on it to copy."""
    listen, trust = ["127.0.0.1"], []
    if vanishing is not None:
        listen.append(vanishing.server_address)
        trust.append(f"{vanishing.address}/32")
    with own_server(listen=listen, trust=trust) as own:
        upgrade(database.create_database(own.url(), "head"))
        yield own


@pytest.fixture
def own_url(server: OwnServer) -> Iterator[URL]:
    """A database at head on the server of this module's own."""
    name = f"todo_test_{time.monotonic_ns()}"
    url = database.create_database(server.url(), name, template="head")
    yield url
    with suppress(psycopg.OperationalError):
        database.drop_database(server.url(), name)


def test_a_server_restart_during_a_revision_is_one_line(
    project: Project, server: OwnServer, own_url: URL
) -> None:
    deployer = start(project, own_url, "upgrade", "head", sleep=60)
    sleeping_pid(own_url)
    server.restart()
    result = deployer.finish()

    # Read back once the server is up again (within a few seconds).
    one_failed_line(result, *slow_revision_line("the connection was lost"))
    assert_nothing_half_applied(own_url)
    assert_rerun_continues(project, own_url)


@pytest.mark.slow  # seconds of waiting by design: the slow tier (make test-slow)
def test_a_server_that_stays_down_is_one_line_too(
    project: Project, server: OwnServer, own_url: URL
) -> None:
    deployer = start(project, own_url, "upgrade", "head", sleep=60)
    sleeping_pid(own_url)
    server.stop()
    try:
        result = deployer.finish()
    finally:
        server.start()

    one_failed_line(
        result,
        f"revision {SLOW}",
        SLEEPING,
        "where the database stands is unknown: the connection was lost; run `alembic current`",
    )
    current = alembic(project, own_url, "current")
    assert current.stdout.split() == [PROBE], current.stdout
    assert_rerun_continues(project, own_url)


@pytest.mark.slow  # seconds of waiting by design: the slow tier (make test-slow)
def test_a_vanished_deployers_lock_is_released_by_the_server(
    project: Project,
    vanishing: vanishing_host.VanishingHost | None,
    server: OwnServer,
    own_url: URL,
) -> None:
    """The deployer's machine drops off the network in the middle of a revision: no FIN,
    no RST, not even an answer to a keepalive probe. The server gives up on both its
    sessions once they are unheard for idle + interval x count seconds (1 + 1 x 2 here;
    20 + 10 x 3 by default, measured by ``python -m tests.support.lock_release``), which
    releases the deploy lock and rolls the revision back; the deployer waiting for the
    lock then runs the chain itself."""
    if vanishing is None:
        pytest.skip(f"no vanishing host here: {vanishing_host.unavailable()}")
    quick = ("-x", "keepalives_idle=1", "-x", "keepalives_interval=1", "-x", "keepalives_count=2")
    remote = child_url(own_url.set(host=vanishing.server_address))
    doomed = start(project, remote, *quick, "upgrade", "head", sleep=300, launch=vanishing.popen)
    waiting = None
    try:
        sleeping_pid(own_url)
        waiting = start(project, own_url, "-x", "deploy_lock_wait=60", "upgrade", "head")
        with admin(own_url) as connection:
            wait_until(
                "the second deployer waiting for the lock",
                lambda: trying_for_the_lock(connection),
            )
        vanished = time.monotonic()
        vanishing.vanish()
        doomed.signal(signal.SIGSTOP)  # and the deployer does nothing more, as if powered off
        result = waiting.finish(timeout=90)
        released_after = time.monotonic() - vanished
    finally:
        for deployer in (doomed, waiting):
            if deployer is not None and deployer.process.poll() is None:
                deployer.process.kill()
                deployer.process.communicate()

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"from {vanishing.address}:" in result.stderr  # the holder, named while waiting
    assert "(todo-migrations lock " in result.stderr
    assert "pg_blocking_pids" not in result.stderr
    assert f"Running upgrade {PROBE} -> {SLOW}" in result.stderr
    assert version(own_url) == SLOW
    assert released_after < 30, f"the lock outlived its vanished holder by {released_after:.0f} s"
