"""Column changes on a live table in their online form, and what a revision's
docstring says about its steps.

Registered on :data:`todo_database.online.forms.rewriter`, for a table that exists before and
after the revision:

* **NOT NULL on an existing column** (``nullable=False``). A plain ``SET NOT NULL``
  scans the table under ACCESS EXCLUSIVE, and fails on the first NULL. Instead, in the
  online steps: the NULLs are filled from the column's server default by
  :class:`~todo_database.online.backfill.BackfillOp` (a batch per transaction); ``CHECK (col IS
  NOT NULL) NOT VALID`` is added (a moment's lock; new writes are checked from then
  on); the rows written NULL before it are filled too; the CHECK is validated (a scan
  that lets reads and writes through); ``SET NOT NULL`` then needs no scan, since
  PostgreSQL 12 takes the validated CHECK as proof; the CHECK is dropped. The CHECK is
  not added first because PostgreSQL checks a NOT VALID constraint on every update of
  an old row too: writers would fail on the rows not yet filled. Without a server
  default there is no value to fill: the revision validates only, and ``make revision``
  refuses when the database it compares with has NULLs in the column (declare a
  default, or fill them in a data migration first, with ``op.backfill``).
* **A new column whose default makes PostgreSQL rewrite the table**
  (``gen_random_uuid()``, ``clock_timestamp()``...: PostgreSQL 11+ stores a
  non-volatile default, a constant or ``now()``, in the catalog and rewrites nothing).
  PostgreSQL is asked, not a list of names: the column is added with its default to an
  empty temporary table, and a rewrite shows as a new file of it. The column is added
  nullable and without a default, its default is set (so new rows get it), the existing
  rows are backfilled, and a NOT NULL column then gets NOT NULL as above.
* **A type change** is written as Alembic writes it when PostgreSQL changes the type in
  place: a temporary copy of the table (its indexes, constraints and defaults) is given
  the new type, and neither the table nor an index may get a new file, nor the table be
  scanned (``varchar(n)`` to a larger ``n`` or to ``text``, a larger ``numeric``
  precision...). Otherwise ``make revision`` refuses in one line explaining the
  expand/contract way, unless the model accepts the rewrite:
  ``Column(..., info={"rewrite_acknowledged": "why"})`` (:data:`REWRITE_ACKNOWLEDGED`;
  it also accepts the rewrite of a new column's volatile default on a small table).
  The downgrade undoes the change and cannot be refused, but when PostgreSQL does not
  make the reverse change in place either (``varchar(80)`` back to ``varchar(40)``
  rewrites the table and fails on a longer value), ``make revision`` says so in one
  line and the revision's account of its downgrade says so too.

A table the revision creates or drops is left to the plain form. The generated
revision's docstring says, for every online form (these and the indexes and
constraints of :mod:`todo_database.online.forms`), what runs in which step
(:func:`finish`); squawk's ``changing-column-type``, which fires on any type change,
is answered in the revision with what PostgreSQL said.
"""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations, ops
from alembic.operations.ops import MigrationScript, OpContainer
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from todo_database.catalog.tables import not_null_state, relation_files
from todo_database.online import forms as online
from todo_database.online.backfill import BackfillOp, run_with_a_brief_lock
from todo_database.online.unique import AddConstraintUsingIndexOp
from todo_database.operations.enums import AddEnumValueOp

# Under the "migrations" logger alembic.ini configures, by the name its lines always had.
log = logging.getLogger("migrations.online_columns")

#: The column ``info`` key in which a model accepts a change that rewrites the table,
#: with the reason: ``Column("rank", BigInteger, info={REWRITE_ACKNOWLEDGED: "why"})``.
REWRITE_ACKNOWLEDGED = "rewrite_acknowledged"
#: PostgreSQL's limit on a name's length, in bytes; longer names are cut.
_NAME_BYTES = 63


def not_null_check_name(table: str, column: str) -> str:
    """The helper CHECK's name, as PostgreSQL will store it (cut to 63 bytes)."""
    name = f"{table}_{column}_not_null_online".encode()[:_NAME_BYTES]
    return name.decode(errors="ignore")


# --- NOT NULL through a validated CHECK ------------------------------------------------


def _column_state(operations: Operations, table: str, column: str) -> tuple[bool, bool | None]:
    """(whether `column` is NOT NULL, whether its helper CHECK is validated: None when
    there is none)."""
    quote = operations.impl.dialect.identifier_preparer.quote
    check = not_null_check_name(table, column)
    return not_null_state(operations.get_bind(), quote(table), column, check)


