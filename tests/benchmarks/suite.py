"""The whole test suite's wall time, as ``make test`` runs it, server start included.

Each ``make test args="-q -p no:cacheprovider"`` starts an embedded server of its own
(``tests/support/run_server.py``) and pays for making and starting it, as on a fresh
machine or in CI. With ``BENCH_DATABASE_URL``, the suite runs on that server (as
``TEST_DATABASE_URL``), already running: its start is not included.
"""

from __future__ import annotations

import os
import re

from tests.benchmarks.common import (
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

_SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed|error).*?)\s*=*$")


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

    seconds: list[float] = []
    summaries: list[str] = []
    for index in range(runs):
        progress(f"suite: run {index + 1}/{runs}: {' '.join(command)}")
        completed = run_timed(command, env=environment, what="pytest", check=False)
        seconds.append(completed.seconds)
        summaries.append(_summary(completed.stdout))
        progress(f"  {duration(completed.seconds)}: {summaries[-1]}")
        for line in _failed_tests(completed.stdout)[:10]:
            progress(f"    {line}")

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
    label = "make test, its own server started" if server.embedded else "make test, given server"
    headline = Stats.of(seconds)
    table.rows.append(stats_row(label, headline))
    what = "server start included" if server.embedded else "given server, start NOT included"
    table.checks.append(at_most(f"wall time ({what})", headline.median, TARGET_S, unit="s"))
    table.checks.append(
        holds("every run passed", not failures, f"{runs - len(failures)}/{runs}", f"{runs}/{runs}")
    )
    return [table]


BENCHMARK = Benchmark("suite", "the whole test suite's wall time, server start included", run)
