"""What sharing costs a member listing the todos of every list shared with them.

A copy of the project gets the shared-list models of ``tests/support/shared_lists.py`` (a list
``shared_with`` its members, the membership table ``member_of`` it, tasks
``owned_through`` the list), generated into a revision by ``alembic revision
--autogenerate`` and migrated into a throwaway database, which is then filled with
1,000,000 tasks in 20,000 lists owned by 2,000 users, and 100,000 memberships of the
other 8,000 users (five members a list, about twelve lists a member, viewers and
editors), and the sessions of every user (``--quick``: a tenth of each). The query, a
member's every shared task, runs two ways:

* as the todo API does: ``todo_app`` bound to a live session of the member, no
  ``WHERE``: the policies supply it, through ``shared_list_readable_ids()`` (the keys
  of the lists the member reads, evaluated once per statement);
* the explicit query, by the superuser, whom RLS does not apply to:
  ``WHERE list_id IN (SELECT list_id FROM shared_list_member WHERE user_id = ...)``.

Both return the same rows (a member owns no list here). The figure compared is the
executor's time per query, as in ``rls``: a PL/pgSQL loop runs the query with its plan
cached, for a random member, both ways back to back in random order, paired by member.
Both plans are printed and checked: index scans of ``list_task`` by ``list_id`` and of
the memberships by user, no sequential scan, and the sharing function an InitPlan run
once.
"""

from __future__ import annotations

import random
import tempfile
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from psycopg import sql
from sqlalchemy.engine import URL

from models.security import APP_ROLE
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
)
from tests.benchmarks.identity import bound, live_tokens, nodes, session_statement
from tests.benchmarks.rls import (
    Connection,
    Variant,
    as_owner,
    executor_time,
    explain_json,
    explain_text,
    paired_ratio,
    us,
    us_row,
)

#: Users, of whom the first OWNERS own the lists and the others are their members.
USERS, OWNERS, LISTS, TASKS, MEMBERSHIPS = 10_000, 2_000, 20_000, 1_000_000, 100_000
QUICK = {"users": 1_000, "owners": 200, "lists": 2_000, "tasks": 100_000, "memberships": 10_000}
MEMBERS_PER_LIST = MEMBERSHIPS // LISTS
#: Executor loops: samples per variant, and runs of the query in each.
SAMPLES, QUICK_SAMPLES, LOOP_RUNS = 40, 5, 50
TARGET_RATIO = 1.25
SEED = 20261206

SHARED, MEMBERS, TASKS_TABLE = "shared_list", "shared_list_member", "list_task"
READABLE = f"{SHARED}_readable_ids"
TASK_INDEX = "list_task_list_id_idx"
MEMBER_INDEX = "shared_list_member_user_id_idx"

_COLUMNS = f"SELECT id, list_id, title FROM {TASKS_TABLE}"
#: The todo API's listing: the policies supply which lists.
LIST_QUERY = sql.SQL(_COLUMNS)


def explicit_query(user: str) -> sql.Composed:
    """The same listing with the member in an explicit ``WHERE``, for a role bypassing RLS."""
    return sql.SQL(
        f"{_COLUMNS} WHERE list_id IN (SELECT list_id FROM {MEMBERS} WHERE user_id = {{}})"
    ).format(sql.Literal(user))


def fill_statements(users: int, owners: int, lists: int, tasks: int, memberships: int) -> list[str]:
    """Users and their sessions; lists owned by the first `owners` users; five members a
    list among the others (list n's k-th member: user ``owners + 1 + (5n + k) mod
    (users - owners)``, so no member is listed twice); tasks spread over the lists."""
    list_id = "md5('list-' || {n})::uuid"
    members = users - owners
    per_list = memberships // lists
    return [
        f"""INSERT INTO "user" (id, name, email, "emailVerified")
            SELECT 'user-' || n, 'User ' || n, 'user' || n || '@example.com', true
            FROM generate_series(1, {users}) AS n""",
        session_statement(users),
        f"""INSERT INTO {SHARED} (id, user_id, name)
            SELECT {list_id.format(n="n")}, 'user-' || (n % {owners} + 1), 'list ' || n
            FROM generate_series(0, {lists - 1}) AS n""",
        f"""INSERT INTO {MEMBERS} (list_id, user_id, level)
            SELECT {list_id.format(n="n % " + str(lists))},
                   'user-' || ({owners} + 1 + ({per_list} * (n % {lists}) + n / {lists})
                               % {members}),
                   CASE WHEN n / {lists} % 2 = 0 THEN 'viewer' ELSE 'editor' END
            FROM generate_series(0, {per_list * lists - 1}) AS n""",
        f"""INSERT INTO {TASKS_TABLE} (list_id, title)
            SELECT {list_id.format(n="n % " + str(lists))}, 'task ' || n
            FROM generate_series(1, {tasks}) AS n""",
    ]


