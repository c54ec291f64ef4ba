"""What a model can declare that Alembic's autogenerate does not compare.

Alembic compares tables, columns (type, nullability, server default, comment),
indexes and unique constraints by their columns and uniqueness, and foreign keys
(columns, referred table, ON DELETE/UPDATE, deferrability). It compares no CHECK
constraint, nothing of an index beyond its expressions (a partial index's WHERE, its
method, INCLUDE columns, operator classes, storage options), and no primary key. The
models use CHECKs, partial indexes and primary keys, so this comparator covers them,
as PostgreSQL prints both sides (:mod:`todo_database.autogenerate.deparse`):

* a CHECK constraint added, dropped or changed (a change is a drop and an add);
* an index whose definition differs in anything but its name (drop and create; the
  online rewriter makes both concurrent on a live table);
* a primary key added, or moved to other columns (one operation, which
  :mod:`todo_database.online.unique` swaps in one statement on the live table);
* a CHECK or foreign key left NOT VALID in the database, by an online change that
  stopped before its VALIDATE step: validated.

Drops come before everything else on a table (a column dropped in the same revision
takes its CHECKs with it) and additions after (a CHECK may read a column added in the
same revision).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from alembic.autogenerate import comparators, renderers
from alembic.autogenerate.api import AutogenContext
from alembic.autogenerate.render import _render_gen_name  # the op.f() convention of names
from alembic.operations import MigrateOperation, ops
from sqlalchemy.sql.elements import conv

from todo_database.autogenerate import deparse
from todo_database.catalog import snapshot
from todo_database.catalog.snapshot import Snapshot
from todo_database.online import forms as online
from todo_database.online.unique import ReplacePrimaryKeyOp

# SQLAlchemy's PostgreSQL reflection hands a NOT VALID CHECK's dialect_options to the
# constraint as a keyword it then cannot validate, and warns on every run that meets
# one; this module reads NOT VALID from the catalog itself.
warnings.filterwarnings(
    "ignore", message="Can't validate argument 'dialect_options'", category=sa.exc.SAWarning
)


@dataclass
class Live:
    """The database's CHECKs, foreign keys and plain indexes, by table and name."""

    #: CHECK expression as ``pg_get_expr`` prints it.
    checks: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    #: CHECKs and foreign keys that are NOT VALID.
    unvalidated: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: :func:`todo_database.autogenerate.deparse.index_shape` of indexes that back no constraint.
    indexes: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))


def read_live(held: Snapshot) -> Live:
    """The CHECKs, what is NOT VALID and the plain indexes of the run's `held`
    snapshot."""
    live = Live()
    for table, constraints in held.constraints.items():
        for name, constraint in constraints.items():
            if constraint.kind == "c" and constraint.expression is not None:
                live.checks[table][name] = constraint.expression
            if constraint.kind in ("c", "f") and not constraint.validated:
                live.unvalidated[table].add(name)
    for table, indexes in held.indexes.items():
        for name, index in indexes.items():
            if not index.backs_constraint:
                live.indexes[table][name] = deparse.index_shape(index.definition)
    return live


_live_per_run: WeakKeyDictionary[AutogenContext, Live] = WeakKeyDictionary()


def _live(autogen_context: AutogenContext) -> Live:
    if autogen_context not in _live_per_run:
        assert autogen_context.connection is not None
        held = snapshot.for_run(autogen_context.migration_context, autogen_context.connection)
        _live_per_run[autogen_context] = read_live(held)
    return _live_per_run[autogen_context]


def _check_on(table_name: str, name: str, expression: str) -> sa.CheckConstraint:
    """A CHECK as the database has it, on a stand-in table, for an operation's reverse.
    Its name is final (``op.f()`` in the revision): the naming convention, which
    revisions apply to plain names, must not be applied a second time."""
    check = sa.CheckConstraint(sa.text(expression), name=conv(name))
    sa.Table(table_name, sa.MetaData(), check)
    return check


def _touched_indexes(modify_ops: ops.ModifyTableOps) -> set[str]:
    return {
        str(operation.index_name)
        for operation in modify_ops.ops
        if isinstance(operation, ops.CreateIndexOp | ops.DropIndexOp)
    }


@comparators.dispatch_for("table")
def compare_declared_constraints(  # noqa: PLR0917  (the signature Alembic calls)
    autogen_context: AutogenContext,
    modify_ops: ops.ModifyTableOps,
    schema: str | None,
    table_name: str,
    conn_table: sa.Table | None,
    metadata_table: sa.Table | None,
) -> None:
    """CHECKs, index definitions, the primary key and validation of one table that
    both the models and the database have."""
    if conn_table is None or metadata_table is None or schema is not None:
        return
    if autogen_context.connection is None:
        return
    declared = deparse.for_run(autogen_context)
    live = _live(autogen_context)
    drops: list[MigrateOperation] = []
    adds: list[MigrateOperation] = []

    wanted = {
        deparse.check_name(metadata_table, check): check
        for check in deparse.declared_checks(metadata_table)
    }
    have = live.checks[table_name]
    for name, expression in sorted(have.items()):
        if name not in wanted or declared.checks[table_name].get(name) != expression:
            drops.append(
                ops.DropConstraintOp.from_constraint(_check_on(table_name, name, expression))
            )
    for name, check in wanted.items():
        if name not in have or declared.checks[table_name].get(name) != have[name]:
            adds.append(ops.CreateCheckConstraintOp.from_constraint(check))

    touched = _touched_indexes(modify_ops)
    reflected = {str(index.name): index for index in conn_table.indexes}
    for index in metadata_table.indexes:
        name = str(index.name)
        current = live.indexes[table_name].get(name)
        if name in touched or current is None or name not in reflected:
            continue
        if declared.indexes[table_name].get(name) != current:
            # Side by side, so that the table goes without the index only between the two.
            adds.append(ops.DropIndexOp.from_index(reflected[name]))
            adds.append(ops.CreateIndexOp.from_index(index))

    declared_key = [column.name for column in metadata_table.primary_key.columns]
    live_key = [column.name for column in conn_table.primary_key.columns]
    if declared_key and declared_key != live_key and not live_key:
        adds.append(ops.CreatePrimaryKeyOp.from_constraint(metadata_table.primary_key))
    elif declared_key and declared_key != live_key:
        # Not a drop and an add: the table would go without a key for the new one's build.
        adds.append(
            ReplacePrimaryKeyOp(
                table_name,
                str(metadata_table.primary_key.name),
                declared_key,
                str(conn_table.primary_key.name),
                live_key,
            )
        )

    replaced = {str(getattr(op, "constraint_name", "")) for op in drops}
    adds += [
        online.ValidateConstraintOp(table_name, name)
        for name in sorted(live.unvalidated[table_name] - replaced)
    ]
    modify_ops.ops[:0] = drops
    modify_ops.ops += adds


@renderers.dispatch_for(ops.CreatePrimaryKeyOp, replace=True)
def _render_create_primary_key(
    autogen_context: AutogenContext, operation: ops.CreatePrimaryKeyOp
) -> str:
    """Alembic renders no primary-key creation of its own (it never generates one)."""
    name = _render_gen_name(autogen_context, operation.constraint_name)
    columns = [str(column) for column in operation.columns]
    return f"op.create_primary_key({name!r}, {operation.table_name!r}, {columns!r})"


__all__ = ["Live", "compare_declared_constraints", "read_live"]