@Operations.register_operation("add_not_null_check")
@dataclass
class AddNotNullCheckOp(MigrateOperation):
    """``CHECK (column IS NOT NULL) NOT VALID`` (:func:`not_null_check_name`): from now
    on no write may leave the column NULL; the rows already there are not checked. It
    takes ACCESS EXCLUSIVE for a moment, waited for at most 100 ms at a time. Nothing
    when the column is NOT NULL already, or the CHECK is there (a rerun)."""

    table_name: str
    column_name: str

    @classmethod
    def add_not_null_check(cls, operations: Operations, table_name: str, column_name: str) -> None:
        operations.invoke(cls(table_name, column_name))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("add_not_null_check", self.table_name, self.column_name)


@Operations.implementation_for(AddNotNullCheckOp)
def _add_not_null_check(operations: Operations, operation: AddNotNullCheckOp) -> None:
    quote = operations.impl.dialect.identifier_preparer.quote
    table, column = quote(operation.table_name), quote(operation.column_name)
    check = quote(not_null_check_name(operation.table_name, operation.column_name))
    statement = f"ALTER TABLE {table} ADD CONSTRAINT {check} CHECK ({column} IS NOT NULL) NOT VALID"
    if operations.get_context().as_sql:
        # As written, for squawk too: it knows a validated CHECK lets SET NOT NULL skip
        # the scan. (Offline SQL runs once, on a database without leftovers.)
        operations.execute(statement)
        return
    not_null, validated = _column_state(operations, operation.table_name, operation.column_name)
    if not not_null and validated is None:
        run_with_a_brief_lock(operations.get_bind(), statement, operation.table_name)


@renderers.dispatch_for(AddNotNullCheckOp)
def _render_add_not_null_check(context: AutogenContext, operation: AddNotNullCheckOp) -> str:
    return f"op.add_not_null_check({operation.table_name!r}, {operation.column_name!r})"


@Operations.register_operation("set_not_null_by_check")
@dataclass
class SetNotNullByCheckOp(MigrateOperation):
    """The helper CHECK of :class:`AddNotNullCheckOp` validated (a scan that lets reads
    and writes through), then ``SET NOT NULL``, which finds it and skips its own scan
    (PostgreSQL 12+), then the CHECK dropped: each a statement of its own, the last two
    holding ACCESS EXCLUSIVE for a moment. A rerun does only what is left."""

    table_name: str
    column_name: str

    @classmethod
    def set_not_null_by_check(
        cls, operations: Operations, table_name: str, column_name: str
    ) -> None:
        operations.invoke(cls(table_name, column_name))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("set_not_null_by_check", self.table_name, self.column_name)


@Operations.implementation_for(SetNotNullByCheckOp)
def _set_not_null_by_check(operations: Operations, operation: SetNotNullByCheckOp) -> None:
    quote = operations.impl.dialect.identifier_preparer.quote
    name = operation.table_name
    table, column = quote(name), quote(operation.column_name)
    check = quote(not_null_check_name(name, operation.column_name))
    validate = f"ALTER TABLE {table} VALIDATE CONSTRAINT {check}"
    set_not_null = f"ALTER TABLE {table} ALTER COLUMN {column} SET NOT NULL"
    drop = f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {check}"
    if operations.get_context().as_sql:
        for statement in (validate, set_not_null, drop):
            operations.execute(statement)
        return
    bind = operations.get_bind()
    not_null, validated = _column_state(operations, name, operation.column_name)
    if not not_null:
        if validated is None:
            raise CommandError(
                f"{name}.{operation.column_name} has no CHECK {check} to prove it NOT NULL: "
                "op.add_not_null_check must run first"
            )
        if not validated:
            bind.exec_driver_sql(validate)
        run_with_a_brief_lock(bind, set_not_null, name)
    if validated is not None:
        run_with_a_brief_lock(bind, drop, name)


@renderers.dispatch_for(SetNotNullByCheckOp)
def _render_set_not_null_by_check(context: AutogenContext, operation: SetNotNullByCheckOp) -> str:
    return f"op.set_not_null_by_check({operation.table_name!r}, {operation.column_name!r})"


# --- asking PostgreSQL what a change does to a table -------------------------------------