def build(server: Server, url: URL, root: Path, sizes: dict[str, int]) -> str:
    """A copy of the project in `root` with the shared lists, migrated into `url` and
    filled; returns the tasks table's size."""
    from tests.support.evolution import Project
    from tests.support.shared_lists import add_shared_lists

    project = Project.copy(root, "")
    add_shared_lists(project)
    progress("sharing: generating the shared lists' revision and migrating...")
    server.alembic(["upgrade", "head"], url, cwd=project.root)
    server.alembic(["revision", "--autogenerate", "-m", "shared lists"], url, cwd=project.root)
    server.alembic(["upgrade", "head"], url, cwd=project.root)
    progress(
        f"sharing: {sizes['tasks']:,} tasks in {sizes['lists']:,} lists, "
        f"{sizes['memberships']:,} memberships, {sizes['users']:,} users..."
    )
    with server.connect(url) as connection:
        with connection.transaction():
            for statement in fill_statements(**sizes):
                connection.execute(statement)
        progress("sharing: VACUUM ANALYZE...")
        connection.execute(f'VACUUM ANALYZE "user", session, {SHARED}, {MEMBERS}, {TASKS_TABLE}')
        row = connection.execute(
            f"SELECT pg_size_pretty(pg_total_relation_size('{TASKS_TABLE}'))"
        ).fetchone()
    return str(row[0]) if row else "?"


def member_rows(connection: Connection, query: sql.SQL | sql.Composed) -> list[tuple[Any, ...]]:
    return sorted(tuple(row) for row in connection.execute(query).fetchall())


