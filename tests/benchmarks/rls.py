"""What row-level security costs the todo list query, on a big table.

A throwaway database at head gets 1,000,000 todos over 10,000 users (100 each; built
anew on every run of ``make bench``, with ``INSERT ... SELECT generate_series`` and
``VACUUM ANALYZE``; ``--quick``: 100,000 over 1,000). The list query, newest first,
50 rows, runs three ways:

* as the todo API does: ``todo_app`` under RLS, the user set per transaction
  (``SET LOCAL ROLE todo_app; SELECT set_config('app.user_id', 'user-N', true)``),
  no ``WHERE``: the policy supplies it;
* with an explicit ``WHERE user_id = 'user-N'``, by the superuser, whom RLS does not
  apply to: the target compares these two;
* for information, with the policy's own current-user subquery as an explicit
  ``WHERE``, by the superuser: what RLS costs apart from that lookup.

The figure compared is the executor's time per query inside the server: each sample
is a PL/pgSQL loop running the query 500 times with its plan cached (as a prepared
statement's would be), for a random user, the three ways interleaved in random
order. Measured inside the server, it is the work RLS changes, free of the client,
the socket and the scheduling noise of a shared machine: those are the same for
every side, so in a client wall time they would only dilute a difference of a few
microseconds (and add noise larger than it). ``EXPLAIN ANALYZE`` is not the measure:
even with ``TIMING OFF`` it instruments every plan node on every run, and the plan
under RLS has one node more (the InitPlan), so it inflates exactly the difference
being measured. Its ``Execution Time``, the planning time and the client round trip
of the bare ``SELECT`` are printed for information, with the ratios they give.

Both plans (``EXPLAIN``, text) are printed and checked: one index scan on
``todo_user_id_created_at_id_idx``, no sort, no per-row filter, and under RLS the
current user as an InitPlan in the index condition.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from models.security import CURRENT_USER_ID
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
    timed,
)

USERS, TODOS, ITERATIONS = 10_000, 1_000_000, 200
QUICK_USERS, QUICK_TODOS, QUICK_ITERATIONS = 1_000, 100_000, 50
WARMUP_ITERATIONS = 20
#: Executor loops: samples per variant, and runs of the query in each.
LOOP_SAMPLES, QUICK_LOOP_SAMPLES, LOOP_RUNS = 40, 5, 300
TARGET_RATIO = 1.10
INDEX = "todo_user_id_created_at_id_idx"
SEED = 20261125

Connection = psycopg.Connection[tuple[Any, ...]]

_COLUMNS = "SELECT id, title, completed, due_at, created_at FROM todo"
_ORDER = "ORDER BY created_at DESC, id DESC LIMIT 50"
#: The todo API's list query: RLS supplies the user.
LIST_QUERY = sql.SQL(f"{_COLUMNS} {_ORDER}")
#: The explicit query on the policy's own current-user subquery, an InitPlan too.
INITPLAN_QUERY = sql.SQL(f"{_COLUMNS} WHERE user_id = {CURRENT_USER_ID} {_ORDER}")
_EXPLAIN_ANALYZE = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ")


def explicit_query(user: str) -> sql.Composed:
    """The same query with the user in an explicit ``WHERE``, for a role bypassing RLS."""
    return sql.SQL(f"{_COLUMNS} WHERE user_id = {{}} {_ORDER}").format(sql.Literal(user))


def fill_statements(users: int, todos: int) -> list[str]:
    """The statements that fill the tables, as tests/test_query_plans.py does."""
    return [
        f"""INSERT INTO "user" (id, name, email, "emailVerified")
            SELECT 'user-' || n, 'User ' || n, 'user' || n || '@example.com', true
            FROM generate_series(1, {users}) AS n""",
        f"""INSERT INTO todo (user_id, title, completed, due_at, created_at)
            SELECT 'user-' || (n % {users} + 1), 'todo ' || n, n % 3 = 0,
                   CASE WHEN n % 4 = 0 THEN NULL
                        ELSE now() + make_interval(days => n % 90) END,
                   now() - make_interval(secs => n)
            FROM generate_series(1, {todos}) AS n""",
    ]


def build(server: Server, url: URL, users: int, todos: int) -> str:
    """Migrate `url` to head and fill it; return the todo table's size."""
    progress("rls: migrating a throwaway database to head...")
    server.alembic(["upgrade", "head"], url)
    progress(f"rls: building {todos:,} todos over {users:,} users...")
    with server.connect(url) as connection:
        with connection.transaction():
            for statement in fill_statements(users, todos):
                connection.execute(statement)
        progress("rls: VACUUM ANALYZE...")
        connection.execute('VACUUM ANALYZE "user", todo')
        row = connection.execute("SELECT pg_size_pretty(pg_total_relation_size('todo'))").fetchone()
    return str(row[0]) if row else "?"


