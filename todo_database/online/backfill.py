"""``op.backfill``: rows of a live table updated in batches, each its own short
transaction.

One ``UPDATE`` over a whole table holds every row it touched until it commits: a
writer that meets one of them waits for the end of the statement, a million rows
later. A backfill instead walks the table in the order of a unique key, a batch of
`batch_size` keys at a time, and commits each batch on its own, so a writer waits at
most for one batch; after each batch it pauses as long as the batch took
(:data:`PAUSE_RATIO`), so that its WAL does not keep the application's commits waiting
for the disk. It runs in the revision's online steps, after its transaction has
committed::

    with op.get_context().autocommit_block():
        op.backfill("todo", {"title": "btrim(title)"}, where="title <> btrim(title)",
                    key=["id"])

* `where` says which rows still need the change, and must be false for a row once it
  has it: a rerun after a crash (or a failed later step) walks the table again and
  changes only the rows left;
* it takes no lock stronger than ``ROW EXCLUSIVE`` (what any ``UPDATE`` takes): reads
  and writes go on; a row a writer holds longer than ``lock_timeout`` fails the batch,
  and the deploy retries the revision;
* a long walk says how far it is, at most every :data:`PROGRESS_EVERY_S` seconds:
  rows walked of the estimated total, rows changed, and the rate;
* under FORCEd row-level security the table's owner, which runs migrations, sees no
  row unless it bypasses RLS (a superuser, Neon's ``neondb_owner``). For such a role
  the backfill adds a policy of its own for the walk's length,
  :data:`TRANSIENT_POLICY` ``TO CURRENT_USER USING (true)``, and drops it after; each
  takes the table's ACCESS EXCLUSIVE lock for a moment, waited for at most
  :data:`BRIEF_LOCK_WAIT` at a time. A restrictive policy that applies to the role
  would still hide rows: the backfill refuses, in one line, before changing any;
* offline (``--sql``) it is a ``DO`` block that commits after each batch (PostgreSQL
  11+ allows that in a ``DO`` run outside a transaction, as the online steps are).
  The block is one statement, so ``statement_timeout`` bounds the whole walk there; a
  walk cut short keeps its committed batches, and running it again finishes it.

Rows inserted behind the walk (with a key it has passed) are not visited: a backfill
finishes a change whose new rows already get the new value (a column default set
first, or the application writing it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from todo_database.catalog.security import has_policy, restrictive_policies_for_me
from todo_database.catalog.tables import unique_keys

# Under the "migrations" logger alembic.ini configures, by the name its lines always had.
log = logging.getLogger("migrations.backfill")

#: Keys walked per batch. A writer that meets a row of the batch waits for the batch to
#: commit: 1,000 rows of the todo table (its key a random UUID, so a page a row) take
#: 20-60 ms, 10,000 take 150-400 ms (research.md, "Column changes online and
#: op.backfill"), against a bound of 100 ms on any write's extra wait.
DEFAULT_BATCH_SIZE = 1_000
#: After each batch the walk pauses this many times as long as the batch took, so that
#: its writes (their WAL, and the full-page images after a checkpoint) take at most about
#: half of what the server can flush: an application's commit otherwise waits behind
#: them (research.md, "Column changes online and op.backfill").
PAUSE_RATIO = 1.0
#: A long backfill logs how far it is at most this often.
PROGRESS_EVERY_S = 5.0
#: The policy that lets a migration role under FORCEd row-level security see the rows.
TRANSIENT_POLICY = "todo_migrations_backfill"
#: How long a statement that takes ACCESS EXCLUSIVE for a moment waits for it, at a
#: time: writers queue behind a waiting request, so it gives up soon and tries again.
BRIEF_LOCK_WAIT = "100ms"
BRIEF_LOCK_ATTEMPTS = 10
_LOCK_NOT_AVAILABLE = "55P03"


class BackfillError(Exception):
    """A backfill that cannot run as written, said in one line."""


@Operations.register_operation("backfill")
@dataclass
class BackfillOp(MigrateOperation):
    """``SET values`` on the rows of `table_name` that `where` selects, `batch_size`
    rows of `key` order at a time, each batch committed on its own (see the module)."""

    table_name: str
    #: Column name to SQL expression (``DEFAULT`` for the column's default).
    values: dict[str, str]
    #: SQL, true for a row that still needs the change and false once it has it.
    where: str
    #: Columns of the primary key (or of another unique key of NOT NULL columns).
    key: tuple[str, ...]
    batch_size: int = DEFAULT_BATCH_SIZE
    #: Rendered above the call in a generated revision; nothing the backfill does.
    comment: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.values or not self.key or self.batch_size < 1:
            raise BackfillError(
                f"op.backfill({self.table_name!r}, ...) needs values to set, the key to "
                "walk (key=[...]) and a batch_size of at least 1"
            )

    @classmethod
    def backfill(
        cls,
        operations: Operations,
        table_name: str,
        values: Mapping[str, str],
        *,
        where: str,
        key: Sequence[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        """``op.backfill("todo", {"title": "btrim(title)"}, where="title <> btrim(title)",
        key=["id"])``, inside ``op.get_context().autocommit_block()``."""
        operations.invoke(cls(table_name, dict(values), where, tuple(key), batch_size))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("backfill", self.table_name, tuple(sorted(self.values.items())), self.where)


@dataclass(frozen=True)
class _Walk:
    """The statements of one backfill, its names quoted."""

    table: str
    key: tuple[str, ...]
    assignments: str
    where: str
    batch_size: int

    @classmethod
    def of(cls, operations: Operations, operation: BackfillOp) -> _Walk:
        quote = operations.impl.dialect.identifier_preparer.quote
        assignments = ", ".join(
            f"{quote(column)} = {value}" for column, value in operation.values.items()
        )
        return cls(
            quote(operation.table_name),
            tuple(quote(column) for column in operation.key),
            assignments,
            operation.where,
            operation.batch_size,
        )

    @property
    def columns(self) -> str:
        return ", ".join(self.key)

    def row(self, values: Sequence[str]) -> str:
        """``(a, b)`` for a composite key, ``a`` for one column."""
        joined = ", ".join(values)
        return f"({joined})" if len(values) > 1 else joined

    def first_key(self) -> str:
        return f"SELECT {self.columns} FROM {self.table} ORDER BY {self.columns} LIMIT 1"

    def next_key(self, start: Sequence[str]) -> str:
        """The first key of the batch after the one that begins at `start`."""
        return (
            f"SELECT {self.columns} FROM {self.table} WHERE {self.row(self.key)} >= "
            f"{self.row(start)} ORDER BY {self.columns} OFFSET {self.batch_size} LIMIT 1"
        )

    def update(self, start: Sequence[str], end: Sequence[str] | None, *, driver: bool) -> str:
        """The batch from `start` up to `end` (excluded; None: to the last row). For the
        driver, a ``%`` of the SQL given is doubled (the keys are its parameters)."""
        assignments, where = self.assignments, self.where
        if driver:
            assignments, where = assignments.replace("%", "%%"), where.replace("%", "%%")
        bounds = f"{self.row(self.key)} >= {self.row(start)}"
        if end is not None:
            bounds += f" AND {self.row(self.key)} < {self.row(end)}"
        return f"UPDATE {self.table} SET {assignments} WHERE {bounds} AND ({where})"


@Operations.implementation_for(BackfillOp)
def _backfill(operations: Operations, operation: BackfillOp) -> None:
    walk = _Walk.of(operations, operation)
    context = operations.get_context()
    if context.as_sql:
        context.impl.static_output(_offline_loop(walk, operation) + ";")
        return
    bind = operations.get_bind()
    if bind.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        raise BackfillError(
            f"op.backfill({operation.table_name!r}, ...) commits each batch on its own, "
            "outside the revision's transaction: call it inside "
            "`with op.get_context().autocommit_block():`"
        )
    _check_key(bind, walk, operation)
    with _rows_visible(bind, walk.table, operation.table_name):
        _run(bind, walk, operation.table_name)


def _check_key(bind: Connection, walk: _Walk, operation: BackfillOp) -> None:
    """The walk visits every row once only along a unique key of NOT NULL columns."""
    for columns, not_null in unique_keys(bind, walk.table):
        if tuple(columns) == operation.key and not_null:
            return
    raise BackfillError(
        f"op.backfill({operation.table_name!r}, ...): key={list(operation.key)!r} is not "
        "a unique key of NOT NULL columns (the primary key is one), so a walk along it "
        "could skip or repeat rows"
    )


def _run(bind: Connection, walk: _Walk, table_name: str) -> None:
    total = _estimated_rows(bind, walk.table)
    log.info(
        "backfill %s: ~%s rows to walk, %s a batch, each batch its own transaction",
        table_name,
        f"{total:,}",
        f"{walk.batch_size:,}",
    )
    starts = [f"start_{index}" for index in range(len(walk.key))]
    ends = [f"end_{index}" for index in range(len(walk.key))]
    from_start = [f"%({name})s" for name in starts]
    to_end = [f"%({name})s" for name in ends]
    started = reported = time.monotonic()
    walked = changed = batches = 0
    start = bind.exec_driver_sql(walk.first_key()).first()
    while start is not None:
        batch_started = time.monotonic()
        parameters = dict(zip(starts, start, strict=True))
        end = bind.exec_driver_sql(walk.next_key(from_start), parameters).first()
        if end is None:
            update = walk.update(from_start, None, driver=True)
        else:
            parameters |= dict(zip(ends, end, strict=True))
            update = walk.update(from_start, to_end, driver=True)
        changed += bind.exec_driver_sql(update, parameters).rowcount
        batches += 1
        walked += walk.batch_size
        start = end
        if start is not None:
            time.sleep((time.monotonic() - batch_started) * PAUSE_RATIO)
        now = time.monotonic()
        if start is not None and now - reported >= PROGRESS_EVERY_S:
            reported = now
            share = f" ({min(walked / total, 1):.0%})" if total else ""
            log.info(
                "backfill %s: %s of ~%s rows walked%s, %s changed, %s rows/s",
                table_name,
                f"{walked:,}",
                f"{total:,}",
                share,
                f"{changed:,}",
                f"{walked / (now - started):,.0f}",
            )
    log.info(
        "backfill %s: done, %s rows changed in %s batches, %.1f s",
        table_name,
        f"{changed:,}",
        f"{batches:,}",
        time.monotonic() - started,
    )


def _estimated_rows(bind: Connection, table: str) -> int:
    """The planner's estimate of the table's rows: the statistics, or, for a table
    never analysed, its size on disk. No scan."""
    plan = bind.exec_driver_sql(f"EXPLAIN (FORMAT JSON) SELECT FROM {table}").scalar()
    return int(plan[0]["Plan"]["Plan Rows"]) if plan else 0


# --- row-level security ---------------------------------------------------------------


@contextmanager
def _rows_visible(bind: Connection, table: str, table_name: str) -> Iterator[None]:
    """Every row of `table` visible to this session for the duration: as it is for a
    role that bypasses row-level security, or through :data:`TRANSIENT_POLICY`."""
    hidden = bind.exec_driver_sql("SELECT row_security_active(%(table)s)", {"table": table})
    if not hidden.scalar():
        yield
        return
    role = bind.exec_driver_sql("SELECT current_user").scalar()
    restrictive = restrictive_policies_for_me(bind, table)
    if restrictive:
        raise BackfillError(
            f"backfill of {table_name!r}: row-level security applies to role {role!r} and "
            f"the restrictive policies {restrictive} would hide rows from it whatever it "
            f"is granted: run the migration as a role with BYPASSRLS "
            f"(ALTER ROLE {role} BYPASSRLS, as a superuser)"
        )
    policy = bind.dialect.identifier_preparer.quote(TRANSIENT_POLICY)
    if not has_policy(bind, table, TRANSIENT_POLICY):
        run_with_a_brief_lock(
            bind,
            f"CREATE POLICY {policy} ON {table} AS PERMISSIVE FOR ALL TO CURRENT_USER "
            "USING (true) WITH CHECK (true)",
            table_name,
        )
    log.info(
        "backfill %s: role %s does not bypass the table's FORCEd row-level security; "
        "policy %s lets it see every row until the backfill ends",
        table_name,
        role,
        TRANSIENT_POLICY,
    )
    drop = f"DROP POLICY IF EXISTS {policy} ON {table}"
    try:
        yield
    except BaseException:
        try:
            run_with_a_brief_lock(bind, drop, table_name, attempts=1)
        except DBAPIError:
            log.warning(
                "backfill %s: policy %s is left in place; a rerun drops it",
                table_name,
                TRANSIENT_POLICY,
            )
        raise
    run_with_a_brief_lock(bind, drop, table_name)


def run_with_a_brief_lock(
    bind: Connection, statement: str, table_name: str, *, attempts: int = BRIEF_LOCK_ATTEMPTS
) -> None:
    """Run `statement`, which holds `table_name`'s ACCESS EXCLUSIVE lock for a moment,
    on an autocommit connection, waiting for the lock at most :data:`BRIEF_LOCK_WAIT`
    each time: every reader and writer that comes after a waiting request queues
    behind it, so it gives up soon, and tries again after a pause in which they go on
    (up to `attempts` times; the last failure is raised, and the deploy retries)."""
    # The driver reads % as a placeholder, parameters or not.
    block = (
        f"DO $brief$ BEGIN PERFORM set_config('lock_timeout', '{BRIEF_LOCK_WAIT}', true); "
        f"{statement}; END $brief$"
    ).replace("%", "%%")
    pause = 0.1
    for attempt in range(1, attempts + 1):
        try:
            bind.exec_driver_sql(block)
            return
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _LOCK_NOT_AVAILABLE or attempt == attempts:
                raise
        log.info(
            "%s: lock not had within %s; attempt %d of %d in %.1f s",
            table_name,
            BRIEF_LOCK_WAIT,
            attempt + 1,
            attempts,
            pause,
        )
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


# --- offline -----------------------------------------------------------------------------


def _offline_loop(walk: _Walk, operation: BackfillOp) -> str:
    """The backfill as one ``DO`` block that commits each batch, for ``--sql``."""
    starts = [f"batch_start_{index}" for index in range(len(walk.key))]
    ends = [f"batch_end_{index}" for index in range(len(walk.key))]
    declarations = "\n".join(
        f"    {variable} {walk.table}.{column}%TYPE;"
        for variables in (starts, ends)
        for variable, column in zip(variables, walk.key, strict=True)
    )
    into = ", ".join
    policy = TRANSIENT_POLICY
    table_literal = "'" + walk.table.replace("'", "''") + "'"
    return f"""-- backfill {operation.table_name}: SET {walk.assignments} WHERE {walk.where},