_PROBE = "todo_migrations_probe"
_SCANS = f"SELECT pg_stat_get_xact_numscans('pg_temp.{_PROBE}'::regclass)"
#: A time zone other than UTC while probing: PostgreSQL 12+ changes timestamp to
#: timestamptz in place only when the session's zone is UTC, which a deploy's may not be.
_PROBE_TIME_ZONE = "Europe/Paris"


def _files(connection: Connection) -> dict[str, int]:
    return relation_files(connection, f"pg_temp.{_PROBE}")


def _what_it_does(connection: Connection, create: Sequence[str], change: str) -> str | None:
    """What `change` does to the temporary table the statements `create` make (named
    ``_PROBE``): None when nothing but the catalog changes, else what PostgreSQL does
    to the rows or says against it. Inside a savepoint that is rolled back: nothing is
    kept."""
    savepoint = connection.begin_nested()
    try:
        connection.exec_driver_sql(f"SET LOCAL TimeZone = '{_PROBE_TIME_ZONE}'")
        for statement in create:
            connection.exec_driver_sql(statement.replace("%", "%%"))
        files = _files(connection)
        scans = connection.exec_driver_sql(_SCANS).scalar()
        try:
            connection.exec_driver_sql(change.replace("%", "%%"))
        except DBAPIError as exc:
            return "PostgreSQL refuses it: " + str(exc.orig).strip().splitlines()[0]
        if _files(connection) != files:
            return "rewrites the table and rebuilds its indexes"
        if connection.exec_driver_sql(_SCANS).scalar() != scans:
            return "scans the table"
        return None
    finally:
        savepoint.rollback()


def _quote(context: MigrationContext, name: str) -> str:
    return str(context.dialect.identifier_preparer.quote(name))


def _type_sql(context: MigrationContext, type_: Any) -> str:
    return str(sa.types.to_instance(type_).compile(dialect=context.dialect))


def type_change_effect(
    connection: Connection,
    table: str,
    column: str,
    new_type: str,
    *,
    using: str | None = None,
    from_type: str | None = None,
) -> str | None:
    """What changing `column` of `table` to `new_type` (SQL) does to the table: None
    for nothing but the catalog, else what PostgreSQL does to the rows or says against
    it; asked of a temporary copy of the table (its indexes, constraints and defaults,
    no rows), its column first changed to `from_type` when given (the type an upgrade
    gives it, for the change its downgrade makes)."""
    quote = connection.dialect.identifier_preparer.quote
    create = [f"CREATE TEMPORARY TABLE {_PROBE} (LIKE {quote(table)} INCLUDING ALL)"]
    alter = f"ALTER TABLE pg_temp.{_PROBE} ALTER COLUMN {quote(column)} TYPE"
    if from_type is not None:
        create.append(f"{alter} {from_type}")
    change = f"{alter} {new_type}" + (f" USING {using}" if using else "")
    return _what_it_does(connection, create, change)


def _type_change(context: MigrationContext, operation: ops.AlterColumnOp) -> str | None:
    """What the type change of `operation` does to its table (None: nothing but the
    catalog), asked of a temporary copy of the table."""
    assert context.connection is not None
    return type_change_effect(
        context.connection,
        operation.table_name,
        operation.column_name,
        _type_sql(context, operation.modify_type),
        using=operation.kw.get("postgresql_using"),
    )


def _default_rewrites(context: MigrationContext, column: sa.Column[Any]) -> bool:
    """Whether adding `column` with its server default rewrites the table: asked of an
    empty temporary table (no row: nothing is evaluated). A type this revision creates
    (an enum) is not there yet: the default is then tried as text; when PostgreSQL can
    take neither, the answer is yes (the online form is right either way)."""
    assert context.connection is not None
    # No statement to compile: only the column's default, as DDL writes it.
    compiler = context.dialect.ddl_compiler(context.dialect, None)  # type: ignore[arg-type]
    default = compiler.get_column_default_string(column)
    create = [f"CREATE TEMPORARY TABLE {_PROBE} ()"]
    for type_sql in (_type_sql(context, column.type), "text"):
        change = f"ALTER TABLE pg_temp.{_PROBE} ADD COLUMN probed {type_sql} DEFAULT {default}"
        effect = _what_it_does(context.connection, create, change)
        if effect is None or not effect.startswith("PostgreSQL refuses"):
            return effect is not None
    return True