@contextmanager
def as_app(connection: Connection, user: str) -> Iterator[None]:
    """A transaction as the todo API runs it: ``todo_app``, the user set for it alone."""
    with connection.transaction(force_rollback=True):
        connection.execute("SET LOCAL ROLE todo_app")
        connection.execute("SELECT set_config('app.user_id', %s, true)", [user])
        yield


@contextmanager
def as_owner(connection: Connection, user: str) -> Iterator[None]:
    """The same transaction as the superuser, whom RLS does not apply to."""
    with connection.transaction(force_rollback=True):
        connection.execute("SELECT set_config('app.user_id', %s, true)", [user])
        yield


def _document(raw: object) -> list[dict[str, Any]]:
    document = raw if isinstance(raw, list) else json.loads(str(raw))
    return list(document)


def explain_json(connection: Connection, query: sql.Composable) -> dict[str, Any]:
    row = connection.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + query).fetchone()
    return dict(_document(row[0] if row else "[]")[0]["Plan"])


def explain_text(connection: Connection, query: sql.Composable) -> str:
    return "\n".join(str(line) for (line,) in connection.execute(sql.SQL("EXPLAIN ") + query))


def execution(connection: Connection, query: sql.Composable) -> tuple[float, float]:
    """Server-side (execution, planning) seconds of one run of `query`."""
    row = connection.execute(_EXPLAIN_ANALYZE + query).fetchone()
    top = _document(row[0] if row else "[]")[0]
    return top["Execution Time"] / 1000, top["Planning Time"] / 1000


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


@dataclass(frozen=True)
class PlanShape:
    """What a plan must be: one index scan of the index, no row filter, no sort."""

    index_scan: bool
    no_filter: bool
    no_sort: bool
    initplan: bool

    @classmethod
    def of(cls, plan: dict[str, Any]) -> PlanShape:
        every = list(nodes(plan))
        scans = [node for node in every if node.get("Relation Name") == "todo"]
        index_scan = (
            len(scans) == 1
            and scans[0]["Node Type"] in {"Index Scan", "Index Only Scan"}
            and scans[0].get("Index Name") == INDEX
        )
        return cls(
            index_scan=index_scan,
            no_filter=all("Filter" not in node for node in scans),
            no_sort=all(node["Node Type"] != "Sort" for node in every),
            initplan=any(node.get("Parent Relationship") == "InitPlan" for node in every)
            and all("InitPlan" in str(node.get("Index Cond", "")) for node in scans),
        )


@dataclass
class Variant:
    """One way of running the list query for a user, and its figures."""

    label: str
    enter: Callable[[Connection, str], AbstractContextManager[None]]
    query: Callable[[str], sql.SQL | sql.Composed]
    execution: list[float] = field(default_factory=list)
    planning: list[float] = field(default_factory=list)
    round_trip: list[float] = field(default_factory=list)
    executor: list[float] = field(default_factory=list)

    def once(self, connection: Connection, user: str) -> tuple[float, float, float]:
        """Server-side execution and planning, then the client round trip of the bare query."""
        query = self.query(user)
        with self.enter(connection, user):
            executed, planned = execution(connection, query)
        with self.enter(connection, user):
            wall = timed(lambda: connection.execute(query).fetchall())
        return executed, planned, wall