-- {walk.batch_size} rows of ({walk.columns}) order a batch, each batch committed on its own
DO $backfill$
DECLARE
{declarations}
    batch_started timestamptz;
BEGIN
    -- Under FORCEd row-level security a role that does not bypass it sees no row:
    -- a policy of its own lets it see them while the backfill runs.
    IF row_security_active({table_literal}) AND NOT EXISTS (
        SELECT FROM pg_policy WHERE polrelid = {table_literal}::regclass
        AND polname = '{policy}'
    ) THEN
        CREATE POLICY {policy} ON {walk.table} AS PERMISSIVE FOR ALL TO CURRENT_USER
            USING (true) WITH CHECK (true);
        COMMIT;
    END IF;
    {walk.first_key().replace(" FROM ", f" INTO {into(starts)} FROM ", 1)};
    WHILE {starts[0]} IS NOT NULL LOOP
        batch_started := clock_timestamp();
        {walk.next_key(starts).replace(" FROM ", f" INTO {into(ends)} FROM ", 1)};
        IF {ends[0]} IS NULL THEN
            {walk.update(starts, None, driver=False)};
        ELSE
            {walk.update(starts, ends, driver=False)};
        END IF;
        COMMIT;
        {"; ".join(f"{s} := {e}" for s, e in zip(starts, ends, strict=True))};
        -- A pause as long as the batch took: the application's writes get their turn.
        PERFORM pg_sleep({PAUSE_RATIO} * extract(epoch FROM clock_timestamp() - batch_started));
    END LOOP;
    DROP POLICY IF EXISTS {policy} ON {walk.table};
END
$backfill$"""


@renderers.dispatch_for(BackfillOp)
def _render_backfill(context: AutogenContext, operation: BackfillOp) -> list[str]:
    arguments = [repr(operation.table_name), repr(operation.values)]
    arguments += [f"where={operation.where!r}", f"key={list(operation.key)!r}"]
    if operation.batch_size != DEFAULT_BATCH_SIZE:
        arguments.append(f"batch_size={operation.batch_size:_}")
    lines = [f"# {line}" for line in operation.comment.splitlines()]
    return [*lines, f"op.backfill({', '.join(arguments)})"]
