"""Empty database to head: the real Alembic CLI against psql running its offline SQL.

``python -m alembic upgrade head`` (a fresh process with ``DATABASE_URL`` on a fresh
database, so interpreter start, imports, connecting and every revision are in it)
against ``psql -v ON_ERROR_STOP=1 -q -f`` of ``alembic upgrade head --sql`` (rendered
once, untimed) on another fresh database. Runs alternate which goes first; database
creation is not timed. Both databases are checked to end at the same revision with
the same policies, so psql is not timed doing less.

For the deploy path's start-up, it also times ``alembic upgrade head`` once more on the
migrated database (nothing to run: start-up, imports, connecting, the lock) against a
bare ``python -c "import alembic.config, sqlalchemy"``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sqlalchemy.engine import URL

from tests.benchmarks.common import (
    PROJECT_ROOT,
    PYTHON,
    STATS_HEADER,
    BenchError,
    Benchmark,
    Options,
    Server,
    Stats,
    Table,
    at_most,
    duration,
    progress,
    ratio,
    run_timed,
    stats_row,
)

RUNS = 5
TARGET_RATIO = 2.0

#: What ``python -m alembic upgrade head`` imports before it touches the database.
_IMPORTS = (
    "import alembic.config, alembic.command, models, todo_database.operations,"
    " todo_database.deploy.connect"
)

#: The floor under any ``alembic`` command: Python and the two libraries it stands on.
_BARE_IMPORTS = "import alembic.config, sqlalchemy"


#: ``alembic.command.upgrade`` timed inside a process that has already imported
#: everything: the migration's own work, as a long-lived deploy tool would see it.
_WARM = f"""{_IMPORTS}, time
config = alembic.config.Config({str(PROJECT_ROOT / "alembic.ini")!r})
started = time.perf_counter()
alembic.command.upgrade(config, "head")
print(time.perf_counter() - started)
"""


def _state(server: Server, url: URL) -> tuple[str, int, int]:
    """Revision, policy count and table count of the database at `url`."""
    with server.connect(url) as connection:
        row = connection.execute(
            "SELECT (SELECT string_agg(version_num, ',') FROM alembic_version),"
            " (SELECT count(*) FROM pg_policies),"
            " (SELECT count(*) FROM pg_tables WHERE schemaname = 'public')"
        ).fetchone()
    if row is None:
        raise BenchError("could not read the migrated database's state")
    return str(row[0]), int(row[1]), int(row[2])


def run(server: Server, options: Options) -> list[Table]:
    runs = options.runs(RUNS)
    psql = server.psql()
    cli: list[float] = []
    offline: list[float] = []
    imports: list[float] = []
    warm: list[float] = []
    at_head: list[float] = []
    bare: list[float] = []
    state = ("?", 0, 0)
    with tempfile.TemporaryDirectory(prefix="todo_bench_upgrade_") as scratch:
        script = Path(scratch) / "upgrade_head.sql"
        progress("rendering the offline SQL once (alembic upgrade head --sql)...")
        script.write_text(server.alembic(["upgrade", "head", "--sql"], None).stdout)

        for index in range(runs):
            progress(f"upgrade: run {index + 1}/{runs} (alembic CLI and psql, fresh databases)")
            with (
                server.throwaway("upgrade_cli") as cli_url,
                server.throwaway("upgrade_psql") as psql_url,
            ):

                def by_cli(url: URL = cli_url) -> None:
                    cli.append(server.alembic(["upgrade", "head"], url).seconds)

                def by_psql(url: URL = psql_url) -> None:
                    command = [psql, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-f", str(script)]
                    completed = run_timed(
                        [*command, server.libpq_uri(url)], env=server.env(url), what="psql -f"
                    )
                    offline.append(completed.seconds)

                steps = [by_cli, by_psql] if index % 2 == 0 else [by_psql, by_cli]
                for step in steps:
                    step()
                state, other = _state(server, cli_url), _state(server, psql_url)
                if state != other:
                    raise BenchError(f"the databases differ: alembic {state}, psql {other}")
                at_head.append(server.alembic(["upgrade", "head"], cli_url).seconds)
            bare.append(
                run_timed([PYTHON, "-c", _BARE_IMPORTS], env=server.env(), what="imports").seconds
            )
            imports.append(
                run_timed([PYTHON, "-c", _IMPORTS], env=server.env(), what="imports").seconds
            )
            with server.throwaway("upgrade_warm") as warm_url:
                child = run_timed(
                    [PYTHON, "-c", _WARM], env=server.env(warm_url), what="warm upgrade"
                )
                warm.append(float(child.stdout.strip().splitlines()[-1]))

    cli_stats, psql_stats, import_stats = Stats.of(cli), Stats.of(offline), Stats.of(imports)
    warm_stats, at_head_stats, bare_stats = Stats.of(warm), Stats.of(at_head), Stats.of(bare)
    revision, policies, tables = state
    table = Table(
        title=(
            f"1. upgrade: empty database to head, alembic CLI against psql of its offline SQL "
            f"(median of {runs} run{'s' if runs > 1 else ''}, interleaved)"
        ),
        header=STATS_HEADER,
        notes=[
            f"both end at revision {revision}: {tables} tables, {policies} policies",
            f"psql: {psql}",
        ],
    )
    table.rows += [
        stats_row("python -m alembic upgrade head", cli_stats),
        stats_row("psql -f (alembic upgrade head --sql, rendered once)", psql_stats),
        stats_row("  info: python start + the CLI's imports alone", import_stats),
        stats_row("  info: alembic.command.upgrade, imports done", warm_stats),
        stats_row("  info: python -m alembic upgrade head, at head", at_head_stats),
        stats_row(f"  info: python -c '{_BARE_IMPORTS}'", bare_stats),
    ]
    table.checks.append(
        at_most("alembic CLI / psql", ratio(cli_stats.median, psql_stats.median), TARGET_RATIO)
    )
    work = cli_stats.median - import_stats.median
    table.blocks.append(
        (
            "info",
            f"the CLI less its start-up (python + imports): {duration(work)}, "
            f"{ratio(work, psql_stats.median):.2f}x psql; the upgrade in a warm interpreter: "
            f"{ratio(warm_stats.median, psql_stats.median):.2f}x psql",
        )
    )
    table.blocks.append(
        (
            "start-up",
            f"a no-op upgrade at head takes {duration(at_head_stats.median)} against "
            f"{duration(bare_stats.median)} for Python importing Alembic and SQLAlchemy alone",
        )
    )
    return [table]


BENCHMARK = Benchmark("upgrade", "alembic upgrade head against psql of the offline SQL", run)