def executor_time(connection: Connection, variant: Variant, user: str, runs: int) -> float:
    """Seconds per execution of `variant`'s query for `user`, run `runs` times in a row by
    PL/pgSQL: the plan cached, as a prepared statement's would be, and no EXPLAIN
    instrumentation, which costs every plan node (the InitPlan too) on every run."""
    query = variant.query(user).as_string(connection)
    block = f"""DO $$
DECLARE
    started timestamptz;
    r record;
BEGIN
    FOR r IN {query} LOOP END LOOP;
    started := clock_timestamp();
    FOR i IN 1..{runs} LOOP
        FOR r IN {query} LOOP END LOOP;
    END LOOP;
    RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - started) / {runs};
END
$$"""
    said: list[float] = []

    def hear(diagnostic: psycopg.errors.Diagnostic) -> None:
        said.append(float(diagnostic.message_primary or "nan"))

    connection.add_notice_handler(hear)
    try:
        with variant.enter(connection, user):
            connection.execute(block)
    finally:
        connection.remove_notice_handler(hear)
    if not said:
        raise BenchError("the executor loop reported nothing")
    return said[-1]


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median of the ratios of samples taken together (same user, back to back):
    users' todo lists differ more from each other than RLS makes a query differ."""
    return statistics.median(
        ratio(top, bottom) for top, bottom in zip(numerators, denominators, strict=True)
    )


def variants() -> tuple[Variant, Variant, Variant]:
    """Under RLS; explicit ``WHERE``; and, to tell RLS from its current-user lookup,
    an explicit ``WHERE`` on the very subquery the policy uses."""
    return (
        Variant("under RLS (todo_app)", as_app, lambda _: LIST_QUERY),
        Variant("explicit WHERE (postgres)", as_owner, explicit_query),
        Variant("policy's subquery as WHERE (postgres)", as_owner, lambda _: INITPLAN_QUERY),
    )


def measure(
    connection: Connection,
    candidates: Sequence[Variant],
    users: int,
    iterations: int,
    rng: random.Random,
) -> None:
    """Interleaved iterations: a random user, every variant once, in random order."""
    for index in range(WARMUP_ITERATIONS + iterations):
        user = f"user-{rng.randint(1, users)}"
        with as_owner(connection, user):  # every variant finds this user's pages in memory
            connection.execute(explicit_query(user)).fetchall()
        order = list(candidates)
        rng.shuffle(order)
        for variant in order:
            executed, planned, wall = variant.once(connection, user)
            if index >= WARMUP_ITERATIONS:
                variant.execution.append(executed)
                variant.planning.append(planned)
                variant.round_trip.append(wall)


def _median_total(variant: Variant) -> float:
    return statistics.median(
        executed + planned
        for executed, planned in zip(variant.execution, variant.planning, strict=True)
    )


def _ratios(rls: Variant, explicit: Variant, initplan: Variant) -> str:
    """What RLS costs by the other measures, for the reader to weigh."""

    def median(values: list[float]) -> float:
        return statistics.median(values)

    added = median(rls.executor) - median(explicit.executor)
    lines = [
        f"RLS adds {added * 1e6:.1f} us of executor time per query (difference of medians)",
        "RLS / explicit WHERE, EXPLAIN ANALYZE execution: "
        f"{ratio(median(rls.execution), median(explicit.execution)):.2f}x",
        "RLS / explicit WHERE, planning + execution: "
        f"{ratio(_median_total(rls), _median_total(explicit)):.2f}x",
        "RLS / explicit WHERE, client round trip of the SELECT: "
        f"{ratio(median(rls.round_trip), median(explicit.round_trip)):.2f}x",
        "RLS / explicit WHERE on the policy's subquery, executor: "
        f"{ratio(median(rls.executor), median(initplan.executor)):.2f}x"
        " (RLS itself, the current-user InitPlan aside)",
    ]
    return "\n".join(lines)


