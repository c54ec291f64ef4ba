"""Writer stall: how long application writes wait while a revision is applied.

For each revision that alters a table that already exists (every revision after the
one creating ``todo``), a database at the revision before it is filled with
1,000,000 todos over 10,000 users; writer connections insert and update todos
continuously, first with no migration running (the baseline), then while the real
``alembic upgrade <revision>`` runs. Reported: the longest any single write waited,
in each case, and the difference. Target: no revision makes a write wait more than
100 ms longer than the baseline.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from sqlalchemy.engine import URL

from tests.benchmarks.common import (
    PROJECT_ROOT,
    BenchError,
    Benchmark,
    Options,
    Server,
    Stats,
    Table,
    at_most,
    duration,
    progress,
)
from tests.benchmarks.rls import fill_statements

USERS, TODOS, QUICK_USERS, QUICK_TODOS = 10_000, 1_000_000, 1_000, 100_000
RUNS = 3
WRITERS = 4
#: Writers run this long alone before the migration starts, and after it ends.
SETTLE_S = 0.5
BASELINE_S = 3.0
TARGET_EXTRA_MS = 100.0


@dataclass
class Writers:
    """Connections inserting and updating todos until stopped; each write timed."""

    server: Server
    url: URL
    users: int
    ids: list[str]
    latencies: list[float] = field(default_factory=list)
    #: The longest write: its seconds, when it started (``time.perf_counter()``), what.
    slowest: tuple[float, float, str] = (0.0, 0.0, "")
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _slowest_lock: threading.Lock = field(default_factory=threading.Lock)

    def _write(self, seed: int) -> None:
        chance = random.Random(seed)
        with self.server.connect(self.url) as connection:
            while not self._stop.is_set():
                user = f"user-{chance.randint(1, self.users)}"
                started = time.perf_counter()
                try:
                    if chance.random() < 0.5:
                        what = "INSERT"
                        # A title of its own: a UNIQUE constraint on titles (a revision
                        # under measure may add one) must not fail a write.
                        connection.execute(
                            "INSERT INTO todo (user_id, title) "
                            "VALUES (%s, 'written ' || gen_random_uuid())",
                            [user],
                        )
                    else:
                        what = "UPDATE"
                        connection.execute(
                            "UPDATE todo SET completed = NOT completed, updated_at = now() "
                            "WHERE id = %s",
                            [chance.choice(self.ids)],
                        )
                except Exception as exc:  # noqa: BLE001  (reported, not hidden)
                    self.errors.append(str(exc).splitlines()[0])
                    return
                latency = time.perf_counter() - started
                self.latencies.append(latency)
                with self._slowest_lock:
                    if latency > self.slowest[0]:
                        self.slowest = (latency, started, what)

    @contextmanager
    def running(self) -> Iterator[Writers]:
        threads = [threading.Thread(target=self._write, args=(n,)) for n in range(WRITERS)]
        for thread in threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in threads:
                thread.join()
        if self.errors:
            raise BenchError(f"a writer failed: {self.errors[0]}")
        if not self.latencies:
            raise BenchError("the writers wrote nothing")


def fill_point(server: Server, url: URL, chain: list[Script]) -> int:
    """Migrate `url` one revision at a time until ``todo`` exists; its position in `chain`."""
    for position, revision in enumerate(chain):
        server.alembic(["upgrade", revision.revision], url)
        with server.connect(url) as connection:
            row = connection.execute("SELECT to_regclass('todo') IS NOT NULL").fetchone()
        if row and row[0]:
            return position
    raise BenchError("no revision creates the todo table")


def fill_template(server: Server, url: URL, users: int, todos: int) -> list[str]:
    """Fill `url` with `todos` todos over `users` users (:func:`fill_statements`),
    ``VACUUM ANALYZE`` it; the ids of a sample of its todos, for the writers to update."""
    with server.connect(url) as connection:
        with connection.transaction():
            for statement in fill_statements(users, todos):
                connection.execute(statement)
        connection.execute('VACUUM ANALYZE "user", todo')
        return [
            str(row[0])
            for row in connection.execute("SELECT id FROM todo TABLESAMPLE SYSTEM (2) LIMIT 20000")
        ]


def longest_write(
    server: Server, url: URL, users: int, ids: list[str], during: Callable[[], object] | None
) -> tuple[float, float]:
    """The longest single write while `during` runs (an ``alembic upgrade``), or, with
    None, while nothing does (for :data:`BASELINE_S`), and how long the window lasted."""
    writers, window = writers_during(server, url, users, ids, during)
    return max(writers.latencies), window


def writers_during(
    server: Server, url: URL, users: int, ids: list[str], during: Callable[[], object] | None
) -> tuple[Writers, float]:
    """:func:`longest_write`, with every write the writers timed."""
    writers = Writers(server, url, users, ids)
    with writers.running():
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        if during is None:
            time.sleep(BASELINE_S)
        else:
            during()
        window = time.perf_counter() - started
        time.sleep(SETTLE_S)
    return writers, window


def run(server: Server, options: Options) -> list[Table]:
    users, todos = (QUICK_USERS, QUICK_TODOS) if options.quick else (USERS, TODOS)
    runs = options.runs(RUNS)
    script = ScriptDirectory.from_config(Config(str(PROJECT_ROOT / "alembic.ini")))
    chain = list(reversed(list(script.walk_revisions())))
    tables: list[Table] = []
    with server.throwaway("stall_template") as template:
        position = fill_point(server, template, chain)
        progress(f"writer stall: filling {todos:,} todos over {users:,} users...")
        ids = fill_template(server, template, users, todos)
        for revision in chain[position + 1 :]:
            baseline, during, windows = [], [], []
            for index in range(runs):
                progress(f"writer stall: {revision.revision}, run {index + 1}/{runs}")
                with server.throwaway("stall", template=str(template.database)) as url:
                    server.alembic(["upgrade", str(revision.down_revision)], url)
                    baseline.append(longest_write(server, url, users, ids, None)[0])
                    upgrade = partial(server.alembic, ["upgrade", revision.revision], url)
                    longest, window = longest_write(server, url, users, ids, upgrade)
                    during.append(longest)
                    windows.append(window)
            tables.append(
                _table(
                    revision,
                    runs,
                    todos,
                    baseline=Stats.of(baseline),
                    during=Stats.of(during),
                    windows=Stats.of(windows),
                )
            )
    return tables


def _table(
    revision: Script, runs: int, todos: int, *, baseline: Stats, during: Stats, windows: Stats
) -> Table:
    return stall_table(
        f"5. writer stall: {revision.revision} ({revision.doc}), {todos:,} todos, "
        f"{WRITERS} writers ({median_of(runs)})",
        baseline=baseline,
        during=during,
        windows=windows,
    )


def median_of(runs: int) -> str:
    """``median of 3 runs``, for a table's title."""
    return f"median of {runs} run{'s' if runs > 1 else ''}"


def stall_table(title: str, *, baseline: Stats, during: Stats, windows: Stats) -> Table:
    """The longest write with no migration and during the upgrade, the upgrade's wall
    time, and the check that the upgrade adds at most :data:`TARGET_EXTRA_MS`."""
    table = Table(title=title, header=("", "median", "min", "max"))
    for label, stats in (
        ("longest write, no migration", baseline),
        ("longest write, during alembic upgrade", during),
        ("alembic upgrade wall time", windows),
    ):
        table.rows.append(
            (label, duration(stats.median), duration(stats.low), duration(stats.high))
        )
    extra_ms = (during.median - baseline.median) * 1000
    table.checks.append(
        at_most("extra wait of the longest write", extra_ms, TARGET_EXTRA_MS, " ms")
    )
    return table


BENCHMARK = Benchmark(
    "stall", "the longest write while each revision on an existing table is applied", run
)
