"""What row-level security under the verified identity costs the todo list query.

A throwaway database at head gets 1,000,000 todos over 10,000 users (100 each) and
100,000 Better Auth sessions (10 per user, random tokens, one in five expired; built
anew on every run of ``make bench``, with ``INSERT ... SELECT generate_series`` and
``VACUUM ANALYZE``; ``--quick``: 100,000 todos, 1,000 users, 10,000 sessions). The list
query, newest first, 50 rows, runs four ways:

* as the todo API does: ``todo_app`` under RLS, each transaction bound to a live
  session of the user (``SET LOCAL ROLE todo_app; SELECT public.bind_session(<token>)``),
  no ``WHERE``: the policy supplies it, verifying the session once per statement;
* with an explicit ``WHERE user_id = 'user-N'``, by the superuser, whom RLS does not
  apply to: the target compares these two;
* for information, by the superuser in a bound transaction: with the policy's own
  condition as an explicit ``WHERE`` (what RLS costs apart from the identity), and with
  the claimed id alone (``app.user_id``, the policies' condition before the identity was
  verified: what verifying it costs inside the query).

The figure compared is the executor's time per query inside the server: each sample
is a PL/pgSQL loop running the query 300 times with its plan cached (as a prepared
statement's would be), for a random user, the ways interleaved in random order and
paired by user. Measured inside the server, it is the work RLS changes, free of the
client, the socket and the scheduling noise of a shared machine: those are the same
for every side, so in a client wall time they would only dilute a difference of a few
microseconds (and add noise larger than it). ``EXPLAIN ANALYZE`` is not the measure:
even with ``TIMING OFF`` it instruments every plan node on every run, and the plan
under RLS has nodes more (the InitPlans, the One-Time Filter), so it inflates exactly
the difference being measured. Its ``Execution Time``, the planning time and the
client round trip of the bare ``SELECT`` are printed for information, with the ratios
they give.

What the identity costs by itself is measured the same way (PL/pgSQL loops, plan
cached, paired): ``SELECT (SELECT public.verified_user_id())`` against a constant in
the same shape, the claimed id alone, and ``bind_session`` per call; with the client
round trip of ``bind_session`` against a bare ``SELECT``.

Both plans are printed and checked: one index scan on
``todo_user_id_created_at_id_idx``, no sort, no per-row filter; under RLS, the verified
user id an InitPlan executed once, compared with the claimed id in a One-Time Filter
above the scan (so a transaction bound to nobody scans nothing). And a transaction
that only claims a user (``set_config('app.user_id', ...)``) or binds an expired
session reads no row.
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

from models.security import APP_ROLE, owner_is_current_user
from tests.benchmarks.common import (
    STATS_HEADER,
    BenchError,
    Benchmark,
    Options,
    Server,
    Table,
    at_most,
    holds,
    progress,
    ratio,
    timed,
)
from tests.benchmarks.identity import (
    BIND,
    CLAIMED,
    IDENTITY_RUNS,
    SESSIONS_PER_USER,
    IdentityCost,
    IdentityShape,
    bind,
    bound,
    expired_token,
    live_tokens,
    nodes,
    seconds_per_run,
    session_statement,
)

USERS, TODOS, ITERATIONS = 10_000, 1_000_000, 200
QUICK_USERS, QUICK_TODOS, QUICK_ITERATIONS = 1_000, 100_000, 50
WARMUP_ITERATIONS = 20
#: Executor loops: samples per variant, and runs of the query in each.
LOOP_SAMPLES, QUICK_LOOP_SAMPLES, LOOP_RUNS = 40, 5, 300
TARGET_RATIO = 1.25
INDEX = "todo_user_id_created_at_id_idx"
OWNER_COLUMN = "user_id"
SEED = 20261125

Connection = psycopg.Connection[tuple[Any, ...]]

_COLUMNS = "SELECT id, title, completed, due_at, created_at FROM todo"
_ORDER = "ORDER BY created_at DESC, id DESC LIMIT 50"
#: The todo API's list query: RLS supplies the user.
LIST_QUERY = sql.SQL(f"{_COLUMNS} {_ORDER}")
#: The list query with the policies' own condition (verified and claimed id) as WHERE.
POLICY_QUERY = sql.SQL(f"{_COLUMNS} WHERE {owner_is_current_user(OWNER_COLUMN)} {_ORDER}")
#: The list query with the claimed id alone as WHERE: the policies before verification.
CLAIMED_QUERY = sql.SQL(f"{_COLUMNS} WHERE {OWNER_COLUMN} = {CLAIMED} {_ORDER}")
_EXPLAIN_ANALYZE = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) ")
#: The plan as printed: what ran, how often, and which expressions each node computes.
_EXPLAIN_SHOWN = sql.SQL("EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, BUFFERS OFF) ")


def explicit_query(user: str) -> sql.Composed:
    """The same query with the user in an explicit ``WHERE``, for a role bypassing RLS."""
    return sql.SQL(f"{_COLUMNS} WHERE {OWNER_COLUMN} = {{}} {_ORDER}").format(sql.Literal(user))


def fill_statements(users: int, todos: int) -> list[str]:
    """The statements that fill the tables, as tests/isolation/test_query_plans.py does, and the
    sessions the API binds."""
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
        session_statement(users),
    ]


def build(server: Server, url: URL, users: int, todos: int) -> tuple[str, str]:
    """Migrate `url` to head and fill it; return the todo and session tables' sizes."""
    progress("rls: migrating a throwaway database to head...")
    server.alembic(["upgrade", "head"], url)
    sessions = users * SESSIONS_PER_USER
    progress(f"rls: building {todos:,} todos and {sessions:,} sessions over {users:,} users...")
    with server.connect(url) as connection:
        with connection.transaction():
            for statement in fill_statements(users, todos):
                connection.execute(statement)
        progress("rls: VACUUM ANALYZE...")
        connection.execute('VACUUM ANALYZE "user", todo, session')
        row = connection.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('todo')),"
            " pg_size_pretty(pg_total_relation_size('session'))"
        ).fetchone()
    return (str(row[0]), str(row[1])) if row else ("?", "?")