def _has_rows(context: MigrationContext, table: str, where: str = "true") -> bool:
    """Whether `table` holds a row for which `where` holds, in the database compared
    with (not when row-level security hides its rows: it cannot tell, and the deploy's
    statements will)."""
    assert context.connection is not None
    quoted = _quote(context, table)
    found = context.connection.exec_driver_sql(
        f"SELECT NOT row_security_active(%(table)s) AND EXISTS "
        f"(SELECT FROM {quoted} WHERE {where})",
        {"table": quoted},
    )
    return bool(found.scalar())


def _has_nulls(context: MigrationContext, table: str, column: str) -> bool:
    return _has_rows(context, table, f"{_quote(context, column)} IS NULL")


# --- the rewrites ---------------------------------------------------------------------------

#: What the rewrites noted about the upgrade, for its docstring and squawk answers.
_notes: WeakKeyDictionary[MigrationContext, list[_Note]] = WeakKeyDictionary()
#: Marks, in an operation's ``info``, an operation of a downgrade (:func:`prepare`).
_DOWNGRADE = "todo_migrations_downgrade"


@dataclass(frozen=True)
class _Note:
    """A paragraph of the docstring, or a squawk rule answered and why."""

    text: str = ""
    rule: str | None = None
    reason: str = ""


#: In an operation's ``info``: what the docstring says it does, when more than its kind.
_SAYS = "todo_migrations_says"


def prepare(directives: Sequence[MigrationScript]) -> None:
    """Before the rewrites: mark the downgrades' column changes. A downgrade undoes its
    upgrade (a type widened is narrowed again): its type changes are not judged like
    those the models ask for, and its docstring notes are not the upgrade's."""
    for script in directives:
        for container in script.downgrade_ops_list:
            for operation in _walk(container.ops):
                if isinstance(operation, ops.AlterColumnOp | ops.AddColumnOp):
                    operation.info[_DOWNGRADE] = True


def _in_downgrade(operation: MigrateOperation) -> bool:
    return bool(operation.info.get(_DOWNGRADE))


def _walk(operations: Iterable[MigrateOperation]) -> Iterator[MigrateOperation]:
    for operation in operations:
        yield operation
        if isinstance(operation, OpContainer | online.AutocommitBlockOp):
            yield from _walk(operation.ops)


def _model_table(context: MigrationContext, table: str) -> sa.Table | None:
    metadata = context.opts.get("target_metadata")
    return metadata.tables.get(table) if isinstance(metadata, sa.MetaData) else None


def _model_column(context: MigrationContext, table: str, column: str) -> sa.Column[Any] | None:
    model = _model_table(context, table)
    return model.columns.get(column) if model is not None else None


def _walk_key(context: MigrationContext, table: str, what: str) -> tuple[str, ...]:
    """The model's primary key of `table`, which a backfill walks."""
    model = _model_table(context, table)
    key = tuple(column.name for column in model.primary_key) if model is not None else ()
    if not key:
        raise CommandError(
            f"{what}: {table!r} has no primary key to walk in batches: declare one, or "
            f'accept a rewrite of the table in the model (info={{"{REWRITE_ACKNOWLEDGED}": '
            '"why"}})'
        )
    return key


def _online(context: MigrationContext, operation: MigrateOperation) -> bool:
    table = getattr(operation, "table_name", None)
    return getattr(operation, "schema", None) in (None, "public") and (
        table in online.existing_tables(context)
    )


def _note(context: MigrationContext, operation: MigrateOperation, note: _Note) -> None:
    if not _in_downgrade(operation):
        _notes.setdefault(context, []).append(note)


def _not_null_steps(
    context: MigrationContext,
    table: str,
    column: str,
    *,
    fill: bool,
    key: tuple[str, ...],
    stragglers: bool,
) -> list[MigrateOperation]:
    """The online steps that make `column` NOT NULL (see the module): filled from its
    default first when `fill`, and again after the CHECK for the rows written NULL
    before it when `stragglers` (an existing column, which running code may still
    write NULL into)."""
    where = f"{_quote(context, column)} IS NULL"
    steps: list[MigrateOperation] = []
    if fill:
        steps.append(BackfillOp(table, {column: "DEFAULT"}, where, key))
    steps.append(AddNotNullCheckOp(table, column))
    if fill and stragglers:
        again = "Again, for the rows written NULL before the CHECK existed."
        steps.append(BackfillOp(table, {column: "DEFAULT"}, where, key, comment=again))
    steps.append(SetNotNullByCheckOp(table, column))
    return steps


