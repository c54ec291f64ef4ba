"""What the drift check costs: ``alembic check`` with and without row-security comparison.

Three ways of checking one database at head, each the real CLI in a fresh process
(``python -m alembic ... check`` with ``DATABASE_URL``), interleaved in rotating order:

* this project's environment, with the row-security comparator (``make check``);
* the same with ``-x row_security=off``: Alembic's own comparison alone;
* ``tests/benchmarks/alembic_utils_env``: the same models, filters and options,
  without ``todo_database.operations``, and alembic_utils' ``PGPolicy`` entities for
  every policy the models declare, registered with ``register_entities``.

Afterwards one policy is changed in the database, untimed, to show that both row
security checks do notice drift (so neither is timed doing nothing).

Then the same comparison at scale: a copy of the project with :data:`OWNED_TABLES`
more tables, each owned by its user (``owned_by``), with a composite index and a
CHECK, generated into a revision by ``alembic revision --autogenerate`` and migrated;
``alembic check`` is timed with and without ``-x row_security=off`` there.
"""

from __future__ import annotations

import tempfile
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

OWNED_TABLES = 100
_OWNED_TABLE = """

class Owned{n}(SQLModel, table=True):
    __tablename__ = "owned_{n}"
    __table_args__ = (
        Index("owned_{n}_user_id_created_at_idx", "user_id", "created_at"),
        CheckConstraint("char_length(title) <= 200", name="title_length"),
        {{"info": {{ROW_SECURITY: owned_by("user_id")}}}},
    )

    id: uuid.UUID | None = Field(default=None, sa_column=Column(
        "id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")))
    user_id: str = Field(sa_column=Column(
        "user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False))
    title: str = Field(sa_column=Column("title", Text, nullable=False))
    created_at: datetime | None = Field(default=None, sa_column=Column(
        "created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")))
"""
_OWNED_MODULE = '''"""{count} owned tables, for the drift benchmark."""

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Column, DateTime, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, owned_by
'''


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


def at_scale(server: Server, options: Options) -> Table:
    """``alembic check`` with and without row security at :data:`OWNED_TABLES` more
    owned tables (see the module's docstring)."""
    from tests.support.evolution import Project

    runs = options.runs(RUNS)
    labels = {"alembic check": ["check"], "alembic -x row_security=off check": VARIANTS[OFF]}
    times: dict[str, list[float]] = {label: [] for label in labels}
    with (
        tempfile.TemporaryDirectory(prefix="todo-bench-drift-") as directory,
        server.throwaway("drift_scale") as url,
    ):
        project = Project.copy(Path(directory) / "project", "")
        module = _OWNED_MODULE.format(count=OWNED_TABLES)
        module += "".join(_OWNED_TABLE.format(n=n) for n in range(OWNED_TABLES))
        project.write("models/bench_owned.py", module)
        project.append("models/__init__.py", "import models.bench_owned  # noqa: E402, F401\n")
        progress(f"drift: {OWNED_TABLES} owned tables: migrating, generating their revision...")
        server.alembic(["upgrade", "head"], url, cwd=project.root)
        generate = ["revision", "--autogenerate", "-m", f"{OWNED_TABLES} owned tables"]
        server.alembic(generate, url, cwd=project.root)
        server.alembic(["upgrade", "head"], url, cwd=project.root)
        order = list(labels)
        for index in range(runs):
            progress(f"drift: {OWNED_TABLES} owned tables: run {index + 1}/{runs}")
            for label in order[index % 2 :] + order[: index % 2]:
                completed = server.alembic(labels[label], url, check=False, cwd=project.root)
                if completed.returncode != 0:
                    raise BenchError(f"{label} found drift at head: {completed.tail()}")
                times[label].append(completed.seconds)
    stats = {label: Stats.of(values) for label, values in times.items()}
    table = Table(
        title=(
            f"4b. drift at {OWNED_TABLES} more owned tables: alembic check "
            f"(median of {runs} run{'s' if runs > 1 else ''} each, interleaved)"
        ),
        header=STATS_HEADER,
        notes=[
            f"{OWNED_TABLES} generated tables, each owned_by(user_id) (4 policies, a grant), "
            "a composite index and a CHECK; generated by alembic revision --autogenerate",
        ],
    )
    table.rows += [stats_row(label, stats[label]) for label in labels]
    ours, off = (stats[label].median for label in labels)
    table.checks.append(
        at_most("comparator / row_security=off", ratio(ours, off), TARGET_OFF_RATIO)
    )
    return table


def run_both(server: Server, options: Options) -> list[Table]:
    return [*run(server, options), at_scale(server, options)]


BENCHMARK = Benchmark(
    "drift", "alembic check: row-security comparator against alternatives", run_both
)