@contextmanager
def as_owner(connection: Connection) -> Iterator[None]:
    """A transaction as the superuser, whom RLS does not apply to, bound to nobody."""
    with connection.transaction(force_rollback=True):
        yield


def _document(raw: object) -> list[dict[str, Any]]:
    document = raw if isinstance(raw, list) else json.loads(str(raw))
    return list(document)


def explain_json(
    connection: Connection, query: sql.Composable, *, analyze: bool = False
) -> dict[str, Any]:
    options = "ANALYZE, VERBOSE, TIMING OFF, FORMAT JSON" if analyze else "FORMAT JSON"
    row = connection.execute(sql.SQL(f"EXPLAIN ({options}) ") + query).fetchone()
    return dict(_document(row[0] if row else "[]")[0]["Plan"])


def explain_text(connection: Connection, query: sql.Composable) -> str:
    return "\n".join(str(line) for (line,) in connection.execute(_EXPLAIN_SHOWN + query))


def execution(connection: Connection, query: sql.Composable) -> tuple[float, float]:
    """Server-side (execution, planning) seconds of one run of `query`."""
    row = connection.execute(_EXPLAIN_ANALYZE + query).fetchone()
    top = _document(row[0] if row else "[]")[0]
    return top["Execution Time"] / 1000, top["Planning Time"] / 1000


@dataclass(frozen=True)
class PlanShape:
    """What a plan must be: one index scan of the index, no row filter, no sort."""

    index_scan: bool
    no_filter: bool
    no_sort: bool

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
        )


Enter = Callable[[Connection, str], AbstractContextManager[None]]


@dataclass
class Variant:
    """One way of running the list query for a user, and its figures."""

    label: str
    enter: Enter
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
    instrumentation, which costs every plan node (the InitPlans too) on every run."""
    query = variant.query(user).as_string(connection)
    with variant.enter(connection, user):
        return seconds_per_run(connection, f"FOR r IN {query} LOOP END LOOP;", runs)


def paired_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """The median of the ratios of samples taken together (same user, back to back):
    users' todo lists differ more from each other than RLS makes a query differ."""
    return statistics.median(
        ratio(top, bottom) for top, bottom in zip(numerators, denominators, strict=True)
    )


def variants(tokens: dict[str, str]) -> tuple[Variant, Variant, Variant, Variant]:
    """Under RLS; explicit ``WHERE``; and, to tell RLS from the identity it reads, the
    policy's own condition and the claimed id alone as explicit ``WHERE``s."""

    def as_app(connection: Connection, user: str) -> AbstractContextManager[None]:
        return bound(connection, tokens[user])

    def bound_owner(connection: Connection, user: str) -> AbstractContextManager[None]:
        return bound(connection, tokens[user], role=None)

    return (
        Variant(f"under RLS ({APP_ROLE}, session bound)", as_app, lambda _: LIST_QUERY),
        Variant("explicit WHERE (postgres)", lambda c, _: as_owner(c), explicit_query),
        Variant("policy's condition as WHERE (postgres)", bound_owner, lambda _: POLICY_QUERY),
        Variant("claimed id alone as WHERE (postgres)", bound_owner, lambda _: CLAIMED_QUERY),
    )


