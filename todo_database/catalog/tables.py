"""Tables as the catalog holds them: their columns, constraints, indexes and the
sequences their serial columns own, of a whole schema (:mod:`.schemas`); and the few
facts of one table that the online forms ask at the moment they act, mid-upgrade.

Expressions are as PostgreSQL prints them (``pg_get_expr``, ``pg_get_indexdef``,
``pg_get_constraintdef``): autogenerate compares them with the declarations printed
the same way (:mod:`todo_database.autogenerate.deparse`), the docs show them.

Imports nothing of the models: the deploy runner loads this module, through the online
forms, before ``env.py`` imports them (to report a model that does not import in one
line).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy.engine import Connection

from todo_database.catalog.schemas import CURRENT, PUBLIC


@dataclass(frozen=True)
class Column:
    name: str
    #: ``format_type``: ``character varying(255)``, ``timestamp with time zone``.
    type: str
    nullable: bool
    #: The default's expression, or a generated column's.
    default: str | None
    #: ``a`` (ALWAYS) or ``d`` (BY DEFAULT) for an identity column, else empty.
    identity: str = ""
    #: ``s`` (STORED) for a generated column, else empty.
    generated: str = ""


@dataclass(frozen=True)
class Constraint:
    name: str
    #: ``pg_constraint.contype``: p, u, f, c or x.
    kind: str
    #: ``pg_get_constraintdef``: ``CHECK ((length(title) > 0)) NOT VALID``.
    definition: str
    #: A CHECK's expression alone (``pg_get_expr``), None for other kinds.
    expression: str | None
    columns: tuple[str, ...] = ()
    referred_table: str | None = None
    referred_columns: tuple[str, ...] = ()
    #: ``pg_constraint.confdeltype`` of a foreign key (a, r, c, n, d), else empty.
    on_delete: str = ""
    validated: bool = True


@dataclass(frozen=True)
class Index:
    name: str
    #: ``pg_get_indexdef``.
    definition: str
    valid: bool = True
    #: Whether it is a primary key's, a unique or an exclusion constraint's.
    backs_constraint: bool = False


_TABLES = """
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,
           pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
    FROM pg_class c
    LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = {schema} AND c.relkind IN ('r', 'p')
    ORDER BY c.relname, a.attnum
"""


def read_tables(connection: Connection, schema: str = CURRENT) -> dict[str, dict[str, Column]]:
    """The tables of `schema` (``alembic_version`` too), each with its columns in order,
    by name."""
    tables: dict[str, dict[str, Column]] = {}
    for table, name, type_, nullable, default, identity, generated in connection.exec_driver_sql(
        _TABLES.format(schema=schema)
    ):
        columns = tables.setdefault(table, {})
        if name is not None:
            columns[name] = Column(name, type_, bool(nullable), default, identity, generated)
    return tables


# NOT NULL constraints (contype 'n', PostgreSQL 18+) are the columns' nullability.
_CONSTRAINTS = """
    SELECT t.relname, con.conname, con.contype::text, pg_get_constraintdef(con.oid),
           pg_get_expr(con.conbin, con.conrelid),
           ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, o)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
                 ORDER BY k.o),
           f.relname::text,
           ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, o)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
                 ORDER BY k.o),
           con.confdeltype::text, con.convalidated
    FROM pg_constraint con
    JOIN pg_class t ON t.oid = con.conrelid
    LEFT JOIN pg_class f ON f.oid = con.confrelid
    WHERE t.relnamespace = {schema} AND con.contype IN ('p', 'u', 'f', 'c', 'x')
"""


def read_constraints(
    connection: Connection, schema: str = CURRENT
) -> dict[str, dict[str, Constraint]]:
    """The primary keys, unique, foreign key, CHECK and exclusion constraints of
    `schema`'s tables, by table and name."""
    found: dict[str, dict[str, Constraint]] = defaultdict(dict)
    for row in connection.exec_driver_sql(_CONSTRAINTS.format(schema=schema)):
        table, name, kind, definition, expression, keys, referred, referred_keys, *rest = row
        on_delete, validated = rest
        found[table][name] = Constraint(
            name,
            kind,
            definition,
            expression,
            tuple(keys),
            referred,
            tuple(referred_keys),
            on_delete if kind == "f" else "",
            bool(validated),
        )
    return found


_INDEXES = """
    SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid), x.indisvalid,
           EXISTS (SELECT FROM pg_constraint con
                   WHERE con.conindid = x.indexrelid AND con.conrelid = x.indrelid
                     AND con.contype IN ('p', 'u', 'x'))
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    WHERE t.relnamespace = {schema}
"""


def read_indexes(connection: Connection, schema: str = CURRENT) -> dict[str, dict[str, Index]]:
    """The indexes of `schema`'s tables, by table and name."""
    found: dict[str, dict[str, Index]] = defaultdict(dict)
    for table, name, definition, valid, backs in connection.exec_driver_sql(
        _INDEXES.format(schema=schema)
    ):
        found[table][name] = Index(name, definition, bool(valid), bool(backs))
    return found


