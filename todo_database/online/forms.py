"""Online schema changes by default, visible in the generated revision.

A table is *live* for a revision when it exists both before and after it: others
read and write it while the revision runs. On a live table:

* an index is created or dropped ``CONCURRENTLY`` inside an autocommit block, so
  writers are never blocked for the length of a build; a rerun after a failed
  concurrent build (which leaves an INVALID index behind) drops that index first;
* a foreign key or CHECK constraint is added ``NOT VALID``, which takes a lock only
  for a moment, and validated in a step of its own, which lets reads and writes
  through while it scans; a rerun after a failed validation (rows that break it)
  drops the unvalidated leftover first.

Tables the revision creates or drops are empty or going: their indexes and
constraints are made the plain way, inside the transaction.

The online steps (everything that must run outside a transaction) come last in the
revision, after its transaction has committed. A revision whose transaction changes
two or more existing tables starts with :class:`LockTablesOp`. A reviewer sees all of
it in the revision::

    op.lock_tables(["todo", "user"])
    ...
    with op.get_context().autocommit_block():
        op.drop_index_if_invalid("todo_user_id_updated_at_id_idx")
        op.create_index(..., postgresql_concurrently=True, if_not_exists=True)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import render_op
from alembic.autogenerate.rewriter import Rewriter
from alembic.operations import MigrateOperation, Operations, ops
from alembic.operations.ops import MigrationScript, OpContainer
from alembic.runtime.migration import MigrationContext

from todo_database.catalog.tables import index_is_invalid, read_tables

rewriter = Rewriter()

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
#: What a new foreign key takes on both tables: writes wait, reads go on.
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
#: Weakest first; a table needing several is locked in the strongest.
_MODES = (SHARE_ROW_EXCLUSIVE, ACCESS_EXCLUSIVE)

_tables_seen: WeakKeyDictionary[MigrationContext, frozenset[str]] = WeakKeyDictionary()
_live_tables: WeakKeyDictionary[MigrationContext, frozenset[str]] = WeakKeyDictionary()


def existing_tables(context: MigrationContext) -> frozenset[str]:
    """The tables the database has, read once per autogenerate run (the rewrites ask
    for every operation)."""
    if context.connection is None:
        return frozenset()
    if context not in _tables_seen:
        _tables_seen[context] = frozenset(read_tables(context.connection))
    return _tables_seen[context]


def _dropped_tables(container: OpContainer) -> set[str]:
    return {op.table_name for op in container.ops if isinstance(op, ops.DropTableOp)}


def _created_tables(container: OpContainer) -> set[str]:
    return {op.table_name for op in container.ops if isinstance(op, ops.CreateTableOp)}


def _live(context: MigrationContext) -> frozenset[str]:
    return _live_tables.get(context, existing_tables(context))


# --- guards that make a rerun after a failed online step recover ---------------------


@Operations.register_operation("drop_index_if_invalid")
@dataclass
class DropIndexIfInvalidOp(MigrateOperation):
    """Drop `index_name` only if an interrupted concurrent build left it INVALID."""

    index_name: str

    @classmethod
    def drop_index_if_invalid(cls, operations: Operations, index_name: str) -> None:
        operations.invoke(cls(index_name))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_index_if_invalid", self.index_name)


@Operations.implementation_for(DropIndexIfInvalidOp)
def _drop_index_if_invalid(operations: Operations, operation: DropIndexIfInvalidOp) -> None:
    quoted = operations.impl.dialect.identifier_preparer.quote(operation.index_name)
    context = operations.get_context()
    if context.as_sql:
        # Offline SQL runs once on a database that cannot hold a half-built index.
        context.impl.static_output(
            f"-- online only: drop {quoted} if left INVALID by a failed build"
        )
        return
    if index_is_invalid(operations.get_bind(), quoted):
        operations.execute(f"DROP INDEX CONCURRENTLY {quoted}")


@renderers.dispatch_for(DropIndexIfInvalidOp)
def _render_drop_index_if_invalid(context: AutogenContext, operation: DropIndexIfInvalidOp) -> str:
    return f"op.drop_index_if_invalid({operation.index_name!r})"


@Operations.register_operation("drop_constraint_if_not_valid")
@dataclass
class DropConstraintIfNotValidOp(MigrateOperation):
    """Drop `constraint_name` only if a failed validation left it NOT VALID, so that the
    revision that adds it again can be rerun."""

    table_name: str
    constraint_name: str

    @classmethod
    def drop_constraint_if_not_valid(
        cls, operations: Operations, table_name: str, constraint_name: str
    ) -> None:
        operations.invoke(cls(table_name, constraint_name))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_constraint_if_not_valid", self.table_name, self.constraint_name)


def _drop_constraint_if_there(
    operations: Operations, table_name: str, constraint_name: str, condition: str = ""
) -> None:
    """Drop the constraint when the catalog has it (and `condition`, SQL on
    ``pg_constraint``, holds), in one statement that online and offline SQL share."""
    quote = operations.impl.dialect.identifier_preparer.quote
    table, constraint = quote(table_name), quote(constraint_name)
    literal = "'" + constraint.replace("'", "''") + "'"
    operations.execute(
        f"""DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_constraint WHERE conrelid = '{table}'::regclass
               AND conname = {literal}{condition}) THEN
        ALTER TABLE {table} DROP CONSTRAINT {constraint};
    END IF;
