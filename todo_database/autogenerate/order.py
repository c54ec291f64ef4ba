"""A revision's operations in an order PostgreSQL accepts: a table is created before
whatever reads it, and dropped after.

What reads a table, as PostgreSQL tracks it (``pg_depend``): another table's policy
whose expression names it, and a foreign key that references it. (A function's body
is not tracked: PostgreSQL lets the table go and the function fail later.) Alembic
orders the tables a revision creates by their foreign keys, and the row-security
comparison puts the policies after every table, so an upgrade that creates tables
runs; but its downgrade, derived by reversing it, drops the tables in reverse order
and has the policies of dropped tables taken away (a dropped table takes them along),
so a table that another new table's policy reads went first (``cannot drop table
project_member because other objects depend on it``). Alembic drops the tables a
revision removes in no particular order (a set's), before it changes the live ones,
so a dropped table could go before the tables or foreign keys that reference it, and
the downgrade recreate it after them.

:func:`in_dependency_order` sorts the top-level operations of an upgrade or a
downgrade, keeping their order wherever no dependency asks otherwise (a stable
topological sort):

* ``create_table(t)`` before every operation on ``t`` (its row security, its
  indexes), before every table or column whose foreign key references ``t``, and
  before every policy whose expression reads ``t``;
* ``drop_table(t)`` after every operation on ``t``, after every table dropped, foreign
  key dropped or column dropped that references ``t``, and after every policy dropped
  or altered that read ``t``;
* a function a policy calls (PostgreSQL tracks that: the shared tables' policies call
  their sharing functions) created before the policy and its EXECUTE grants, and
  dropped after them and after every table the same step drops (whose policies,
  defaults and CHECKs go with it).

A policy on a dropped table that reads another dropped table is dropped on its own
first (:func:`policy_drop_stays`): the two tables' drops may not be orderable (the
policy reads the member table, whose foreign key references the first), and the
explicit drop breaks that cycle.

What each policy reads comes from the row-security comparison
(:func:`remember_policy_reads`): the catalog's policies as ``pg_depend`` records them,
and the declared ones as PostgreSQL recorded them on their twins
(:mod:`todo_database.autogenerate.deparse`).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from alembic.operations import MigrateOperation, ops
from alembic.operations.ops import OpContainer
from alembic.runtime.migration import MigrationContext

from todo_database.operations import functions as routines
from todo_database.operations import policies

#: The tables each policy reads, by (table, policy): the catalog's and the declared
#: ones' together (a policy's old and new definition share its name).
PolicyReads = Mapping[tuple[str, str], set[str]]

_reads: WeakKeyDictionary[MigrationContext, dict[tuple[str, str], set[str]]] = WeakKeyDictionary()


def remember_policy_reads(context: MigrationContext, reads: PolicyReads) -> None:
    """Record, for the rest of this autogenerate run, which tables each policy reads."""
    held = _reads.setdefault(context, {})
    for key, tables in reads.items():
        held.setdefault(key, set()).update(tables)


def policy_reads(context: MigrationContext) -> PolicyReads:
    """What :func:`remember_policy_reads` recorded for this run (nothing when row
    security is left out of the comparison)."""
    return _reads.get(context, {})


def _policy_reads(operation: MigrateOperation, reads: PolicyReads) -> set[str]:
    policy = getattr(operation, "policy", None)
    table = getattr(operation, "table_name", None)
    if policy is None or table is None:
        return set()
    return reads.get((table, policy.name), set()) - {table}


def policy_drop_stays(operation: MigrateOperation, dropped: set[str], reads: PolicyReads) -> bool:
    """Whether `operation`, on a table the same revision drops, must stay: a policy's
    drop whose policy reads another table dropped there too (see the module)."""
    return isinstance(operation, policies.DropPolicyOp) and bool(
        _policy_reads(operation, reads) & dropped
    )


# --- what an operation creates, references and lets go of ------------------------------


def _table_of(operation: MigrateOperation) -> str | None:
    table = getattr(operation, "table_name", None)
    schema = getattr(operation, "schema", None)
    return str(table) if table is not None and schema in (None, "public") else None


def _foreign_key_targets(table: sa.Table) -> set[str]:
    return {key.referred_table.name for key in table.foreign_key_constraints}


def _column_targets(column: sa.Column[Any]) -> set[str]:
    return {key.target_fullname.rsplit(".", 2)[-2] for key in column.foreign_keys}


def _referenced(operation: MigrateOperation) -> set[str]:
    """The tables a foreign key that `operation` adds references."""
    if isinstance(operation, ops.CreateTableOp):
        return _foreign_key_targets(operation.to_table())
    if isinstance(operation, ops.CreateForeignKeyOp):
        return {operation.referent_table}
    if isinstance(operation, ops.AddColumnOp):
        return _column_targets(operation.column)
    return set()


def _released(operation: MigrateOperation) -> set[str]:
    """The tables a foreign key that `operation` drops (or drops with its table or
    column) referenced."""
    if isinstance(operation, ops.DropTableOp):
        return _foreign_key_targets(operation.to_table())
    if isinstance(operation, ops.DropConstraintOp | ops.DropColumnOp):
        try:
            added = operation.reverse()
        except ValueError:  # built by hand, without what it drops
            return set()
        return _referenced(added)
    return set()


def _inner(operation: MigrateOperation) -> Iterator[MigrateOperation]:
    yield operation
    if isinstance(operation, OpContainer):
        for inner in operation.ops:
            yield from _inner(inner)


#: A function a policy calls, as the policies name them (``public.name(``).
_CALLED = re.compile(r'\bpublic\.(?:"((?:[^"]|"")+)"|(\w+))\s*\(')


def _function_key(name: str) -> str:
    """How a function stands among the tables in the sets below (no table is named so)."""
    return f"function {name}"


def _calls(policy: Any) -> set[str]:
    """The functions a policy's expressions call, as keys of :func:`_function_key`."""
    text = f"{policy.using or ''} {policy.with_check or ''}"
    return {
        _function_key(quoted.replace('""', '"') if quoted else plain)
        for quoted, plain in _CALLED.findall(text)
    }