# Sequences a serial column owns (deptype 'a'; identity columns' are 'i').
_OWNED_SEQUENCES = """
    SELECT t.relname, a.attname, s.relname
    FROM pg_class s
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
    JOIN pg_class t ON t.oid = d.refobjid
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
    WHERE s.relkind = 'S' AND t.relnamespace = {schema}
"""


def read_owned_sequences(
    connection: Connection, schema: str = CURRENT
) -> dict[str, dict[str, str]]:
    """The sequence each serial column of `schema` owns, by table and column."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    for table, column, sequence in connection.exec_driver_sql(
        _OWNED_SEQUENCES.format(schema=schema)
    ):
        found[table][column] = sequence
    return found


_EXTENSION_RELATIONS = """
    SELECT c.relname
    FROM pg_depend d
    JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
    WHERE d.deptype = 'e' AND c.relnamespace = {schema}
"""


def read_extension_relations(connection: Connection, schema: str = PUBLIC) -> frozenset[str]:
    """The relations of `schema` that an extension owns (``spatial_ref_sys``...)."""
    return frozenset(
        connection.exec_driver_sql(_EXTENSION_RELATIONS.format(schema=schema)).scalars()
    )


# --- one table, asked while an upgrade runs ------------------------------------------
# Each takes the table or index as SQL text for ``regclass`` (quoted as a statement
# would name it) and reads the catalog as it is at that moment.


def index_is_invalid(connection: Connection, index: str) -> bool | None:
    """Whether `index` is INVALID (a concurrent build that failed); None when there is
    no such index."""
    invalid: bool | None = connection.exec_driver_sql(
        "SELECT NOT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%(name)s)",
        {"name": index},
    ).scalar()
    return invalid


_ATTACHED = """
    SELECT con.conindid = to_regclass(%(index)s) OR ours.indkey = theirs.indkey
    FROM pg_constraint con
    JOIN pg_index ours ON ours.indexrelid = con.conindid
    LEFT JOIN pg_index theirs ON theirs.indexrelid = to_regclass(%(index)s)
    WHERE con.conrelid = to_regclass(%(table)s) AND con.conname = %(name)s
      AND con.contype = %(type)s
"""


def constraint_on_index(
    connection: Connection, table: str, name: str, kind: str, index: str
) -> bool | None:
    """Whether `table`'s constraint `name` of `kind` (``p``, ``u``) stands on `index`
    or on an index of the same columns; None when the table has no such constraint."""
    row = connection.exec_driver_sql(
        _ATTACHED, {"table": table, "index": index, "name": name, "type": kind}
    ).first()
    return None if row is None else row[0]


_NULLABLE_INDEX_COLUMNS = """
    SELECT a.attname
    FROM pg_index x
    JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey)
    WHERE x.indexrelid = to_regclass(%(index)s) AND NOT a.attnotnull
    ORDER BY a.attnum
"""


def nullable_index_columns(connection: Connection, index: str) -> list[str]:
    """The columns of `index` that may hold NULL, in the table's order."""
    return list(connection.exec_driver_sql(_NULLABLE_INDEX_COLUMNS, {"index": index}).scalars())


_UNIQUE_KEYS = """
    SELECT array_agg(a.attname ORDER BY k.ordinality), bool_and(a.attnotnull)
    FROM pg_index x
    CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ordinality)
    JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
    WHERE x.indrelid = %(table)s::regclass AND x.indisunique AND x.indisvalid
      AND x.indpred IS NULL AND x.indexprs IS NULL
    GROUP BY x.indexrelid
"""


def unique_keys(connection: Connection, table: str) -> list[tuple[tuple[str, ...], bool]]:
    """The columns of each valid unique index of `table` on plain columns (no
    expression, no WHERE), with whether all of them are NOT NULL."""
    return [
        (tuple(columns), bool(not_null))
        for columns, not_null in connection.exec_driver_sql(_UNIQUE_KEYS, {"table": table})
    ]


_NOT_NULL_STATE = """
    SELECT a.attnotnull, c.convalidated
    FROM pg_attribute a
    LEFT JOIN pg_constraint c ON c.conrelid = a.attrelid AND c.conname = %(check)s
    WHERE a.attrelid = %(table)s::regclass AND a.attname = %(column)s
"""


def not_null_state(
    connection: Connection, table: str, column: str, check: str
) -> tuple[bool, bool | None]:
    """(whether `table`'s `column` is NOT NULL, whether its CHECK `check` is
    validated: None when the table has no such CHECK)."""
    row = connection.exec_driver_sql(
        _NOT_NULL_STATE, {"table": table, "column": column, "check": check}
    ).one()
    return bool(row[0]), row[1]


_FILES = """
    SELECT c.relname, c.relfilenode FROM pg_class c
    WHERE c.oid = %(table)s::regclass
       OR c.oid IN (SELECT indexrelid FROM pg_index WHERE indrelid = %(table)s::regclass)
"""


def relation_files(connection: Connection, table: str) -> dict[str, int]:
    """The file each of `table` and its indexes is stored in (``relfilenode``): a
    change that rewrites one gives it a new file."""
    return {name: node for name, node in connection.exec_driver_sql(_FILES, {"table": table})}