def measure(
    connection: Connection,
    candidates: Sequence[Variant],
    users: Sequence[str],
    iterations: int,
    rng: random.Random,
) -> None:
    """Interleaved iterations: a random user, every variant once, in random order."""
    for index in range(WARMUP_ITERATIONS + iterations):
        user = rng.choice(users)
        with as_owner(connection):  # every variant finds this user's pages in memory
            connection.execute(explicit_query(user)).fetchall()
        order = list(candidates)
        rng.shuffle(order)
        for variant in order:
            executed, planned, wall = variant.once(connection, user)
            if index >= WARMUP_ITERATIONS:
                variant.execution.append(executed)
                variant.planning.append(planned)
                variant.round_trip.append(wall)


def sees_nothing_unbound(connection: Connection, user: str, expired: str) -> bool:
    """Whether the API's role reads no row when it only claims `user` (the setting any
    session may set) or binds an `expired` session."""
    with connection.transaction(force_rollback=True):
        connection.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(APP_ROLE)))
        connection.execute("SELECT set_config('app.user_id', %s, true)", [user])
        claimed = connection.execute(LIST_QUERY).fetchall()
    with connection.transaction(force_rollback=True):
        connection.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(APP_ROLE)))
        bound_to = bind(connection, expired)
        stale = connection.execute(LIST_QUERY).fetchall()
    return not claimed and bound_to is None and not stale


def us(seconds: float) -> str:
    """Microseconds: what these figures differ by."""
    return f"{seconds * 1e6:.1f} us"


def us_row(label: str, values: Sequence[float]) -> tuple[str, str, str, str, str]:
    """``label, median, min, max, runs`` in microseconds, for :data:`STATS_HEADER`."""
    if not values:
        raise BenchError("no measurement was taken")
    median, low, high = statistics.median(values), min(values), max(values)
    return (label, us(median), us(low), us(high), str(len(values)))


def _median_total(variant: Variant) -> float:
    return statistics.median(
        executed + planned
        for executed, planned in zip(variant.execution, variant.planning, strict=True)
    )


def _ratios(rls: Variant, explicit: Variant, policy: Variant, claimed: Variant) -> str:
    """What RLS costs by the other measures, for the reader to weigh."""

    def median(values: list[float]) -> float:
        return statistics.median(values)

    added = median(rls.executor) - median(explicit.executor)
    identity = median(policy.executor) - median(claimed.executor)
    lines = [
        f"RLS adds {us(added)} of executor time per query (difference of medians)",
        f"of which verifying the session inside the query: {us(identity)}"
        " (policy's condition - claimed id alone, as WHERE)",
        "RLS / explicit WHERE, EXPLAIN ANALYZE execution: "
        f"{ratio(median(rls.execution), median(explicit.execution)):.2f}x",
        "RLS / explicit WHERE, planning + execution: "
        f"{ratio(_median_total(rls), _median_total(explicit)):.2f}x",
        "RLS / explicit WHERE, client round trip of the SELECT: "
        f"{ratio(median(rls.round_trip), median(explicit.round_trip)):.2f}x",
        "RLS / the policy's condition as WHERE, executor: "
        f"{paired_ratio(rls.executor, policy.executor):.2f}x (RLS itself, the identity aside)",
        "claimed id alone as WHERE / explicit WHERE, executor: "
        f"{paired_ratio(claimed.executor, explicit.executor):.2f}x (the policies before the"
        " identity was verified)",
    ]
    return "\n".join(lines)


def identity_table(cost: IdentityCost, sessions: int, size: str) -> Table:
    """What the identity costs one statement, and ``bind_session`` one transaction."""
    table = Table(
        title=(
            "3b. rls: what the verified identity costs, per statement and per transaction "
            f"({sessions:,} sessions)"
        ),
        header=STATS_HEADER,
        notes=[
            f"session table with its indexes: {size}; each sample a PL/pgSQL loop of "
            f"{IDENTITY_RUNS:,} runs",
            "as the API's role in a bound transaction, paired with a constant in the same",
            "shape, (SELECT 'user-N'::text): what is above it is the function's own cost",
        ],
    )
    table.rows += [
        us_row("SELECT (SELECT public.verified_user_id())", cost.verified),
        us_row("SELECT (SELECT NULLIF(current_setting('app.user_id'), ''))", cost.claimed),
        us_row("SELECT (SELECT 'user-N'::text)  (the constant)", cost.constant),
        us_row(f"SELECT (SELECT {BIND}('<token>'))", cost.bind),
        us_row(f"  info: round trip of SELECT {BIND}(%s)", cost.bind_round_trip),
        us_row("  info: round trip of SELECT %s::text", cost.select_round_trip),
    ]
    verified = cost.per_statement(cost.verified)
    claimed = cost.per_statement(cost.claimed)
    table.blocks.append(
        (
            "info",
            "\n".join(
                [
                    f"the identity check per statement (verified_user_id): {us(verified)}"
                    " (median of paired differences from the constant)",
                    f"the claimed id alone per statement: {us(claimed)}",
                    f"{BIND} per transaction: {us(cost.per_statement(cost.bind))} in the"
                    f" server; its round trip is {cost.bind_ratio():.2f}x a bare SELECT's",
                ]
            ),
        )
    )
    return table


