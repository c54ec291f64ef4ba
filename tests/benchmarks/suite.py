"""The whole test suite's wall time, as ``make test`` runs it, server start included.

Each run stops the embedded server first (``python -m todo_database.deploy.database stop``,
untimed), so the timed ``make test args="-q -p no:cacheprovider"`` pays for starting it, as
on a fresh machine or in CI. The server is shared with anyone else testing in this
work tree: it is stopped only once, for a few seconds, no other client is connected
and no other pytest or alembic process runs here (waiting up to :data:`IDLE_WAIT_S`);
a run that had to leave it running is reported apart, as a warm-server run.

With ``BENCH_DATABASE_URL``, the suite runs on that server (as ``TEST_DATABASE_URL``),
which is never stopped.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from tests.benchmarks.common import (
    PROJECT_ROOT,
    PYTHON,
    STATS_HEADER,
    Benchmark,
    Options,
    Server,
    Stats,
    Table,
    at_most,
    duration,
    holds,
    progress,
    run_timed,
    stats_row,
)

RUNS = 3
TARGET_S = 60.0
#: How long to wait for other people's sessions to end before stopping the server.
IDLE_WAIT_S = 90.0
#: No other client for this long counts as idle.
IDLE_QUIET_S = 3.0

_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error).*?)\s*=*$")


def _other_runs() -> int:
    """pytest or alembic processes working in this work tree, other than this one
    (read from ``/proc``; none where there is no ``/proc``)."""
    found = 0
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        ours = cwd == PROJECT_ROOT or PROJECT_ROOT in cwd.parents
        if ours and any(b"pytest" in arg or b"alembic" in arg for arg in argv[:3]):
            found += 1
    return found


def _stop_when_idle(server: Server) -> bool:
    """Stop the embedded server once nobody else uses it; report whether it stopped."""
    deadline = time.monotonic() + IDLE_WAIT_S
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        if server.other_sessions() == 0 and _other_runs() == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= IDLE_QUIET_S:
                stopped = run_timed(
                    [PYTHON, "-m", "todo_database.deploy.database", "stop"],
                    env=server.env(),
                    what="stopping the embedded server",
                )
                return "stopped" in stopped.stdout and "not running" not in stopped.stdout
        else:
            quiet_since = None
        time.sleep(0.5)
    progress("  the embedded server is in use by others (sessions or test runs): left running")
    return False


def _summary(output: str) -> str:
    for line in reversed(output.strip().splitlines()):
        found = _SUMMARY.match(line.strip())
        if found:
            return found.group(1)
    return "no pytest summary line"


def _failed_tests(output: str) -> list[str]:
    """pytest's ``FAILED``/``ERROR`` lines (``-ra`` is in the project's addopts)."""
    return [line for line in output.splitlines() if line.startswith(("FAILED ", "ERROR "))]


def run(server: Server, options: Options) -> list[Table]:
    runs = options.runs(RUNS)
    environment = server.env()
    if not server.embedded:
        environment["TEST_DATABASE_URL"] = server.admin.render_as_string(hide_password=False)
    # `make test` itself: its workers and its environment are the Makefile's.
    command = ["make", "--no-print-directory", "test", "args=-q -p no:cacheprovider"]

    cold: list[float] = []
    warm: list[float] = []
    summaries: list[str] = []
    for index in range(runs):
        started_cold = False
        if server.embedded:
            progress(f"suite: run {index + 1}/{runs}: stopping the embedded server first...")
            started_cold = _stop_when_idle(server)
        progress(f"suite: run {index + 1}/{runs}: {' '.join(command)}")
        completed = run_timed(command, env=environment, what="pytest", check=False)
        (cold if started_cold else warm).append(completed.seconds)
        summaries.append(_summary(completed.stdout))
        progress(f"  {duration(completed.seconds)}: {summaries[-1]}")
        for line in _failed_tests(completed.stdout)[:10]:
            progress(f"    {line}")
        server.ensure_running()

    failures = [s for s in summaries if "failed" in s or "error" in s or "passed" not in s]
    table = Table(
        title=(
            f"2. suite: the whole test suite's wall time, server start included "
            f"(median of {runs} run{'s' if runs > 1 else ''})"
        ),
        header=STATS_HEADER,
        notes=[
            f"command: {' '.join(command)}",
            f"{os.cpu_count()} CPUs; pytest said: " + "; ".join(summaries),
        ],
    )
    if cold:
        table.rows.append(stats_row("pytest, embedded server stopped first", Stats.of(cold)))
    if warm:
        label = "pytest, server already running" + (
            " (busy, not stopped)" if server.embedded else ""
        )
        table.rows.append(stats_row(label, Stats.of(warm)))
    headline = Stats.of(cold or warm)
    what = "server start included" if cold else "warm server, start NOT included"
    table.checks.append(at_most(f"wall time ({what})", headline.median, TARGET_S, unit="s"))
    if server.embedded:
        table.checks.append(
            holds(
                "every run included the server start",
                len(cold) == runs,
                f"{len(cold)}/{runs}",
                f"{runs}/{runs}",
            )
        )
    table.checks.append(
        holds("every run passed", not failures, f"{runs - len(failures)}/{runs}", f"{runs}/{runs}")
    )
    return [table]


BENCHMARK = Benchmark("suite", "the whole test suite's wall time, server start included", run)