def _has_server_default(operation: ops.AlterColumnOp) -> bool:
    if operation.modify_server_default is not False:
        return operation.modify_server_default is not None
    return operation.existing_server_default not in (False, None)


def _judge_type_change(
    context: MigrationContext, operation: ops.AlterColumnOp, column: sa.Column[Any] | None
) -> None:
    """Keep a type change PostgreSQL makes in place, or one the model accepts; refuse the
    rest in one line."""
    where = f"{operation.table_name}.{operation.column_name}"
    old = _type_sql(context, operation.existing_type) if operation.existing_type else "?"
    new = _type_sql(context, operation.modify_type)
    effect = _type_change(context, operation)
    if effect is None:
        said = (
            f"{where} {old} to {new} is in place: PostgreSQL neither rewrites nor scans "
            "the table (asked at make revision)"
        )
        operation.info[_SAYS] = (
            f"change {where} from {old} to {new}, in place (PostgreSQL said it neither "
            "rewrites nor scans the table)"
        )
        _note(context, operation, _Note(rule="changing-column-type", reason=said))
        return
    accepted = column.info.get(REWRITE_ACKNOWLEDGED) if column is not None else None
    if accepted:
        operation.info[_SAYS] = (
            f"change {where} from {old} to {new}, which {effect} under ACCESS EXCLUSIVE: "
            f"accepted in the model ({accepted})"
        )
        reason = f"{where} {old} to {new} {effect}: accepted in the model ({accepted})"
        _note(context, operation, _Note(rule="changing-column-type", reason=reason))
        return
    if effect.startswith("PostgreSQL refuses"):
        # No cast: the plain ALTER would fail; with a USING it would rewrite the table.
        effect = f"cannot be changed in place ({effect}), and with a USING it rewrites the table"
    raise CommandError(
        f"{where}: {old} to {new} {effect} under ACCESS EXCLUSIVE (every read and write "
        "waits until it is done); change it expand/contract instead: add a column of the "
        "new type, fill it with op.backfill in a data migration, move readers and writers "
        "to it, then drop the old one; or accept the rewrite in the model: "
        f'Column(..., info={{"{REWRITE_ACKNOWLEDGED}": "why"}})'
    )


def _judge_downgrade_type_change(context: MigrationContext, operation: ops.AlterColumnOp) -> None:
    """A downgrade's type change undoes its upgrade's and cannot be refused; but when
    PostgreSQL does not make it in place (a ``varchar(80)`` narrowed back to
    ``varchar(40)`` rewrites the table, checking every value), the downgrade holds the
    table under ACCESS EXCLUSIVE for the rewrite and fails on any value written since
    that the old type cannot hold. Asked of a temporary copy of the table given the
    upgrade's type first; said in one line at ``make revision`` and in the revision's
    account of its downgrade."""
    if operation.existing_type is None or operation.modify_type is None:
        return
    assert context.connection is not None
    where = f"{operation.table_name}.{operation.column_name}"
    upgraded = _type_sql(context, operation.existing_type)
    old = _type_sql(context, operation.modify_type)
    try:
        effect = type_change_effect(
            context.connection,
            operation.table_name,
            operation.column_name,
            old,
            using=operation.kw.get("postgresql_using"),
            from_type=upgraded,
        )
    except DBAPIError as exc:  # the copy could not be given the upgrade's type (no cast)
        reason = str(exc.orig).strip().splitlines()[0]
        effect = f"may rewrite the table (PostgreSQL could not be asked: {reason})"
    if effect is None:
        return
    if effect.startswith("PostgreSQL refuses"):
        effect = f"cannot be made in place ({effect})"
    risk = (
        f"{effect} under ACCESS EXCLUSIVE, and fails on any value written since that {old} "
        "cannot hold"
    )
    operation.info[_SAYS] = f"change {where} back from {upgraded} to {old}, which {risk}"
    log.warning(
        "%s: the downgrade changes it back from %s to %s, which %s: before downgrading, "
        "make every value fit %s",
        where,
        upgraded,
        old,
        risk,
        old,
    )