def plan_checks(rls_plan: dict[str, Any], explicit_plan: dict[str, Any]) -> list[tuple[str, bool]]:
    """Index scans on both sides, no sequential scan, and the sharing function once."""

    def scans(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
        return [node for node in nodes(plan) if node.get("Relation Name") == relation]

    def indexed(plan: dict[str, Any], relation: str, index: str) -> bool:
        found = scans(plan, relation)
        return bool(found) and all(
            node["Node Type"] in {"Index Scan", "Index Only Scan", "Bitmap Heap Scan"}
            and (node.get("Index Name") == index or node["Node Type"] == "Bitmap Heap Scan")
            for node in found
        )

    def sequential(plan: dict[str, Any]) -> bool:
        return any(node["Node Type"] == "Seq Scan" for node in nodes(plan))

    sharing = [
        node
        for node in nodes(rls_plan)
        if node.get("Parent Relationship") == "InitPlan"
        and f"{READABLE}(" in " ".join(str(out) for out in node.get("Output", []))
    ]
    return [
        (f"RLS plan: {TASKS_TABLE} by {TASK_INDEX}", indexed(rls_plan, TASKS_TABLE, TASK_INDEX)),
        ("RLS plan: no sequential scan", not sequential(rls_plan)),
        (
            f"RLS plan: {READABLE}() an InitPlan, run once",
            len(sharing) == 1 and sharing[0].get("Actual Loops") == 1,
        ),
        (
            f"explicit plan: {TASKS_TABLE} by {TASK_INDEX}",
            indexed(explicit_plan, TASKS_TABLE, TASK_INDEX),
        ),
        (
            f"explicit plan: {MEMBERS} by {MEMBER_INDEX}",
            indexed(explicit_plan, MEMBERS, MEMBER_INDEX),
        ),
        ("explicit plan: no sequential scan", not sequential(explicit_plan)),
    ]


def run(server: Server, options: Options) -> list[Table]:
    sizes = (
        QUICK
        if options.quick
        else {
            "users": USERS,
            "owners": OWNERS,
            "lists": LISTS,
            "tasks": TASKS,
            "memberships": MEMBERSHIPS,
        }
    )
    samples = QUICK_SAMPLES if options.quick else SAMPLES
    rng = random.Random(SEED)
    with (
        tempfile.TemporaryDirectory(prefix="todo-bench-sharing-") as directory,
        server.throwaway("sharing") as url,
    ):
        size = build(server, url, Path(directory) / "project", sizes)
        with server.connect(url) as connection:
            tokens = live_tokens(connection)
            members = sorted(
                str(user)
                for (user,) in connection.execute(f"SELECT DISTINCT user_id FROM {MEMBERS}")
            )
            if not members or any(member not in tokens for member in members):
                raise BenchError("a member has no live session: the tables were not filled")
            sample = members[len(members) // 2]
            with bound(connection, tokens[sample]):
                rls_plan = explain_json(connection, LIST_QUERY, analyze=True)
                rls_text = explain_text(connection, LIST_QUERY)
                rls_rows = member_rows(connection, LIST_QUERY)
            with as_owner(connection):
                explicit_plan = explain_json(connection, explicit_query(sample), analyze=True)
                explicit_text = explain_text(connection, explicit_query(sample))
                explicit_rows = member_rows(connection, explicit_query(sample))
            if not explicit_rows:
                raise BenchError(f"no tasks shared with {sample}: the tables were not filled")

            def as_member(c: Connection, user: str) -> AbstractContextManager[None]:
                return bound(c, tokens[user])

            measured = (
                Variant(
                    f"under RLS ({APP_ROLE}, member's session bound)",
                    as_member,
                    lambda _: LIST_QUERY,
                ),
                Variant(
                    "explicit WHERE list_id IN (memberships) (postgres)",
                    lambda c, _: as_owner(c),
                    explicit_query,
                ),
            )
            progress(f"sharing: {samples} executor loops of {LOOP_RUNS} runs per variant...")
            for index in range(samples):
                user = rng.choice(members)
                with as_owner(connection):  # both find this member's pages in memory
                    connection.execute(explicit_query(user)).fetchall()
                order = list(measured)
                rng.shuffle(order)
                for variant in order:
                    variant.executor.append(executor_time(connection, variant, user, LOOP_RUNS))
                if (index + 1) % 10 == 0:
                    progress(f"sharing: {index + 1}/{samples} samples")

    rls, explicit = measured
    table = Table(
        title=(
            f"7. sharing: a member's every shared task under RLS against an explicit WHERE, "
            f"{sizes['tasks']:,} tasks in {sizes['lists']:,} lists, "
            f"{sizes['memberships']:,} memberships, {sizes['users']:,} users"
        ),
        header=STATS_HEADER,
        notes=[
            f"list_task with its indexes: {size}; a random member per sample, the same for both;",
            f"{len(explicit_rows)} tasks in {sample}'s lists. Compared: executor time per query,",
            f"each sample a PL/pgSQL loop of {LOOP_RUNS} runs with the plan cached",
        ],
    )
    table.rows += [us_row(f"executor, {variant.label}", variant.executor) for variant in measured]
    added = us(
        sorted(rls.executor)[len(rls.executor) // 2]
        - sorted(explicit.executor)[len(explicit.executor) // 2]
    )
    table.blocks.append(("info", f"RLS adds {added} of executor time per query (medians)"))
    table.checks += [
        at_most(
            "executor, RLS / explicit WHERE (median of per-sample ratios)",
            paired_ratio(rls.executor, explicit.executor),
            TARGET_RATIO,
        ),
        holds(
            f"both return the same {len(explicit_rows)} rows ({sample})", rls_rows == explicit_rows
        ),
        *(holds(label, passed) for label, passed in plan_checks(rls_plan, explicit_plan)),
    ]
    table.blocks += [
        (f"plan under RLS ({APP_ROLE}, bound to a live session of '{sample}')", rls_text),
        (f"plan with the explicit WHERE for '{sample}' (postgres, bypasses RLS)", explicit_text),
    ]
    return [table]


BENCHMARK = Benchmark(
    "sharing",
    "a member listing every shared task under RLS, 1,000,000 tasks, 100,000 memberships",
    run,
)
