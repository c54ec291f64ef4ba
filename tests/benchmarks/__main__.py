"""``python -m tests.benchmarks [--only NAME] [--quick]``: run the benchmarks in order.

Figures (one table per benchmark, medians, each target with PASS or MISS) go to
stdout, progress to stderr. The embedded server is used unless ``BENCH_DATABASE_URL``
names an admin URL of another server. The exit status is 0 when every benchmark
measured (whatever its verdicts), 1 when one could not, 2 on a bad argument or URL.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

import psycopg

from tests.benchmarks import drift, online_forms, rls, sharing, suite, upgrade, writer_stall
from tests.benchmarks.common import (
    BenchError,
    Benchmark,
    Check,
    Options,
    Server,
    load_average,
    progress,
)
from todo_database.deploy.database import DatabaseError

#: In the order they run; a new benchmark module adds its ``BENCHMARK`` here.
BENCHMARKS: tuple[Benchmark, ...] = (
    upgrade.BENCHMARK,
    suite.BENCHMARK,
    rls.BENCHMARK,
    sharing.BENCHMARK,
    drift.BENCHMARK,
    writer_stall.BENCHMARK,
    online_forms.BENCHMARK,
)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description="The schema repository's benchmarks, medians side by side.",
        epilog="benchmarks: " + "; ".join(f"{b.name}: {b.title}" for b in BENCHMARKS),
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=[benchmark.name for benchmark in BENCHMARKS],
        metavar="NAME",
        help="run only this benchmark (repeatable): "
        + ", ".join(benchmark.name for benchmark in BENCHMARKS),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one run of each, and smaller data (100,000 todos): a smoke run, not figures",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    options = Options(quick=arguments.quick)
    selected = [b for b in BENCHMARKS if not arguments.only or b.name in arguments.only]
    try:
        server = Server.from_environment()
        version = server.version()
    except (DatabaseError, psycopg.Error) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 2

    print(
        f"Benchmarks on PostgreSQL {version}, {server.describe()}; "
        f"{os.cpu_count()} CPUs ({platform.machine()}), load average {load_average()}"
        + ("; --quick: one run each, smaller data" if options.quick else "")
        + "\n",
        flush=True,
    )
    checks: list[tuple[str, Check]] = []
    failed: list[str] = []
    for benchmark in selected:
        progress(f"== {benchmark.name}: {benchmark.title}")
        try:
            server.ensure_running()
            tables = benchmark.run(server, options)
        except (BenchError, DatabaseError, psycopg.Error) as exc:
            failed.append(benchmark.name)
            print(f"{benchmark.name}: FAILED: {exc}\n", flush=True)
            continue
        for table in tables:
            print(table.render(), flush=True)
            checks += [(benchmark.name, check) for check in table.checks]

    print(f"Summary (load average now {load_average()})")
    width = max((len(f"{name}: {check.label}") for name, check in checks), default=0)
    for name, check in checks:
        label = f"{name}: {check.label}".ljust(width)
        print(f"  {label}   {check.value:>10}   {check.target:>10}   {check.verdict}")
    for name in failed:
        print(f"  {name}: FAILED (no figures)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