END
$$"""
    )


@Operations.implementation_for(DropConstraintIfNotValidOp)
def _drop_constraint_if_not_valid(
    operations: Operations, operation: DropConstraintIfNotValidOp
) -> None:
    _drop_constraint_if_there(
        operations, operation.table_name, operation.constraint_name, " AND NOT convalidated"
    )


@Operations.register_operation("drop_constraint_left_by_an_earlier_run")
@dataclass
class DropConstraintLeftOp(MigrateOperation):
    """Drop `constraint_name` if an earlier, interrupted run of this revision left it,
    NOT VALID or already validated by its online step, so that the revision, which
    adds it again, can be rerun. It takes the table's lock only then: the first run
    locks nothing it would not lock anyway.

    (``op.drop_constraint_if_not_valid``, which revisions wrote before, left a validated
    constraint in place, and the rerun failed on adding it again.)"""

    table_name: str
    constraint_name: str

    #: No lock on a first run (the constraint is not there): nothing to take up front.
    takes_no_table_lock: ClassVar[bool] = True

    @classmethod
    def drop_constraint_left_by_an_earlier_run(
        cls, operations: Operations, table_name: str, constraint_name: str
    ) -> None:
        operations.invoke(cls(table_name, constraint_name))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_constraint_left_by_an_earlier_run", self.table_name, self.constraint_name)


@Operations.implementation_for(DropConstraintLeftOp)
def _drop_constraint_left(operations: Operations, operation: DropConstraintLeftOp) -> None:
    _drop_constraint_if_there(operations, operation.table_name, operation.constraint_name)


@renderers.dispatch_for(DropConstraintLeftOp)
def _render_drop_constraint_left(context: AutogenContext, operation: DropConstraintLeftOp) -> str:
    return (
        f"op.drop_constraint_left_by_an_earlier_run({operation.table_name!r}, "
        f"{operation.constraint_name!r})"
    )


@renderers.dispatch_for(DropConstraintIfNotValidOp)
def _render_drop_constraint_if_not_valid(
    context: AutogenContext, operation: DropConstraintIfNotValidOp
) -> str:
    return (
        f"op.drop_constraint_if_not_valid({operation.table_name!r}, {operation.constraint_name!r})"
    )


@Operations.register_operation("validate_constraint")
@dataclass
class ValidateConstraintOp(MigrateOperation):
    """``ALTER TABLE ... VALIDATE CONSTRAINT``: checks existing rows under a lock that
    lets reads and writes through."""

    table_name: str
    constraint_name: str

    @classmethod
    def validate_constraint(
        cls, operations: Operations, table_name: str, constraint_name: str
    ) -> None:
        operations.invoke(cls(table_name, constraint_name))

    def reverse(self) -> ValidateConstraintOp:
        return self  # validating twice is harmless; there is nothing to undo

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("validate_constraint", self.table_name, self.constraint_name)


@Operations.implementation_for(ValidateConstraintOp)
def _validate_constraint(operations: Operations, operation: ValidateConstraintOp) -> None:
    quote = operations.impl.dialect.identifier_preparer.quote
    table, constraint = quote(operation.table_name), quote(operation.constraint_name)
    operations.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {constraint}")


@renderers.dispatch_for(ValidateConstraintOp)
def _render_validate_constraint(context: AutogenContext, operation: ValidateConstraintOp) -> str:
    return f"op.validate_constraint({operation.table_name!r}, {operation.constraint_name!r})"


# --- steps outside the transaction -----------------------------------------------------


@dataclass
class AutocommitBlockOp(MigrateOperation):
    """Operations that must run outside a transaction, rendered inside
    ``op.get_context().autocommit_block()``: after the revision's transaction (online
    steps), or, `first`, before it (what the transaction needs committed, such as an
    enum value it uses)."""

    ops: list[MigrateOperation]
    reversed_ops: list[MigrateOperation]
    first: bool = False

    def reverse(self) -> AutocommitBlockOp:
        return AutocommitBlockOp(self.reversed_ops, self.ops, self.first)


@renderers.dispatch_for(AutocommitBlockOp)
def _render_autocommit_block(context: AutogenContext, operation: AutocommitBlockOp) -> list[str]:
    if not operation.ops:
        return []
    lines = ["with op.get_context().autocommit_block():"]
    for inner in operation.ops:
        lines.extend(render_op(context, inner))
    lines.append("")
    return lines


# --- reruns after a failed online step ------------------------------------------------
#
# The online steps run after the revision's transaction has committed, and Alembic
# records the revision only after them: when one fails (a VALIDATE meets a row that
# breaks the CHECK, a concurrent build is cancelled), the database holds the
# transaction's changes under the previous revision. A rerun must not apply them again
# (a DROP CONSTRAINT of a constraint already gone fails), so the transaction leaves a
# mark, committed with it, and a rerun that finds the mark runs only the online steps.
# The mark is the comment on Alembic's version table, so it needs no table of its own.


def _mark(direction: str, revision: str) -> str:
    return f"{MARK_PREFIX}{direction} {revision} has committed"


#: How every mark begins (:func:`committed_mark` reads one back).
MARK_PREFIX = "todo-migrations: the transaction of "
#: The mark on the version table, if any (SQL).
READ_MARK = "SELECT obj_description(to_regclass('alembic_version'), 'pg_class')"


def committed_mark(comment: str | None) -> tuple[str, str] | None:
    """(direction, revision) of the mark `comment` (the version table's) holds."""
    if not comment or not comment.startswith(MARK_PREFIX):
        return None
    direction, revision, *_ = comment.removeprefix(MARK_PREFIX).split()
    return direction, revision


def _version_table(operations: Operations) -> str:
    context = operations.get_context()
    quote = operations.impl.dialect.identifier_preparer.quote
    schema = context.version_table_schema
    table = quote(context.version_table)
    return f"{quote(schema)}.{table}" if schema else table


@Operations.register_operation("transaction_committed_before")
@dataclass
class CommittedBeforeOp(MigrateOperation):
    """Whether an earlier run of this `direction` of `revision` got as far as
    committing its transaction (its online steps then failed). Offline, never: the SQL
    is for a database that has not run it."""

    direction: str
    revision: str

    @classmethod
    def transaction_committed_before(
        cls, operations: Operations, direction: str, revision: str
    ) -> bool:
        return bool(operations.invoke(cls(direction, revision)))


@Operations.implementation_for(CommittedBeforeOp)
def _committed_before(operations: Operations, operation: CommittedBeforeOp) -> bool:
    if operations.get_context().as_sql:
        return False
    table = _version_table(operations)
    found = operations.get_bind().exec_driver_sql(
        f"SELECT obj_description('{table}'::regclass, 'pg_class')"
    )
    return bool(found.scalar() == _mark(operation.direction, operation.revision))


@Operations.register_operation("mark_transaction_committed")
@dataclass
class MarkCommittedOp(MigrateOperation):
    """The mark :class:`CommittedBeforeOp` looks for, set last in the transaction (so it
    commits with it), or cleared (`cleared`) once the online steps are done, in the
    transaction that records the revision."""

    direction: str
    revision: str
    cleared: bool = False

    @classmethod
    def mark_transaction_committed(
        cls, operations: Operations, direction: str, revision: str, *, cleared: bool = False
    ) -> None:
        operations.invoke(cls(direction, revision, cleared))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("mark_transaction_committed", self.direction, self.revision, self.cleared)


@Operations.implementation_for(MarkCommittedOp)
def _mark_committed(operations: Operations, operation: MarkCommittedOp) -> None:
    table = _version_table(operations)
    mark = "'" + _mark(operation.direction, operation.revision).replace("'", "''") + "'"
    if not operation.cleared:
        operations.execute(f"COMMENT ON TABLE {table} IS {mark}")
        return
    # Only this mark: another direction's, left by its own failed run, must stay.
    operations.execute(
        f"""DO $$
BEGIN
    IF obj_description('{table}'::regclass, 'pg_class') = {mark} THEN
        COMMENT ON TABLE {table} IS NULL;
    END IF;
END
$$"""
    )


class TransactionOnceOp(OpContainer):
    """The revision's transaction, skipped by a rerun that finds it committed:
    ``if not op.transaction_committed_before(...):``, its operations, the mark."""

    def __init__(self, direction: str, revision: str, operations: list[MigrateOperation]):
        super().__init__(operations)
        self.direction, self.revision = direction, revision


@renderers.dispatch_for(TransactionOnceOp)
def _render_transaction_once(context: AutogenContext, operation: TransactionOnceOp) -> list[str]:
    where = f"{operation.direction!r}, {operation.revision!r}"
    lines = [
        "# A rerun after its online steps failed finds this transaction committed already.",
        f"if not op.transaction_committed_before({where}):",
    ]
    for inner in operation.ops:
        lines.extend(render_op(context, inner))
    lines += [f"op.mark_transaction_committed({where})", ""]
    return lines


@renderers.dispatch_for(MarkCommittedOp)
def _render_mark(context: AutogenContext, operation: MarkCommittedOp) -> str:
    where = f"{operation.direction!r}, {operation.revision!r}"
    return f"op.mark_transaction_committed({where}{', cleared=True' if operation.cleared else ''})"


def _commits_first(operation: MigrateOperation) -> bool:
    return isinstance(operation, AutocommitBlockOp) and operation.first


def _rerunnable(container: OpContainer, direction: str, revision: str) -> bool:
    """Wrap the transaction of `container` (after :func:`_online_steps_last` and the
    up-front locks) in a :class:`TransactionOnceOp` when online steps follow it;
    whether it did."""
    operations = list(container.ops)
    if not operations or not isinstance(operations[-1], AutocommitBlockOp):
        return False
    start = 0
    while start < len(operations) and _commits_first(operations[start]):
        start += 1
    transaction = operations[start:-1]
    if not transaction:
        return False
    container.ops = [
        *operations[:start],
        TransactionOnceOp(direction, revision, transaction),
        operations[-1],
        MarkCommittedOp(direction, revision, cleared=True),
    ]
    return True


def _create_concurrently(op: ops.CreateIndexOp) -> list[MigrateOperation]:
    op.kw["postgresql_concurrently"] = True
    op.if_not_exists = True
    return [DropIndexIfInvalidOp(op.index_name or ""), op]


def _drop_concurrently(op: ops.DropIndexOp) -> list[MigrateOperation]:
    op.kw["postgresql_concurrently"] = True
    op.if_exists = True
    return [op]


@rewriter.rewrites(ops.CreateIndexOp)
def create_index_concurrently(
    context: MigrationContext, revision: Any, op: ops.CreateIndexOp
) -> MigrateOperation:
    if op.table_name not in _live(context):
        return op  # a table created or dropped by the revision: nobody waits for it
    reverse = op.reverse()
    return AutocommitBlockOp(_create_concurrently(op), _drop_concurrently(reverse))


@rewriter.rewrites(ops.DropIndexOp)
def drop_index_concurrently(
    context: MigrationContext, revision: Any, op: ops.DropIndexOp
) -> MigrateOperation:
    if op.table_name not in _live(context):
        return op
    reverse = op.reverse()
    return AutocommitBlockOp(_drop_concurrently(op), _create_concurrently(reverse))


def _not_valid_then_validate(
    op: ops.CreateForeignKeyOp | ops.CreateCheckConstraintOp, table: str
) -> list[MigrateOperation]:
    name = str(op.constraint_name)
    op.kw["postgresql_not_valid"] = True
    return [
        DropConstraintLeftOp(table, name),
        op,
        AutocommitBlockOp([ValidateConstraintOp(table, name)], []),
    ]


@rewriter.rewrites(ops.CreateForeignKeyOp)
def add_foreign_key_not_valid(
    context: MigrationContext, revision: Any, op: ops.CreateForeignKeyOp
) -> Any:
    if op.source_table not in _live(context):
        return op
    return _not_valid_then_validate(op, op.source_table)


@rewriter.rewrites(ops.CreateCheckConstraintOp)
def add_check_not_valid(
    context: MigrationContext, revision: Any, op: ops.CreateCheckConstraintOp
) -> Any:
    if op.table_name not in _live(context):
        return op
    return _not_valid_then_validate(op, op.table_name)


def _online_steps_last(container: OpContainer) -> None:
    """Move every autocommit block, in order, to the end of `container`: the
    revision's transaction runs whole first, its online steps after it commits; but
    the blocks that must come `first`, to its start."""
    steps: list[MigrateOperation] = []
    first: list[MigrateOperation] = []

    def keep(operations: list[MigrateOperation]) -> list[MigrateOperation]:
        kept: list[MigrateOperation] = []
        for operation in operations:
            if isinstance(operation, AutocommitBlockOp):
                (first if operation.first else steps).extend(operation.ops)
            elif isinstance(operation, ops.ModifyTableOps):
                operation.ops = keep(operation.ops)
                if operation.ops:
                    kept.append(operation)
            else:
                kept.append(operation)
        return kept

    container.ops = keep(container.ops)
    if steps:
        container.ops.append(AutocommitBlockOp(steps, []))
    if first:
        container.ops.insert(0, AutocommitBlockOp(first, [], first=True))


def rewrite(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """The online rewrites, then the online steps moved last and the locks taken
    first, on every script autogenerate produced."""
    for script in directives:
        dropped = set().union(*map(_dropped_tables, script.upgrade_ops_list))
        _live_tables[context] = existing_tables(context) - dropped
        try:
            rewriter(context, revision, [script])
        finally:
            _live_tables.pop(context, None)
        for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
            _online_steps_last(container)
        lock_up_front(context, script)
        revision_id = str(script.rev_id)
        for upgrade, downgrade in zip(
            script.upgrade_ops_list, script.downgrade_ops_list, strict=True
        ):
            wrapped = _rerunnable(upgrade, "upgrade", revision_id)
            _rerunnable(downgrade, "downgrade", revision_id)
            if wrapped:
                # Backing out of a failed upgrade (stamp, then downgrade) must not leave
                # its mark for the next upgrade to skip its transaction by.
                downgrade.ops.insert(0, MarkCommittedOp("upgrade", revision_id, cleared=True))


# --- locks up front ----------------------------------------------------------------------


@Operations.register_operation("lock_tables")
@dataclass
class LockTablesOp(MigrateOperation):
    """``LOCK TABLE`` on every existing table the revision's transaction changes,
    first thing in it, each lock waited for at most `wait`.

    A migration that holds one table's lock while it waits for another's can deadlock
    with application transactions: inserting a todo locks todo then "user" (the foreign
    key), deleting a user locks "user" then todo (the cascade). PostgreSQL then aborts
    whoever waited first, usually the application's transaction. Taking every lock up
    front, each within `wait`, keeps the migration's hold-and-wait shorter than
    ``deadlock_timeout`` (1 s): the migration gives up first, with lock_not_available,
    and the deploy retries it with backoff. No application transaction is aborted, and
    none waits longer than the waits here plus the revision's own statements.

    Each table is locked in the mode its strongest statement needs: ACCESS EXCLUSIVE
    for a change to the table itself, SHARE ROW EXCLUSIVE where a foreign key to it is
    only added (readers go on).
    """

    locks: tuple[tuple[str, str], ...]
    wait: str = "100ms"

    @classmethod
    def lock_tables(
        cls,
        operations: Operations,
        tables: Sequence[str] | Mapping[str, str],
        *,
        wait: str = "100ms",
    ) -> None:
        """``op.lock_tables(["a", "b"])`` (ACCESS EXCLUSIVE) or
        ``op.lock_tables({"a": "ACCESS EXCLUSIVE", "b": "SHARE ROW EXCLUSIVE"})``."""
        if isinstance(tables, Mapping):
            locks = tuple(sorted(tables.items()))
        else:
            locks = tuple((table, ACCESS_EXCLUSIVE) for table in tables)
        operations.invoke(cls(locks, wait))

    def reverse(self) -> LockTablesOp:
        return self

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("lock_tables", self.locks)


@Operations.implementation_for(LockTablesOp)
def _lock_tables(operations: Operations, operation: LockTablesOp) -> None:
    quote = operations.impl.dialect.identifier_preparer.quote
    statements = []
    for mode in reversed(_MODES):
        tables = ", ".join(quote(table) for table, wanted in operation.locks if wanted == mode)
        if tables:
            statements.append(f"    LOCK TABLE {tables} IN {mode} MODE;")
    body = "\n".join(statements)
    # The session's lock_timeout is put back for the revision's own statements.
    operations.execute(
        f"""DO $$
DECLARE
    session_lock_timeout text := current_setting('lock_timeout');
BEGIN
    PERFORM set_config('lock_timeout', '{operation.wait}', true);
{body}
    PERFORM set_config('lock_timeout', session_lock_timeout, true);
END
$$"""
    )


@renderers.dispatch_for(LockTablesOp)
def _render_lock_tables(context: AutogenContext, operation: LockTablesOp) -> str:
    if all(mode == ACCESS_EXCLUSIVE for _, mode in operation.locks):
        return f"op.lock_tables({[table for table, _ in operation.locks]!r})"
    return f"op.lock_tables({dict(operation.locks)!r})"


def _foreign_key_targets(table: sa.Table) -> set[str]:
    return {key.referred_table.name for key in table.foreign_key_constraints}


def _referent_of_dropped(operation: ops.DropConstraintOp) -> str | None:
    """The table a dropped foreign key referenced: dropping it takes that table's lock
    too (its triggers go)."""
    if operation.constraint_type not in ("foreignkey", None):
        return None
    try:
        added = operation.reverse()
    except ValueError:  # built by hand, without the constraint it drops
        return None
    return added.referent_table if isinstance(added, ops.CreateForeignKeyOp) else None


def _locks(operation: MigrateOperation) -> Iterable[tuple[str, str]]:
    """(table, mode) for every lock `operation` takes that blocks writers."""
    if isinstance(operation, AutocommitBlockOp | LockTablesOp):
        return  # outside the transaction, or the locking itself
    if isinstance(operation, ops.CreateTableOp):
        for target in _foreign_key_targets(operation.to_table()):
            yield target, SHARE_ROW_EXCLUSIVE
    elif isinstance(operation, ops.DropTableOp):
        yield operation.table_name, ACCESS_EXCLUSIVE
        for target in _foreign_key_targets(operation.to_table()):
            yield target, ACCESS_EXCLUSIVE
    elif isinstance(operation, ops.CreateForeignKeyOp):
        yield operation.source_table, SHARE_ROW_EXCLUSIVE
        yield operation.referent_table, SHARE_ROW_EXCLUSIVE
    elif isinstance(operation, ops.DropConstraintOp):
        yield operation.table_name, ACCESS_EXCLUSIVE
        if (referent := _referent_of_dropped(operation)) is not None:
            yield referent, ACCESS_EXCLUSIVE
    elif isinstance(operation, ops.ModifyTableOps):
        yield operation.table_name, ACCESS_EXCLUSIVE
        for inner in operation.ops:
            yield from _locks(inner)
    elif getattr(operation, "takes_no_table_lock", False):
        return
    elif (table := getattr(operation, "table_name", None)) is not None:
        yield str(table), ACCESS_EXCLUSIVE


def lock_up_front(context: MigrationContext, script: MigrationScript) -> None:
    """Prefix each generated upgrade and downgrade whose transaction locks two or more
    existing tables with one :class:`LockTablesOp` (see there for why)."""
    existing = existing_tables(context)
    upgrades, downgrades = script.upgrade_ops_list, script.downgrade_ops_list
    created = set().union(*map(_created_tables, upgrades))
    dropped = set().union(*map(_dropped_tables, upgrades))
    for containers, there in ((upgrades, existing), (downgrades, (existing - dropped) | created)):
        for container in containers:
            strongest: dict[str, str] = {}
            for operation in container.ops:
                for table, mode in _locks(operation):
                    if table in there and _MODES.index(mode) >= _MODES.index(
                        strongest.get(table, _MODES[0])
                    ):
                        strongest[table] = mode
            if len(strongest) >= 2:
                # After the blocks that commit before the transaction: a lock taken
                # before them would be released by their COMMIT.
                start = next(
                    (
                        i
                        for i, operation in enumerate(container.ops)
                        if not (isinstance(operation, AutocommitBlockOp) and operation.first)
                    ),
                    len(container.ops),
                )
                container.ops.insert(start, LockTablesOp(tuple(sorted(strongest.items()))))


# The rewrites of other modules, registered on `rewriter` when they are imported.
