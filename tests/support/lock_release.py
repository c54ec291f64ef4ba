"""``python -m tests.support.lock_release [--runs N] [--postgres-bin DIR] [-x NAME=VALUE]...``:
how long the deploy lock outlives a deployer that vanished from the network.

A deployer (the real ``alembic upgrade head``) runs on a host of its own
(:mod:`tests.support.vanishing_host`) against a server of this script's own, and sleeps in a
revision while it holds the deploy lock. Then its host drops off the network (no FIN,
no RST, no answer to a keepalive probe) and the process is frozen. Measured, from that
moment: until the server ends the deployer's lock session (the lock is free) and its
migration session (its transaction rolled back). Each ``-x`` is handed to the deployer
(``-x keepalives_idle=5``); without any, the defaults research.md states are measured.

It takes a minute or more a run with the defaults, which is why it is not a test;
``tests/deploy/test_deploy_failures.py`` proves the same with settings of a few seconds.
Needs root (network namespaces). Progress goes to stderr, figures to stdout.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from alembic.config import Config
from sqlalchemy.engine import URL

from tests.conftest import child_url, upgrade
from tests.support import vanishing_host
from tests.support.deployers import admin, sleeping_pid, slow_project, start, trying_for_the_lock
from tests.support.evolution import Project
from tests.support.own_server import own_server
from todo_database.deploy import database
from todo_database.deploy import runner as deploy

GIVE_UP_S = 600.0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.lock_release", description=__doc__
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--postgres-bin", type=Path, help="initdb and pg_ctl of the server to measure"
    )
    parser.add_argument("-x", action="append", default=[], metavar="NAME=VALUE")
    return parser.parse_args(argv)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _deployer_sessions(connection: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    """The pids of the deployer's lock session and migration session."""
    sessions = {}
    for pid, name in connection.execute(
        "SELECT pid, application_name FROM pg_stat_activity "
        "WHERE datname = current_database() AND starts_with(application_name, 'todo-migrations ')"
    ):
        sessions["lock" if str(name).startswith("todo-migrations lock ") else "migration"] = int(
            str(pid)
        )
    assert set(sessions) == {"lock", "migration"}, sessions
    return sessions


def _gone_after(
    connection: psycopg.Connection[tuple[object, ...]], pids: dict[str, int], since: float
) -> dict[str, float]:
    """Seconds from `since` until each of `pids` has left pg_stat_activity."""
    gone: dict[str, float] = {}
    while len(gone) < len(pids):
        alive = {
            int(str(row[0]))
            for row in connection.execute(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids.values())]
            )
        }
        elapsed = time.monotonic() - since
        for name, pid in pids.items():
            if name not in gone and pid not in alive:
                gone[name] = elapsed
        if elapsed > GIVE_UP_S:
            raise SystemExit(f"still there after {GIVE_UP_S:.0f} s: {set(pids) - set(gone)}")
        time.sleep(0.1)
    return gone


def _measure(
    project: Project, host: vanishing_host.VanishingHost, url: URL, x_arguments: list[str]
) -> dict[str, float]:
    remote = child_url(url.set(host=host.server_address))
    doomed = start(project, remote, *x_arguments, "upgrade", "head", sleep=3600, launch=host.popen)
    try:
        sleeping_pid(url)
        with admin(url) as connection:
            pids = _deployer_sessions(connection)
            vanished = time.monotonic()
            host.vanish()
            doomed.signal(signal.SIGSTOP)  # and it does nothing more, as if powered off
            gone = _gone_after(connection, pids, vanished)
            assert not trying_for_the_lock(connection)
        return gone
    finally:
        doomed.process.kill()
        doomed.process.wait()
        host.reappear()


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    if reason := vanishing_host.unavailable():
        print(f"cannot measure here: {reason}", file=sys.stderr)
        return 1
    x_arguments = [part for setting in arguments.x for part in ("-x", setting)]
    settings = deploy.Settings.from_config(
        Config(), dict(setting.split("=", 1) for setting in arguments.x)
    )
    results = []
    with (
        tempfile.TemporaryDirectory() as workdir,
        vanishing_host.vanishing_host() as host,
        own_server(
            listen=["127.0.0.1", host.server_address],
            trust=[f"{host.address}/32"],
            bin_dir=arguments.postgres_bin,
        ) as server,
    ):
        project = slow_project(Path(workdir) / "project")
        upgrade(database.create_database(server.url(), "head"))
        with admin(server.url()) as connection:
            (server_version,) = connection.execute("SHOW server_version").fetchone() or ("?",)
        for run in range(1, arguments.runs + 1):
            name = f"todo_test_release_{run}"
            url = database.create_database(server.url(), name, template="head")
            _progress(f"run {run}: the deployer sleeps in its revision; its host vanishes")
            results.append(_measure(project, host, url, x_arguments))
            _progress(
                f"run {run}: its lock session ended after {results[-1]['lock']:.1f} s, its "
                f"migration session after {results[-1]['migration']:.1f} s"
            )
            database.drop_database(server.url(), name)

    print(
        f"PostgreSQL {server_version}; keepalives idle {settings.keepalives_idle_s} s, "
        f"interval {settings.keepalives_interval_s} s, count {settings.keepalives_count}, "
        f"tcp_user_timeout {settings.silence_allowed_s} s; {len(results)} runs"
    )
    for session in ("lock", "migration"):
        times = [result[session] for result in results]
        print(
            f"  {session} session ended after: median {statistics.median(times):.1f} s, "
            f"max {max(times):.1f} s ({', '.join(f'{t:.1f}' for t in times)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
