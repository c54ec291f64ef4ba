"""What the models declare, as PostgreSQL itself prints it.

The catalog never holds an expression as written: ``pg_policies``, ``pg_get_expr``
and ``pg_get_indexdef`` print it deparsed (``(user_id = ( SELECT NULLIF(...) AS
"nullif"))``). Comparing that with the declared text would find differences that
are only spelling, forever. So every declared policy, CHECK constraint and index is
created by PostgreSQL on a temporary twin of its table and read back from the
catalog, and both sides are compared as PostgreSQL prints them:

* each twin is a temporary table with the model's name and the model's columns. It
  hides the real table inside the savepoint, so an expression that names its own
  table (a link table's ``todo_tag.todo_id``) or another model's table, even one
  this very revision creates, means there what it will mean on the real tables;
* everything is created in one batch inside one savepoint that is rolled back: the
  real tables are never locked or changed, and the whole cost is a few round trips
  per autogenerate run, whatever the number of tables;
* a declaration PostgreSQL refuses (an expression that does not parse, a column
  that does not exist) is reported now, in one line, rather than at deploy time;
* a policy may name a table with its schema (``public.project_member``): that name
  reaches past the twins to the real table, so a model table the database lacks (one
  this very revision creates) gets a stand-in there too, its columns only, for the
  savepoint's length. The policies are read back with ``pg_temp`` searched last and
  its name taken out, so that every table prints as the catalog will print it on the
  real tables, named with its schema or not.

Declared functions get twins in ``pg_temp`` too, to be read back as ``pg_proc`` holds
them; one the database lacks is also created in its schema for the savepoint's
length, for the policies that call it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from weakref import WeakKeyDictionary

import sqlalchemy as sa
from alembic.autogenerate.api import AutogenContext
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from models.security import Function
from todo_database.catalog.functions import Held, read_definers, read_functions, read_names
from todo_database.catalog.schemas import TEMPORARY
from todo_database.catalog.security import read_policies, read_policy_tables
from todo_database.catalog.tables import read_constraints, read_indexes
from todo_database.declarations import definer_safety
from todo_database.declarations import row_security as declarations
from todo_database.operations import functions as routines
from todo_database.operations.policies import policy_clauses

#: Index definitions compare from their access method on: the name and the table
#: (``ON pg_temp_3.todo`` against ``ON public.todo``) say nothing about the index.
_USING = " USING "


def index_shape(definition: str) -> str:
    """``pg_get_indexdef``'s text without the index's and the table's names."""
    unique = "UNIQUE " if definition.startswith("CREATE UNIQUE INDEX") else ""
    return unique + definition.split(_USING, 1)[-1]