def run(server: Server, options: Options) -> list[Table]:
    users, todos, iterations = (
        (QUICK_USERS, QUICK_TODOS, QUICK_ITERATIONS)
        if options.quick
        else (USERS, TODOS, ITERATIONS)
    )
    rng = random.Random(SEED)
    with server.throwaway("rls") as url:
        size = build(server, url, users, todos)
        with server.connect(url) as connection:
            sample = f"user-{users // 2}"
            with as_app(connection, sample):
                rls_plan = explain_json(connection, LIST_QUERY)
                rls_text = explain_text(connection, LIST_QUERY)
                rls_rows = connection.execute(LIST_QUERY).fetchall()
            with as_owner(connection, sample):
                explicit_plan = explain_json(connection, explicit_query(sample))
                explicit_text = explain_text(connection, explicit_query(sample))
                explicit_rows = connection.execute(explicit_query(sample)).fetchall()
            if not explicit_rows:
                raise BenchError(f"no todos for {sample}: the table was not filled")
            progress(f"rls: {iterations} interleaved iterations (+{WARMUP_ITERATIONS} warm-up)...")
            rls, explicit, initplan = variants()
            measure(connection, (rls, explicit, initplan), users, iterations, rng)
            samples = QUICK_LOOP_SAMPLES if options.quick else LOOP_SAMPLES
            progress(f"rls: {samples} executor loops of {LOOP_RUNS} runs per variant...")
            for _ in range(samples):
                user = f"user-{rng.randint(1, users)}"
                order = [rls, explicit, initplan]
                rng.shuffle(order)
                for variant in order:
                    variant.executor.append(executor_time(connection, variant, user, LOOP_RUNS))

    rls_shape, explicit_shape = PlanShape.of(rls_plan), PlanShape.of(explicit_plan)
    measured = (rls, explicit, initplan)
    table = Table(
        title=(
            f"3. rls: the todo list query under RLS against an explicit WHERE, "
            f"{todos:,} todos over {users:,} users "
            f"(medians of interleaved samples)"
        ),
        header=STATS_HEADER,
        notes=[
            f"todo table with its indexes: {size}; a random user per sample, the same for all",
            f"compared: executor time per query, each sample a PL/pgSQL loop of {LOOP_RUNS}",
            "runs with the plan cached: the server's work, free of client and socket noise",
            "and of EXPLAIN ANALYZE's per-node instrumentation (shown below for reference)",
        ],
    )
    table.rows += [stats_row(f"executor, {v.label}", Stats.of(v.executor)) for v in measured]
    table.rows += [
        stats_row(f"  info: EXPLAIN ANALYZE execution, {v.label}", Stats.of(v.execution))
        for v in measured
    ]
    table.rows += [
        stats_row(f"  info: planning, {v.label}", Stats.of(v.planning)) for v in measured
    ]
    table.rows += [
        stats_row(f"  info: round trip, {v.label}", Stats.of(v.round_trip)) for v in measured
    ]
    table.blocks.append(("info", _ratios(rls, explicit, initplan)))
    same_rows = [tuple(row) for row in rls_rows] == [tuple(row) for row in explicit_rows]
    table.checks += [
        at_most(
            "executor, RLS / explicit WHERE (median of per-sample ratios)",
            paired_ratio(rls.executor, explicit.executor),
            TARGET_RATIO,
        ),
        holds(f"both return the same {len(explicit_rows)} rows ({sample})", same_rows),
        holds(f"RLS plan: index scan on {INDEX}", rls_shape.index_scan and rls_shape.no_sort),
        holds("RLS plan: no per-row policy filter", rls_shape.no_filter),
        holds("RLS plan: the current user is an InitPlan", rls_shape.initplan),
        holds(
            f"explicit plan: index scan on {INDEX}",
            explicit_shape.index_scan and explicit_shape.no_sort,
        ),
        holds("explicit plan: no per-row filter", explicit_shape.no_filter),
    ]
    table.blocks += [
        (f"plan under RLS (todo_app, app.user_id = '{sample}')", rls_text),
        (f"plan with explicit WHERE user_id = '{sample}' (postgres, bypasses RLS)", explicit_text),
    ]
    return [table]


BENCHMARK = Benchmark("rls", "RLS overhead on the todo list query at 1,000,000 todos", run)