@online.rewriter.rewrites(ops.AlterColumnOp)
def alter_column_online(
    context: MigrationContext, revision: Any, operation: ops.AlterColumnOp
) -> Any:
    if not _online(context, operation):
        return operation
    table = operation.table_name
    name = operation.modify_name or operation.column_name
    column = _model_column(context, table, name)
    if operation.modify_type is not None and not _in_downgrade(operation):
        _judge_type_change(context, operation, column)
    elif operation.modify_type is not None:
        _judge_downgrade_type_change(context, operation)
    if operation.modify_nullable and _in_downgrade(operation):
        # Undoing the online NOT NULL: backed out after its validation failed, the
        # upgrade left its CHECK behind.
        check = not_null_check_name(table, operation.column_name)
        return [operation, online.DropConstraintLeftOp(table, check)]
    if operation.modify_nullable is not False or operation.existing_nullable is False:
        return operation
    fill = _has_server_default(operation)
    if (
        not fill
        and not _in_downgrade(operation)
        and _has_nulls(context, table, operation.column_name)
    ):
        raise CommandError(
            f"{table}.{name} becomes NOT NULL, but it holds NULLs here and declares no "
            "server default to fill them from: declare one (server_default=...), or fill "
            "them first in a data migration of its own (op.backfill, docs/online.md "
            '"Backfills"), then run make revision again'
        )
    key = _walk_key(context, table, f"{table}.{name} becoming NOT NULL") if fill else ()
    if not fill:
        _note(
            context,
            operation,
            _Note(
                f"{table}.{name} has no server default to fill NULLs from: a row still "
                "NULL when this runs fails the validation (fill it, then rerun)."
            ),
        )
    operation.modify_nullable = None
    steps = _not_null_steps(context, table, name, fill=fill, key=key, stragglers=True)
    kept = [operation] if operation.has_changes() or operation.modify_name else []
    return [*kept, online.AutocommitBlockOp(steps, [])]


@online.rewriter.rewrites(ops.AddColumnOp)
def add_column_online(context: MigrationContext, revision: Any, operation: ops.AddColumnOp) -> Any:
    column = operation.column
    default = column.server_default
    if (
        _online(context, operation)
        and not _in_downgrade(operation)
        and not column.nullable
        and default is None
        and column.computed is None
        and column.identity is None
        and _has_rows(context, operation.table_name)
    ):
        raise CommandError(
            f"{operation.table_name}.{column.name} is added NOT NULL without a server "
            f"default, but {operation.table_name} has rows here: the upgrade would fail "
            "on the first of them; declare a server default (server_default=...), or add "
            "it nullable, fill it with op.backfill in a data migration, then make it NOT "
            "NULL"
        )
    if (
        not _online(context, operation)
        or not isinstance(default, sa.DefaultClause)
        or column.computed is not None
        or column.identity is not None
        or not _default_rewrites(context, column)
    ):
        return operation
    table, name = operation.table_name, column.name
    where = f"{table}.{name}"
    accepted = column.info.get(REWRITE_ACKNOWLEDGED)
    if accepted:
        said = (
            f"{where} with a default that rewrites the table under ACCESS EXCLUSIVE: "
            f"accepted in the model ({accepted})"
        )
        operation.info[_SAYS] = f"add column {said}"
        _note(context, operation, _Note(rule="adding-field-with-default", reason=f"{said}"))
        return operation
    key = _walk_key(context, table, f"{where}, added with a default that rewrites the table")
    added = sa.Column(name, column.type, nullable=True, comment=column.comment)
    set_default = ops.AlterColumnOp(
        table,
        name,
        schema=operation.schema,
        modify_server_default=default,
        existing_type=column.type,
        existing_nullable=True,
    )
    fill = BackfillOp(table, {name: "DEFAULT"}, f"{_quote(context, name)} IS NULL", key)
    steps: list[MigrateOperation] = [fill]
    if not column.nullable:
        steps = _not_null_steps(context, table, name, fill=True, key=key, stragglers=False)
    return [
        ops.AddColumnOp(table, added, schema=operation.schema),
        set_default,
        online.AutocommitBlockOp(steps, []),
    ]


# --- what the revision says it does -------------------------------------------------------


def finish(context: MigrationContext, directives: Sequence[MigrationScript]) -> None:
    """After the rewrites: the template's ``steps`` (the docstring's account of the
    revision's steps, empty for a revision without online ones) and
    ``squawk_acknowledged`` (the answers to squawk the rewrites found)."""
    notes = _notes.pop(context, [])
    template_args = context.opts.get("template_args")
    if template_args is None or len(directives) != 1:
        return
    (script,) = directives
    template_args["steps"] = _docstring(script, notes)
    answers: dict[str, list[str]] = {}
    for note in notes:
        if note.rule:
            answers.setdefault(note.rule, []).append(note.reason)
    template_args["squawk_acknowledged"] = {
        rule: "; ".join(reasons) for rule, reasons in answers.items()
    }