@dataclass
class Declared:
    """The models' policies, CHECK constraints, indexes and functions as PostgreSQL
    prints them, by table and name."""

    #: (USING, WITH CHECK) as ``pg_policies`` shows them.
    policies: dict[str, dict[str, tuple[str | None, str | None]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    #: The expression as ``pg_get_expr(conbin, conrelid)`` shows it.
    checks: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    #: :func:`index_shape` of ``pg_get_indexdef``.
    indexes: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    #: The other tables each policy reads, by (table, policy).
    policy_reads: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    #: The declared functions as made in ``pg_temp``, by (name, identity arguments).
    functions: dict[tuple[str, str], Held] = field(default_factory=dict)
    #: What would let a declared SECURITY DEFINER function run its caller's objects.
    definer_problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Statement:
    what: str
    sql: str


#: ``pg_temp`` last, so that a real table named like a twin (``public.todo``) prints as
#: it prints without twins; a twin then prints with its temporary schema's name.
_TEMPORARY_LAST = """
    SELECT set_config('search_path', current_setting('search_path') || ', pg_temp', true),
           pg_my_temp_schema()::regnamespace::text
"""
_MISSING = """
    SELECT name FROM unnest(%(names)s::text[]) AS name
    WHERE to_regclass(format('public.%%I', name)) IS NULL
"""


def check_name(table: sa.Table, check: sa.CheckConstraint) -> str:
    """The name a CHECK gets in the database (the naming convention applied)."""
    name = check.name
    if not isinstance(name, str) or not name:
        text = str(check.sqltext)
        raise CommandError(
            f"CHECK ({text}) on {table.name!r} has no name: give it one "
            "(CheckConstraint(..., name=...)), so that revisions can change and drop it"
        )
    return name


def declared_checks(table: sa.Table) -> list[sa.CheckConstraint]:
    return [c for c in table.constraints if isinstance(c, sa.CheckConstraint)]


#: Policies to deparse, by table: (name, ``AS ... FOR ... USING (...) WITH CHECK (...)``).
PolicyClauses = Mapping[str, Sequence[tuple[str, str]]]


def _function_statements(declared: Sequence[Function]) -> list[_Statement]:
    """Each declared function's twin in ``pg_temp`` (what it is, as PostgreSQL makes
    it), and the function itself in its schema when it is missing there, for the
    policies that call it (a function this very revision creates)."""
    twins = [
        _Statement(
            f"function {function.name!r}",
            routines.definition_sql(function, schema="pg_temp"),
        )
        for function in declared
    ]
    missing = [
        _Statement(
            f"function {function.name!r}",
            f"""DO $missing$
BEGIN
    IF NOT EXISTS (
        SELECT FROM pg_proc p
        WHERE p.pronamespace = {_literal(function.schema)}::regnamespace
          AND p.proname = {_literal(function.name)}
          AND p.proargtypes = (SELECT t.proargtypes FROM pg_proc t
                               WHERE t.pronamespace = pg_my_temp_schema()
                                 AND t.proname = {_literal(function.name)})) THEN
        {routines.definition_sql(function)};
    END IF;
END
$missing$""",
        )
        for function in declared
    ]
    return twins + missing


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _statements(
    connection: Connection,
    tables: Sequence[sa.Table],
    policies: PolicyClauses,
    declared_functions: Sequence[Function] = (),
) -> list[_Statement]:
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    twins: list[_Statement] = []
    inside: list[_Statement] = _function_statements(declared_functions)
    missing = set(
        connection.exec_driver_sql(_MISSING, {"names": [table.name for table in tables]}).scalars()
    )
    for table in tables:
        columns = ", ".join(
            f"{quote(column.name)} {column.type.compile(dialect=dialect)}"
            for column in table.columns
        )
        name = quote(table.name)
        twins.append(
            _Statement(f"the columns of {table.name!r}", f"CREATE TEMP TABLE {name} ({columns})")
        )
        if table.name in missing:
            stand_in = f"CREATE TABLE public.{name} ({columns})"
            twins.append(_Statement(f"the columns of {table.name!r}", stand_in))
        for check in declared_checks(table):
            sql = str(sa.schema.AddConstraint(check).compile(dialect=dialect))
            what = f"CHECK {check_name(table, check)!r} on {table.name!r}"
            inside.append(_Statement(what, sql))
        for index in table.indexes:
            sql = str(sa.schema.CreateIndex(index).compile(dialect=dialect))
            inside.append(_Statement(f"index {index.name!r} on {table.name!r}", sql))
        for policy, clauses in policies.get(table.name, ()):
            sql = f"CREATE POLICY {quote(policy)} ON {name} {clauses}"
            inside.append(_Statement(f"policy {policy!r} on {table.name!r}", sql))
    # Every twin first: an expression may name any model's table.
    return twins + inside


def _create_enum_types(connection: Connection, tables: Iterable[sa.Table]) -> None:
    """Enum types the twins' columns need and the database lacks (a new type)."""
    for table in tables:
        for column in table.columns:
            if isinstance(column.type, sa.Enum) and column.type.native_enum:
                column.type.create(connection, checkfirst=True)


def _run(connection: Connection, statements: Sequence[_Statement]) -> None:
    """All `statements` in one round trip, their effects kept in the caller's
    savepoint; when PostgreSQL refuses one, find which (one by one, in a savepoint of
    its own) and say so."""
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(";\n".join(s.sql for s in statements))
        return
    except DBAPIError:
        pass
    with connection.begin_nested() as savepoint:
        for statement in statements:
            try:
                with connection.begin_nested():
                    connection.exec_driver_sql(statement.sql)
            except DBAPIError as exc:
                reason = (str(exc.orig).strip().splitlines() or ["refused"])[0]
                savepoint.rollback()
                raise CommandError(f"{statement.what}: {reason}") from None
        savepoint.rollback()
    raise CommandError("the declared policies, CHECKs and indexes were refused as a batch")


def deparse(
    connection: Connection,
    tables: Sequence[sa.Table],
    policies: PolicyClauses | None = None,
    declared_functions: Sequence[Function] = (),
) -> Declared:
    """`tables`' CHECK constraints and indexes, `policies` by table name, and
    `declared_functions`, as PostgreSQL prints them (see the module's docstring)."""
    statements = _statements(connection, tables, policies or {}, declared_functions)
    declared = Declared()
    if not statements:
        return declared
    twins = connection.begin_nested()
    try:
        _create_enum_types(connection, tables)
        _run(connection, statements)
        declared.policy_reads.update(read_policy_tables(connection, TEMPORARY))
        for table, constraints in read_constraints(connection, TEMPORARY).items():
            for name, constraint in constraints.items():
                if constraint.kind == "c" and constraint.expression is not None:
                    declared.checks[table][name] = constraint.expression
        for table, indexes in read_indexes(connection, TEMPORARY).items():
            for name, index in indexes.items():
                declared.indexes[table][name] = index_shape(index.definition)
        if declared_functions:
            declared.functions = read_functions(connection, TEMPORARY)
            twins_of_definers = read_definers(connection, f"p.pronamespace = {TEMPORARY}")
            if twins_of_definers:
                declared.definer_problems = definer_safety.problems(
                    twins_of_definers, read_names(connection)
                )
        # Last: the search path changes for what is left of the savepoint.
        _, temporary = connection.exec_driver_sql(_TEMPORARY_LAST).one()
        for table, policies_read in read_policies(connection, TEMPORARY).items():
            for name, policy in policies_read.items():
                declared.policies[table][name] = (
                    _without_schema(policy.using, temporary),
                    _without_schema(policy.with_check, temporary),
                )
    finally:
        twins.rollback()
    return declared


def _without_schema(expression: str | None, schema: str) -> str | None:
    """`expression` with the twins' temporary schema taken out of the names it
    qualifies (a table in a query as ``pg_temp.``, a ``regclass`` literal as
    ``pg_temp_3.``): without the twins, those tables are visible unqualified."""
    if expression is None:
        return None
    return re.sub(rf'(?<![\w$"])(?:{re.escape(schema)}|pg_temp)\.', "", expression)


_per_run: WeakKeyDictionary[AutogenContext, Declared] = WeakKeyDictionary()


def compared_tables(autogen_context: AutogenContext) -> list[sa.Table]:
    """The models' tables an autogenerate run compares (its object filters applied)."""
    metadata = autogen_context.metadata
    if not isinstance(metadata, sa.MetaData):
        return []
    return [
        table
        for table in metadata.sorted_tables
        if table.schema is None
        and autogen_context.run_object_filters(table, table.name, "table", False, None)
    ]


def for_run(autogen_context: AutogenContext) -> Declared:
    """The models of an autogenerate run, deparsed once for all its comparators: the
    CHECKs and indexes of every compared table, and, unless row security is left out
    of the comparison, every declared policy (the declarations checked first)."""
    if autogen_context not in _per_run:
        connection = autogen_context.connection
        assert connection is not None, "autogenerate compares with a database"
        tables = compared_tables(autogen_context)
        policies: dict[str, list[tuple[str, str]]] = {}
        declared_functions: tuple[Function, ...] = ()
        if autogen_context.opts.get(declarations.COMPARE_OPTION, True):
            declarations.check_declarations(tables)
            for table in tables:
                security = declarations.row_security(table)
                policies[table.name] = [
                    (policy.name, policy_clauses(policy))
                    for policy in (security.policies if security else ())
                ]
            declared_functions = declarations.declared_functions(tables)
        deparsed = deparse(connection, tables, policies, declared_functions)
        if deparsed.definer_problems:
            raise declarations.DeclarationError("; ".join(deparsed.definer_problems))
        if policies:
            declarations.check_no_recursion(tables, deparsed.policy_reads)
        _per_run[autogen_context] = deparsed
    return _per_run[autogen_context]
