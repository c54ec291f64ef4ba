"""What the drift check costs: ``alembic check`` with and without row-security comparison.

Three ways of checking one database at head, each the real CLI in a fresh process
(``python -m alembic ... check`` with ``DATABASE_URL``), interleaved in rotating order:

* this project's environment, with the row-security comparator (``make check``);
* the same with ``-x row_security=off``: Alembic's own comparison alone;
* ``tests/benchmarks/alembic_utils_env``: the same models, filters and options,
  without ``migrations.rowsecurity``, and alembic_utils' ``PGPolicy`` entities for
  every policy the models declare, registered with ``register_entities``.

Afterwards one policy is changed in the database, untimed, to show that both row
security checks do notice drift (so neither is timed doing nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tests.benchmarks.common import (
    STATS_HEADER,
    BenchError,
    Benchmark,
    Options,
    Server,
    Stats,
    Table,
    at_most,
    holds,
    progress,
    ratio,
    stats_row,
)

RUNS = 5
TARGET_OFF_RATIO = 1.5
#: Ours must be faster than alembic_utils.
TARGET_ALEMBIC_UTILS_RATIO = 1.0

ALEMBIC_UTILS_INI = Path(__file__).resolve().parent / "alembic_utils_env" / "alembic.ini"

VARIANTS: dict[str, Sequence[str]] = {
    "alembic check (row-security comparator)": ["check"],
    "alembic -x row_security=off check": ["-x", "row_security=off", "check"],
    "alembic check, alembic_utils PGPolicy entities": ["-c", str(ALEMBIC_UTILS_INI), "check"],
}
OURS, OFF, ALEMBIC_UTILS = VARIANTS

#: An untimed change the row-security checks must both report.
_DRIFT = "ALTER POLICY todo_app_select_own ON todo USING (true)"


def run(server: Server, options: Options) -> list[Table]:
    runs = options.runs(RUNS)
    times: dict[str, list[float]] = {label: [] for label in VARIANTS}
    labels = list(VARIANTS)
    with server.throwaway("drift") as url:
        progress("drift: migrating a throwaway database to head...")
        server.alembic(["upgrade", "head"], url)
        for index in range(runs):
            progress(f"drift: run {index + 1}/{runs} (3 checks)")
            order = labels[index % len(labels) :] + labels[: index % len(labels)]
            for label in order:
                completed = server.alembic(VARIANTS[label], url, check=False)
                if completed.returncode != 0:
                    raise BenchError(f"{label} found drift at head: {completed.tail()}")
                times[label].append(completed.seconds)

        progress("drift: changing one policy to see both row-security checks notice it...")
        with server.connect(url) as connection:
            connection.execute(_DRIFT)
        noticed = {
            label: server.alembic(VARIANTS[label], url, check=False).returncode != 0
            for label in (OURS, ALEMBIC_UTILS)
        }

    stats = {label: Stats.of(values) for label, values in times.items()}
    table = Table(
        title=(
            f"4. drift: alembic check on a database at head "
            f"(median of {runs} run{'s' if runs > 1 else ''} each, interleaved)"
        ),
        header=STATS_HEADER,
        notes=[
            "each a fresh `python -m alembic` process: interpreter start and imports included",
            "alembic_utils compares policies only (no ENABLE/FORCE, grants or roles)",
        ],
    )
    table.rows += [stats_row(label, stats[label]) for label in VARIANTS]
    table.checks += [
        at_most(
            "comparator / row_security=off",
            ratio(stats[OURS].median, stats[OFF].median),
            TARGET_OFF_RATIO,
        ),
        at_most(
            "comparator / alembic_utils (below 1: ours faster)",
            ratio(stats[OURS].median, stats[ALEMBIC_UTILS].median),
            TARGET_ALEMBIC_UTILS_RATIO,
        ),
        holds(f"comparator notices `{_DRIFT}`", noticed[OURS]),
        holds("alembic_utils notices it too", noticed[ALEMBIC_UTILS]),
    ]
    return [table]


BENCHMARK = Benchmark("drift", "alembic check: row-security comparator against alternatives", run)