def _docstring(script: MigrationScript, notes: Sequence[_Note]) -> str:
    parts = []
    for title, container in (
        ("Steps", script.upgrade_ops_list[0] if script.upgrade_ops_list else None),
        ("Downgrade", script.downgrade_ops_list[0] if script.downgrade_ops_list else None),
    ):
        steps = _steps(container.ops) if container is not None else []
        if steps:
            parts.append(f"{title}:\n" + "\n".join(steps))
    if said := [note.text for note in notes if note.text]:
        parts.append("\n".join(_wrap(text, "", "") for text in said))
    text = "\n\n".join(parts)
    return (text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"') + "\n\n") if text else ""


def _wrap(text: str, first: str, rest: str) -> str:
    return textwrap.fill(
        text, width=88, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )


def _steps(operations: Sequence[MigrateOperation]) -> list[str]:
    """The numbered steps of an upgrade or downgrade; none when all of it is one plain
    transaction."""
    before = [o for o in operations if isinstance(o, online.AutocommitBlockOp) and o.first]
    after = [o for o in operations if isinstance(o, online.AutocommitBlockOp) and not o.first]
    if not before and not after and not any(_SAYS in o.info for o in _walk(operations)):
        return []
    in_transaction = (o for o in operations if not isinstance(o, online.AutocommitBlockOp))
    transaction = [p for o in _walk(in_transaction) if (p := _transaction_phrase(o))]
    steps: list[tuple[str, list[str], str]] = []
    # A block of guards alone (a failed build's leftover dropped) says nothing to a reader.
    first = [p for block in before for o in block.ops if (p := _online_phrase(o))]
    if first:
        steps.append(("Before the transaction, each committed on its own:", first, ""))
    if transaction:
        steps.append(("In one transaction:", transaction, ""))
    phrases = [p for block in after for o in block.ops if (p := _online_phrase(o))]
    if phrases:
        if any(isinstance(o, online.TransactionOnceOp) for o in operations):
            end = (
                "A failure here leaves the transaction committed: a rerun skips it and "
                "runs these again, each safe to repeat."
            )
        else:
            end = "Each is safe to repeat: a rerun after a failure runs them again."
        what = "Each in a short transaction of its own:"
        if transaction:
            what = "After it commits, each in a short transaction of its own:"
        steps.append((what, phrases, end))
    lines = []
    for number, (what, phrases, end) in enumerate(steps, start=1):
        lines.append(_wrap(what, f"{number}. ", "   "))
        for index, phrase in enumerate(phrases):
            mark = "." if index == len(phrases) - 1 else ";"
            lines.append(_wrap(phrase + mark, "   - ", "     "))
        if end:
            lines.append(_wrap(end, "   ", "   "))
    return lines


def _target(operation: Any) -> str:
    table = getattr(operation, "table_name", None) or getattr(operation, "source_table", None)
    column = getattr(operation, "column_name", None)
    if table and column:
        return f"{table}.{column}"
    return str(table or getattr(operation, "name", None) or "")


def _transaction_phrase(operation: MigrateOperation) -> str | None:  # noqa: PLR0911
    """A few words on what `operation` does in the transaction; None for what says
    nothing to a reader (guards, marks, containers)."""
    if isinstance(
        operation,
        OpContainer
        | online.CommittedBeforeOp
        | online.MarkCommittedOp
        | online.DropConstraintLeftOp
        | online.DropConstraintIfNotValidOp
        | online.DropIndexIfInvalidOp,
    ):
        return None
    if isinstance(operation, online.LockTablesOp):
        tables = ", ".join(table for table, _ in operation.locks)
        return f"lock {tables} first (each waited for {operation.wait} at most)"
    if isinstance(operation, ops.AddColumnOp):
        said = operation.info.get(_SAYS)
        return str(said or f"add column {operation.table_name}.{operation.column.name}")
    if isinstance(operation, ops.DropColumnOp):
        return f"drop column {operation.table_name}.{operation.column_name}"
    if isinstance(operation, ops.AlterColumnOp):
        return _alter_phrase(operation)
    if isinstance(operation, ops.CreateTableOp | ops.DropTableOp):
        verb = "create" if isinstance(operation, ops.CreateTableOp) else "drop"
        return f"{verb} table {operation.table_name}"
    if isinstance(operation, ops.CreateIndexOp | ops.DropIndexOp):
        verb = "create" if isinstance(operation, ops.CreateIndexOp) else "drop"
        return f"{verb} index {operation.index_name}"
    if isinstance(operation, ops.AddConstraintOp):
        name = getattr(operation, "constraint_name", None)
        if getattr(operation, "kw", {}).get("postgresql_not_valid"):
            return f"add {name} NOT VALID (new writes are checked at once, old rows later)"
        return f"add constraint {name}"
    if isinstance(operation, ops.DropConstraintOp):
        return f"drop constraint {operation.constraint_name}"
    return _generic_phrase(operation)


def _alter_phrase(operation: ops.AlterColumnOp) -> str:
    where = f"{operation.table_name}.{operation.column_name}"
    parts = []
    if operation.modify_name:
        parts.append(f"rename {where} to {operation.modify_name}")
    if operation.modify_type is not None:
        parts.append(f"change the type of {where} to {operation.modify_type}")
    if _SAYS in operation.info:  # the type change, as PostgreSQL or the model said it
        parts[-1] = str(operation.info[_SAYS])
    if operation.modify_server_default is None:
        parts.append(f"drop the default of {where}")
    elif isinstance(operation.modify_server_default, sa.DefaultClause):
        default = operation.modify_server_default.arg
        text = default.text if isinstance(default, sa.TextClause) else repr(default)
        parts.append(f"set the default of {where} to {text} (for new rows)")
    if operation.modify_nullable is not None:
        parts.append(f"{'drop' if operation.modify_nullable else 'set'} NOT NULL on {where}")
    if operation.modify_comment is not False:
        parts.append(f"comment on {where}")
    return ", ".join(parts) or f"alter {where}"


def _generic_phrase(operation: MigrateOperation) -> str | None:
    try:
        name = operation.to_diff_tuple()[0]
    except (NotImplementedError, AttributeError, IndexError):
        name = type(operation).__name__.removesuffix("Op")
    if not isinstance(name, str):
        return None
    target = _target(operation)
    return f"{name.replace('_', ' ')} {target}".strip()


def _online_phrase(operation: MigrateOperation) -> str | None:  # noqa: PLR0911
    """A few words on one online step; None for a guard that goes with the next."""
    if isinstance(
        operation,
        online.DropIndexIfInvalidOp | online.DropConstraintIfNotValidOp | online.MarkCommittedOp,
    ):
        return None
    if isinstance(operation, ops.CreateIndexOp):
        return (
            f"build index {operation.index_name} on {operation.table_name} concurrently "
            "(writes go on; a failed build's INVALID leftover is dropped first)"
        )
    if isinstance(operation, ops.DropIndexOp):
        return f"drop index {operation.index_name} concurrently (writes go on)"
    if isinstance(operation, online.ValidateConstraintOp):
        return (
            f"validate {operation.constraint_name} on {operation.table_name} (a scan that "
            "lets reads and writes through)"
        )
    if isinstance(operation, BackfillOp):
        assignments = ", ".join(f"{c} = {v}" for c, v in operation.values.items())
        again = "again, for the rows written NULL before the CHECK: " if operation.comment else ""
        return (
            f"backfill {operation.table_name} {again}SET {assignments} WHERE "
            f"{operation.where}, {operation.batch_size:,} rows a batch"
        )
    if isinstance(operation, AddNotNullCheckOp):
        table, column = operation.table_name, operation.column_name
        return (
            f"add CHECK {not_null_check_name(table, column)} ({column} IS NOT NULL) NOT "
            f"VALID on {table}: from then on no write leaves it NULL (a moment's lock, "
            "waited for 100 ms at a time)"
        )
    if isinstance(operation, SetNotNullByCheckOp):
        return (
            f"validate that CHECK, SET NOT NULL on {operation.table_name}."
            f"{operation.column_name} (no scan: the CHECK proves it), drop the CHECK"
        )
    if isinstance(operation, AddConstraintUsingIndexOp):
        swap = (
            f", in place of {operation.replaces} in the same statement"
            if operation.replaces
            else ""
        )
        return (
            f"attach index {operation.index_name} to {operation.table_name} as "
            f"{operation.kind} {operation.constraint_name}{swap} (a moment's lock)"
        )
    if isinstance(operation, AddEnumValueOp):
        place = f" before {operation.before!r}" if operation.before else ""
        place = place or (f" after {operation.after!r}" if operation.after else "")
        return f"add value {operation.value!r} to {operation.name}{place}"
    return _generic_phrase(operation)