def _function_of(operation: MigrateOperation) -> str | None:
    """The function an operation on one (its creation, drop, owner, EXECUTE) acts on."""
    if isinstance(operation, routines.CreateFunctionOp):
        return _function_key(operation.function.name)
    signature = getattr(operation, "signature", None)
    if isinstance(signature, str):
        return _function_key(routines.split_signature(signature)[1])
    return None


def _needs(operation: MigrateOperation, reads: PolicyReads) -> set[str]:
    """The tables (and functions) that must exist before `operation` runs."""
    needed: set[str] = set()
    for inner in _inner(operation):
        if (table := _table_of(inner)) is not None and not isinstance(inner, ops.CreateTableOp):
            needed.add(table)
        needed |= _referenced(inner)
        if isinstance(inner, policies.CreatePolicyOp | policies.AlterPolicyOp):
            needed |= _policy_reads(inner, reads) | _calls(inner.policy)
        if (function := _function_of(inner)) is not None and not isinstance(
            inner, routines.CreateFunctionOp
        ):
            needed.add(function)
    return needed


def _lets_go(operation: MigrateOperation, reads: PolicyReads) -> set[str]:
    """The tables (and functions) that may go only once `operation` has run."""
    held: set[str] = set()
    for inner in _inner(operation):
        if (table := _table_of(inner)) is not None and not isinstance(inner, ops.DropTableOp):
            held.add(table)
        held |= _released(inner)
        if isinstance(inner, policies.DropPolicyOp | policies.AlterPolicyOp):
            held |= _policy_reads(inner, reads) | _calls(inner.policy)
        if isinstance(inner, policies.AlterPolicyOp):
            held |= _calls(inner.previous)
        if (function := _function_of(inner)) is not None and not isinstance(
            inner, routines.DropFunctionOp
        ):
            held.add(function)
    return held


# --- the order ----------------------------------------------------------------------


def in_dependency_order(container: OpContainer, reads: PolicyReads) -> None:
    """Sort `container`'s operations (an upgrade's or a downgrade's, before the online
    rewrites wrap any of them) so that each table is created before what needs it and
    dropped after what holds it, changing nothing else."""
    operations = list(container.ops)
    created = _positions(operations, ops.CreateTableOp)
    dropped = _positions(operations, ops.DropTableOp)
    for index, operation in enumerate(operations):
        if isinstance(operation, routines.DropFunctionOp):
            dropped[_function_key(operation.function.name)] = index
        elif isinstance(operation, routines.CreateFunctionOp) and not isinstance(
            operation, routines.ReplaceFunctionOp
        ):
            created[_function_key(operation.function.name)] = index
    if not created and not dropped:
        return
    before: list[set[int]] = [set() for _ in operations]
    # A table dropped takes its policies, defaults and CHECKs along, which may call a
    # function the same step drops (the row security of a dropped table is left to the
    # drop): the functions go last. No table ever needs a function gone first.
    table_drops = set(dropped.values()) & {
        index
        for index, operation in enumerate(operations)
        if isinstance(operation, ops.DropTableOp)
    }
    for index, operation in enumerate(operations):
        if isinstance(operation, routines.DropFunctionOp):
            before[index] |= table_drops
    for index, operation in enumerate(operations):
        for table in _needs(operation, reads):
            if (creation := created.get(table)) is not None and creation != index:
                before[index].add(creation)
        for table in _lets_go(operation, reads):
            if (drop := dropped.get(table)) is not None and drop != index:
                before[drop].add(index)
    container.ops = [operations[index] for index in _stable_order(before)]


def _positions(operations: Sequence[MigrateOperation], kind: type[Any]) -> dict[str, int]:
    return {
        table: index
        for index, operation in enumerate(operations)
        if isinstance(operation, kind) and (table := _table_of(operation)) is not None
    }


def _stable_order(before: Sequence[Iterable[int]]) -> list[int]:
    """The positions in an order where each comes after those `before` names for it,
    the earliest ready position first (so nothing moves without a reason); the original
    order when the constraints form a cycle (the revision check then says so)."""
    waiting = [set(preceding) for preceding in before]
    followers: list[set[int]] = [set() for _ in before]
    for index, preceding in enumerate(waiting):
        for earlier in preceding:
            followers[earlier].add(index)
    ready = [index for index, preceding in enumerate(waiting) if not preceding]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for later in followers[index]:
            waiting[later].discard(index)
            if not waiting[later]:
                heapq.heappush(ready, later)
    return order if len(order) == len(before) else list(range(len(before)))
