"""The enum types the models' columns use: created, extended, dropped and compared.

Alembic leaves PostgreSQL's named enum types to SQLAlchemy's table events, which
create a type with its first table but never with a column added to a live table,
and never drop it: a new enum column on an existing table fails at deploy time, and
a downgrade leaves the type behind for the next upgrade to trip on. Here the types
are operations of their own:

* a type the models use and the database lacks is created first in the revision (so
  its downgrade drops it last, after the tables that used it);
* a type nothing uses any more is dropped last (its downgrade recreates it first);
* a value added is ``ALTER TYPE ... ADD VALUE`` in the same place (PostgreSQL 12+ runs
  it in a transaction; the value is usable from the next one);
* a value the models no longer list stays in the database, which cannot drop one (a
  downgrade of an added value leaves it too): it is no drift, but rows that still hold
  it are the author's to move first;
* values moved around are refused in one line: PostgreSQL cannot reorder them, and the
  way is a new type and a column that moves to it (expand, then contract).

Revisions render enum columns with ``create_type=False`` (:func:`render_enum`), so the
table events never create a type behind the operations' back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation
from alembic.operations.ops import UpgradeOps
from alembic.util import CommandError, DispatchPriority, PriorityDispatchResult

from todo_database.autogenerate import deparse
from todo_database.catalog import snapshot
from todo_database.online.forms import AutocommitBlockOp
from todo_database.operations.enums import AddEnumValueOp, CreateEnumOp, DropEnumOp


def render_enum(type_: sa.Enum, autogen_context: AutogenContext) -> str:
    """An enum column's type in a revision: the type is the operations' business."""
    autogen_context.imports.add("from sqlalchemy.dialects import postgresql")
    values = ", ".join(repr(value) for value in type_.enums)
    return f"postgresql.ENUM({values}, name={type_.name!r}, create_type=False)"


def declared_enums(tables: Sequence[sa.Table]) -> dict[str, tuple[str, ...]]:
    """The named native enum types the tables' columns use, with their values."""
    found: dict[str, tuple[str, ...]] = {}
    for table in tables:
        for column in table.columns:
            type_ = column.type
            if isinstance(type_, sa.Enum) and type_.native_enum and type_.name:
                found[type_.name] = tuple(type_.enums)
    return found


def additions(name: str, have: tuple[str, ...], want: tuple[str, ...]) -> list[AddEnumValueOp]:
    """The values `want` adds to `have`, each before the value that follows it; one
    line refusing what PostgreSQL cannot do to an enum (values the database has and
    the models do not list stay, see the module's docstring)."""
    kept = [value for value in have if value in want]
    if [value for value in want if value in have] != kept:
        raise CommandError(
            f"enum type {name!r} would reorder its values {kept}: PostgreSQL cannot; "
            "create a new type, move the column to it, then drop the old one"
        )
    added = []
    for index, value in enumerate(want):
        if value not in have:
            following = next((v for v in want[index + 1 :] if v in have), None)
            # Appended: after the last value, said so (squawk's
            # require-enum-value-ordering asks for a place either way).
            preceding = None if following else (want[index - 1] if index else None)
            added.append(AddEnumValueOp(name, value, following, preceding))
    return added


@comparators.dispatch_for("schema", priority=DispatchPriority.LAST)
def compare_enum_types(
    autogen_context: AutogenContext, upgrade_ops: UpgradeOps, schemas: set[str | None]
) -> Any:
    connection = autogen_context.connection
    if connection is None or None not in schemas:
        return PriorityDispatchResult.CONTINUE
    want = declared_enums(deparse.compared_tables(autogen_context))
    have = snapshot.for_run(autogen_context.migration_context, connection).enums
    first: list[MigrateOperation] = []
    for name, values in sorted(want.items()):
        if name not in have:
            first.append(CreateEnumOp(name, values))
        elif added := additions(name, have[name], values):
            # Committed before the revision's transaction: PostgreSQL refuses to use a
            # value in the transaction that added it ("unsafe use of new value").
            first.append(AutocommitBlockOp(list(added), [], first=True))
    last = [DropEnumOp(name, values) for name, values in sorted(have.items()) if name not in want]
    upgrade_ops.ops[:0] = first
    upgrade_ops.ops += last
    return PriorityDispatchResult.CONTINUE


__all__ = ["compare_enum_types", "render_enum"]