def run(server: Server, options: Options) -> list[Table]:
    users, todos, iterations = (
        (QUICK_USERS, QUICK_TODOS, QUICK_ITERATIONS)
        if options.quick
        else (USERS, TODOS, ITERATIONS)
    )
    rng = random.Random(SEED)
    with server.throwaway("rls") as url:
        size, session_size = build(server, url, users, todos)
        with server.connect(url) as connection:
            tokens = live_tokens(connection)
            everyone = sorted(tokens)
            if len(everyone) != users:
                raise BenchError(f"{len(everyone)} of {users} users have a live session")
            sample = f"user-{users // 2}"
            with bound(connection, tokens[sample]):
                rls_plan = explain_json(connection, LIST_QUERY, analyze=True)
                rls_text = explain_text(connection, LIST_QUERY)
                rls_rows = connection.execute(LIST_QUERY).fetchall()
            with as_owner(connection):
                explicit_plan = explain_json(connection, explicit_query(sample))
                explicit_text = explain_text(connection, explicit_query(sample))
                explicit_rows = connection.execute(explicit_query(sample)).fetchall()
            if not explicit_rows:
                raise BenchError(f"no todos for {sample}: the table was not filled")
            unbound_sees_nothing = sees_nothing_unbound(
                connection, sample, expired_token(connection)
            )
            progress(f"rls: {iterations} interleaved iterations (+{WARMUP_ITERATIONS} warm-up)...")
            measured = variants(tokens)
            measure(connection, measured, everyone, iterations, rng)
            samples = QUICK_LOOP_SAMPLES if options.quick else LOOP_SAMPLES
            progress(f"rls: {samples} executor loops of {LOOP_RUNS} runs per variant...")
            for _ in range(samples):
                user = rng.choice(everyone)
                order = list(measured)
                rng.shuffle(order)
                for variant in order:
                    variant.executor.append(executor_time(connection, variant, user, LOOP_RUNS))
            progress(f"rls: {samples} samples of the identity's own cost...")
            cost = IdentityCost()
            for _ in range(samples):
                user = rng.choice(everyone)
                cost.sample(connection, user, tokens[user], rng)

    rls, explicit, policy, claimed = measured
    rls_shape, explicit_shape = PlanShape.of(rls_plan), PlanShape.of(explicit_plan)
    identity = IdentityShape.of(rls_plan, "todo")
    table = Table(
        title=(
            "3. rls: the todo list query under RLS (verified identity) against an explicit "
            f"WHERE, {todos:,} todos over {users:,} users, {users * SESSIONS_PER_USER:,} sessions "
            "(medians of interleaved samples)"
        ),
        header=STATS_HEADER,
        notes=[
            f"todo table with its indexes: {size}; a random user per sample, the same for all",
            f"compared: executor time per query, each sample a PL/pgSQL loop of {LOOP_RUNS}",
            "runs with the plan cached: the server's work, free of client and socket noise",
            "and of EXPLAIN ANALYZE's per-node instrumentation (shown below for reference)",
        ],
    )
    table.rows += [us_row(f"executor, {v.label}", v.executor) for v in measured]
    table.rows += [
        us_row(f"  info: EXPLAIN ANALYZE execution, {v.label}", v.execution) for v in measured
    ]
    table.rows += [us_row(f"  info: planning, {v.label}", v.planning) for v in measured]
    table.rows += [us_row(f"  info: round trip, {v.label}", v.round_trip) for v in measured]
    table.blocks.append(("info", _ratios(rls, explicit, policy, claimed)))
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
        holds(
            "RLS plan: verified_user_id() an InitPlan, run once",
            identity.verified_initplan and identity.evaluated_once,
        ),
        holds(
            "RLS plan: One-Time Filter (verified = claimed) above the scan",
            identity.one_time_filter,
        ),
        holds("no row for a claimed app.user_id alone or an expired session", unbound_sees_nothing),
        holds(
            f"explicit plan: index scan on {INDEX}",
            explicit_shape.index_scan and explicit_shape.no_sort,
        ),
        holds("explicit plan: no per-row filter", explicit_shape.no_filter),
    ]
    table.blocks += [
        (f"plan under RLS ({APP_ROLE}, bound to a live session of '{sample}')", rls_text),
        (f"plan with explicit WHERE user_id = '{sample}' (postgres, bypasses RLS)", explicit_text),
    ]
    return [table, identity_table(cost, users * SESSIONS_PER_USER, session_size)]


BENCHMARK = Benchmark(
    "rls",
    "RLS under the verified identity on the todo list query at 1,000,000 todos",
    run,
)
