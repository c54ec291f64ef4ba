"""The schema as a reader sees it: built on a throwaway database, read back from the
catalog, rendered as Markdown.

* :func:`throwaway_database` and :func:`migrate` build a schema the way a deploy
  does (``alembic upgrade`` by a tree's own ``alembic.ini``, ``env.py`` and revisions)
  on a database of its own, named ``todo_review_*`` and always dropped afterwards;
* :func:`read_schema` reads tables, columns, indexes, constraints, row security and
  the schema's functions through :mod:`todo_database.catalog`;
* :func:`er_diagram` renders a Mermaid ``erDiagram``, ownership marked;
* :func:`security_matrix` renders role x table x command with the policy
  expressions and column-level privileges, and marks what changed when given the
  schema before;
* :func:`function_reference` renders each function: its signature, attributes,
  owner, who may execute it and which policies call it;
* :func:`render` is the whole reference, ``specs/001-database-layer/schema.md``.

``python -m todo_database.review.docs`` (``make docs``) writes that file from a database
migrated to head; ``tests/review/test_schema_docs.py`` fails when it is out of date. The
throwaway databases live on the embedded server, or on the server whose admin URL
``REVIEW_DATABASE_URL`` names; ``DATABASE_URL`` is never used.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import textwrap
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import MetaData, pool
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine import URL, Connection

import models
from models.security import PUBLIC, ROLES, Policy
from todo_database.catalog.functions import VOLATILITY, read_routines
from todo_database.catalog.security import Catalog, read_catalog
from todo_database.catalog.tables import Index, read_constraints, read_indexes, read_tables
from todo_database.declarations.row_security import declared_row_security
from todo_database.deploy import cli as alembic_cli
from todo_database.deploy import database

#: Where ``make docs`` writes the reference.
DOCS_PATH = database.PROJECT_ROOT / "specs" / "001-database-layer" / "schema.md"

#: An admin URL of the server for throwaway databases, instead of the embedded one.

#: The commands row security distinguishes, in the order the matrix lists them.
COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE")

_CONSTRAINT_KINDS = {
    "p": "primary key",
    "u": "unique",
    "f": "foreign key",
    "c": "check",
    "x": "exclusion",
}
_ON_DELETE = {"a": "", "r": "restrict", "c": "cascade", "n": "set null", "d": "set default"}


class DocsError(Exception):
    """A schema that could not be built or read, explained in one line."""


def say(message: str, *, tool: str = "docs") -> None:
    """Progress, for people: on stderr, so stdout stays the report."""
    print(f"{tool}: {message}", file=sys.stderr, flush=True)


# --- building a schema --------------------------------------------------------------


@contextmanager
def throwaway_database(admin: URL, label: str, *, tool: str = "docs") -> Iterator[URL]:
    """A new, empty database ``todo_review_<label>_<random>``, dropped however this ends."""
    with ExitStack() as cleanup:
        try:
            url = cleanup.enter_context(
                database.throwaway_database(admin, database.REVIEW_DATABASE_PREFIX, label)
            )
        except Exception as exc:  # noqa: BLE001  (psycopg raises many kinds; one line here)
            reason = database.first_line(exc)
            raise DocsError(
                f"cannot create a database on {database.mask(admin)}: {reason}"
            ) from None
        say(f"created throwaway database {url.database} on {database.mask(admin)}", tool=tool)
        cleanup.callback(say, f"dropping {url.database}", tool=tool)
        yield url


def migrate(tree: Path, url: URL, revision: str = "head") -> None:
    """``alembic upgrade <revision>`` on `url`, run by `tree`'s own ``alembic.ini``,
    ``env.py``, models and revisions in a child process, as a deploy runs it."""
    environment = dict(os.environ)
    paths = [str(tree), environment.get("PYTHONPATH", "")]
    environment["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
    result = alembic_cli.run(
        ["upgrade", revision],
        cwd=tree,
        database_url=url.render_as_string(hide_password=False),
        environment=environment,
    )
    if result.returncode != 0:
        reason = alembic_cli.failure_reason(result)
        raise DocsError(f"alembic upgrade {revision} (in {tree}) failed: {reason}")


# --- reading a schema ---------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool
    default: str | None

    def describe(self) -> str:
        default = f", default {self.default}" if self.default else ""
        return f"{self.type}, {'nullable' if self.nullable else 'NOT NULL'}{default}"


@dataclass(frozen=True)
class Constraint:
    name: str
    kind: str
    definition: str
    columns: tuple[str, ...] = ()
    referred_table: str | None = None
    referred_columns: tuple[str, ...] = ()
    on_delete: str = ""


@dataclass(frozen=True)
class Table:
    name: str
    columns: dict[str, Column]
    indexes: dict[str, Index]
    constraints: dict[str, Constraint]
    #: Row-level security: (enabled, forced).
    row_security: tuple[bool, bool]


@dataclass(frozen=True)
class Routine:
    """A function (or procedure) of the schema, as ``pg_proc`` describes it."""

    #: ``schema.name(arguments)``, the arguments as PostgreSQL prints them (defaults too).
    signature: str
    kind: str
    returns: str
    language: str
    volatility: str
    security_definer: bool
    #: Its own settings (``proconfig``), as stored: ``search_path=""``.
    settings: tuple[str, ...]
    owner: str
    #: Every grantee that may execute it (:data:`PUBLIC` included), owner too.
    executors: tuple[str, ...]
    #: The policies whose expressions call it: (table, policy).
    policies: tuple[tuple[str, str], ...]
    body: str


@dataclass
class Schema:
    """What a database holds in its current schema (``alembic_version`` aside)."""

    tables: dict[str, Table] = field(default_factory=dict)
    security: Catalog = field(default_factory=Catalog)
    #: The revision the database is at, when it has one.
    revision: str | None = None
    #: The schema's functions that no extension brought, by signature.
    functions: dict[str, Routine] = field(default_factory=dict)


_KINDS = {"f": "function", "p": "procedure"}
_VERSION = "SELECT version_num FROM alembic_version"


def read_schema(connection: Connection) -> Schema:
    """The tables, columns, indexes, constraints, row security and functions
    `connection` sees, read by :mod:`todo_database.catalog`."""
    security = read_catalog(connection)
    held = read_tables(connection)
    held.pop("alembic_version", None)
    indexes = read_indexes(connection)
    constraints = read_constraints(connection)
    revision = None
    if connection.exec_driver_sql("SELECT to_regclass('alembic_version')").scalar():
        revision = connection.exec_driver_sql(_VERSION).scalar()
    return Schema(
        tables={
            name: Table(
                name,
                {
                    column.name: Column(
                        column.name,
                        column.type,
                        column.nullable,
                        _default(column.default, column.identity, column.generated),
                    )
                    for column in held[name].values()
                },
                {index.name: index for _, index in sorted(indexes.get(name, {}).items())},
                {
                    constraint.name: Constraint(
                        constraint.name,
                        _CONSTRAINT_KINDS[constraint.kind],
                        constraint.definition,
                        constraint.columns,
                        constraint.referred_table,
                        constraint.referred_columns,
                        _ON_DELETE.get(constraint.on_delete, ""),
                    )
                    for _, constraint in sorted(constraints.get(name, {}).items())
                },
                security.switches[name],
            )
            for name in sorted(held)
        },
        security=security,
        revision=revision,
        functions=read_functions(connection),
    )


def read_functions(connection: Connection) -> dict[str, Routine]:
    """The functions and procedures of the current schema, by signature."""
    found = {}
    for routine in read_routines(connection):
        shape = routine.shape
        found[routine.signature] = Routine(
            routine.signature,
            _KINDS[routine.kind],
            shape.result,
            shape.language,
            VOLATILITY[shape.volatility],
            shape.security_definer,
            shape.settings,
            routine.owner,
            tuple(sorted(routine.grantees, key=lambda r: (r != routine.owner, r == PUBLIC, r))),
            routine.policies,
            shape.body,
        )
    return dict(sorted(found.items()))


def read_database(url: URL) -> Schema:
    engine = database.create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return read_schema(connection)
    finally:
        engine.dispose()


def owner_columns(metadata: MetaData) -> dict[str, str]:
    """Each table whose rows belong to one user, with the column that says whose: the
    user's id (``owner_column`` of its row-security declaration in ``models/``) or the
    reference to the parent row it is owned through."""
    owners = {}
    for table, declaration in declared_row_security(metadata):
        if declaration.through is not None:
            owners[table.name] = declaration.through.column
        elif declaration.owner_column:
            owners[table.name] = declaration.owner_column
    return owners


def _default(default: str | None, identity: str, generated: str) -> str | None:
    if identity:
        return f"generated {'always' if identity == 'a' else 'by default'} as identity"
    if generated:
        return f"generated always as ({default}) stored"
    return default


# --- Markdown helpers ---------------------------------------------------------------


def code(text: str) -> str:
    """`text` as an inline code span that survives a Markdown table cell."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def table_rows(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("\n", " ") for cell in row) + " |" for row in rows]
    return lines


# --- the entity-relationship diagram ------------------------------------------------

_MERMAID_TYPES = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "time with time zone": "timetz",
    "time without time zone": "time",
    "character varying": "varchar",
    "double precision": "float8",
    "bit varying": "varbit",
}


def _mermaid_type(type_: str) -> str:
    base = re.sub(r"\(.*?\)", "", type_).strip()
    array = base.endswith("[]")
    base = _MERMAID_TYPES.get(base.removesuffix("[]"), base.removesuffix("[]"))
    word = re.sub(r"[^A-Za-z0-9_]", "_", base)
    return word + ("[]" if array else "")


def _mermaid_word(name: str) -> str:
    word = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return word if re.match(r"[A-Za-z_]", word) else f"_{word}"


def _entity(name: str) -> str:
    return '"' + name.replace('"', "'") + '"'


def er_diagram(schema: Schema, owners: Mapping[str, str]) -> list[str]:
    """A Mermaid ``erDiagram``: every table, its columns and keys, every foreign key.

    A foreign key through a table's declared owner column is labelled ``owns`` (the
    user owns the rows); the owner column itself is commented ``owner``.
    """
    lines = ["```mermaid", "erDiagram"]
    relationships = []
    for table in schema.tables.values():
        for constraint in table.constraints.values():
            if constraint.kind != "foreign key" or constraint.referred_table is None:
                continue
            nullable = any(table.columns[c].nullable for c in constraint.columns)
            unique = any(
                other.kind in ("primary key", "unique") and other.columns == constraint.columns
                for other in table.constraints.values()
            )
            parent = "|o" if nullable else "||"
            child = "o|" if unique else "o{"
            owned = owners.get(table.name) in constraint.columns
            label = "owns" if owned else ", ".join(constraint.columns)
            relationships.append(
                f"    {_entity(constraint.referred_table)} {parent}--{child} "
                f'{_entity(table.name)} : "{label}"'
            )
    lines += sorted(relationships)
    for table in schema.tables.values():
        lines.append(f"    {_entity(table.name)} {{")
        for column in table.columns.values():
            keys = []
            for kind, mark in (("primary key", "PK"), ("foreign key", "FK"), ("unique", "UK")):
                if any(
                    c.kind == kind
                    and column.name in c.columns
                    and (kind != "unique" or len(c.columns) == 1)
                    for c in table.constraints.values()
                ):
                    keys.append(mark)
            line = f"        {_mermaid_type(column.type)} {_mermaid_word(column.name)}"
            if keys:
                line += " " + ", ".join(keys)
            if owners.get(table.name) == column.name:
                line += ' "owner"'
            lines.append(line)
        lines.append("    }")
    lines.append("```")
    return lines


# --- the row-security matrix --------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    """One policy's say on one command: its expression, and how it combines."""

    policy: str
    expression: str
    permissive: bool = True

    def render(self) -> str:
        prefix = "" if self.permissive else "AND restrictive "
        return f"{prefix}{code(self.expression)} ({self.policy})"


@dataclass(frozen=True)
class Access:
    """What one role may do with one command on one table."""

    granted: bool
    row_security: bool
    using: tuple[Clause, ...] = ()
    check: tuple[Clause, ...] = ()
    #: When the privilege is held on some columns only: it, as SQL grants it
    #: (``SELECT (id, name)``); the other columns are out of reach whatever the policies.
    on_columns: str | None = None

    def verdict(self) -> str:
        if not self.granted:
            return "not granted"
        granted = "granted" if self.on_columns is None else f"granted {self.on_columns}"
        if not self.row_security:
            return f"{granted}, RLS off: ⚠️ every row"
        if not any(clause.permissive for clause in (*self.using, *self.check)):
            return f"{granted}, no policy: no row"
        return granted

    def describe(self) -> str:
        parts = [self.verdict()]
        if self.using:
            parts.append("USING " + render_clauses(self.using))
        if self.check:
            parts.append("WITH CHECK " + render_clauses(self.check))
        return "; ".join(parts)


def render_clauses(clauses: Sequence[Clause]) -> str:
    permissive = [clause.render() for clause in clauses if clause.permissive]
    restrictive = [clause.render() for clause in clauses if not clause.permissive]
    return " ".join([" OR ".join(permissive), *restrictive]).strip()


AccessKey = tuple[str, str, str]

#: Privileges in the order ``GRANT`` lists them.
PRIVILEGES = (
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "MAINTAIN",
)

# Column names as PostgreSQL's own GRANT needs them: "userId", "user" quoted.
_quote = PGDialect().identifier_preparer.quote  # type: ignore[no-untyped-call]


def on_columns(privilege: str, columns: Iterable[str]) -> str:
    """`privilege` on `columns` as SQL grants it: ``SELECT (id, image, name)``."""
    return f"{privilege} ({', '.join(_quote(column) for column in sorted(columns))})"


def held_privileges(security: Catalog, table: str, role: str) -> list[str]:
    """What `role` itself holds on `table`, each as SQL grants it: a table privilege
    by name (``INSERT``), a column privilege with its columns (``SELECT (id, name)``);
    a column privilege that the table privilege covers is left out."""
    whole = security.grants.get((table, role), frozenset())
    columns = {
        privilege: held
        for privilege, held in security.column_grants.get((table, role), {}).items()
        if privilege not in whole and held
    }
    ranked = sorted({*whole, *columns}, key=lambda p: (_rank(p), p))
    return [on_columns(p, columns[p]) if p in columns else p for p in ranked]


def describe_privileges(security: Catalog, table: str, role: str) -> str:
    """:func:`held_privileges` in one line, ``nothing`` when there are none."""
    return ", ".join(held_privileges(security, table, role)) or "nothing"


def _rank(privilege: str) -> int:
    return PRIVILEGES.index(privilege) if privilege in PRIVILEGES else len(PRIVILEGES)


def grantees(security: Catalog, table: str) -> list[str]:
    """The roles (and PUBLIC, last) holding a privilege on `table` or on its columns."""
    found = {role for (name, role), held in security.grants.items() if name == table and held}
    found |= {
        role
        for (name, role), held in security.column_grants.items()
        if name == table and any(held.values())
    }
    return sorted(found, key=lambda r: (r == PUBLIC, r))


def _applies(policy: Policy, role: str, command: str) -> bool:
    return policy.command in (command, "ALL") and (role in policy.roles or PUBLIC in policy.roles)


def _check_expression(policy: Policy) -> str | None:
    if policy.with_check is not None:
        return policy.with_check
    return policy.using if policy.command in ("ALL", "UPDATE") else None


def access_matrix(schema: Schema) -> dict[AccessKey, Access]:
    """(table, role, command) -> :class:`Access`, for every role that has a privilege
    or a policy there; PUBLIC's privileges count for every role."""
    security = schema.security
    matrix: dict[AccessKey, Access] = {}
    for table in schema.tables.values():
        enabled = table.row_security[0]
        policies = sorted(security.policies.get(table.name, {}).values(), key=lambda p: p.name)
        roles = {*ROLES, *grantees(security, table.name)}
        roles |= {role for policy in policies for role in policy.roles}
        public_privileges = security.grants.get((table.name, PUBLIC), frozenset())
        public_columns = security.column_grants.get((table.name, PUBLIC), {})
        for role in sorted(roles, key=lambda r: (r == PUBLIC, r)):
            privileges = security.grants.get((table.name, role), frozenset()) | public_privileges
            own_columns = security.column_grants.get((table.name, role), {})
            for command in COMMANDS:
                columns = own_columns.get(command, frozenset()) | public_columns.get(
                    command, frozenset()
                )
                applying = [p for p in policies if _applies(p, role, command)]
                using = tuple(
                    Clause(p.name, p.using, p.permissive)
                    for p in applying
                    if command in ("SELECT", "UPDATE", "DELETE") and p.using is not None
                )
                check = tuple(
                    Clause(p.name, expression, p.permissive)
                    for p in applying
                    if command in ("INSERT", "UPDATE")
                    and (expression := _check_expression(p)) is not None
                )
                granted = command in privileges
                partly = None if granted or not columns else on_columns(command, columns)
                if granted or partly or applying:
                    matrix[(table.name, role, command)] = Access(
                        granted or partly is not None, enabled, using, check, partly
                    )
    return matrix


def security_matrix(schema: Schema, before: Schema | None = None) -> list[str]:
    """The matrix as a Markdown table; with `before`, a last column says what changed
    and rows that are gone are listed, struck through."""
    after_matrix = access_matrix(schema)
    before_matrix = access_matrix(before) if before is not None else {}
    header = [
        "table",
        "role",
        "command",
        "access",
        "rows it reaches (USING)",
        "rows it writes (WITH CHECK)",
    ]
    if before is not None:
        header.append("change")
    keys = sorted(
        {*after_matrix, *before_matrix},
        key=lambda k: (k[0], k[1] == PUBLIC, k[1], COMMANDS.index(k[2])),
    )
    rows = []
    for key in keys:
        table, role, command = key
        access = after_matrix.get(key)
        previous = before_matrix.get(key)
        shown = access or previous
        assert shown is not None
        cells = [
            code(table),
            "PUBLIC" if role == PUBLIC else code(role),
            command,
            shown.verdict(),
            render_clauses(shown.using) or "—",
            render_clauses(shown.check) or "—",
        ]
        if before is not None:
            if access is None:
                cells = [f"~~{cell}~~" if cell != "—" else cell for cell in cells]
                cells.append("🗑️ removed")
            elif previous is None:
                cells.append("🆕 added")
            elif previous != access:
                cells.append(f"✏️ changed; was: {previous.describe()}")
            else:
                cells.append("")
        rows.append(cells)
    for unreachable in schema.tables:
        if not any(key[0] == unreachable for key in keys):
            row = [code(unreachable), "—", "—", "no role has any privilege", "—", "—"]
            rows.append([*row, ""] if before is not None else row)
    rows.sort(key=lambda row: row[0].strip("~"))
    return table_rows(header, rows)


def row_security_summary(schema: Schema) -> list[str]:
    """One line per table: row security enabled and forced, or not."""
    lines = []
    for table in schema.tables.values():
        enabled, forced = table.row_security
        state = (
            "enabled, forced"
            if enabled and forced
            else "enabled, not forced"
            if enabled
            else "**disabled**"
        )
        lines.append(f"- {code(table.name)}: row-level security {state}")
    return lines


# --- functions ----------------------------------------------------------------------


def _grantee(role: str) -> str:
    return "PUBLIC" if role == PUBLIC else code(role)


def function_reference(function: Routine) -> list[str]:
    """One function: what it is, whose rights it runs with, who may call it, which
    policies call it, and its body."""
    executors = [
        _grantee(role)
        + (" (owner)" if role == function.owner else "")
        + (" (every role)" if role == PUBLIC else "")
        for role in function.executors
    ]
    security = (
        f"SECURITY DEFINER: runs with the rights of its owner, {code(function.owner)}"
        if function.security_definer
        else "SECURITY INVOKER: runs with the rights of its caller"
    )
    properties = [
        ["kind", function.kind],
        ["returns", code(function.returns) if function.returns else "—"],
        ["language", function.language],
        ["volatility", function.volatility],
        ["security", security],
        ["settings", ", ".join(code(s) for s in function.settings) or "none"],
        ["owner", code(function.owner)],
        ["EXECUTE", ", ".join(executors) or "nobody but superusers"],
        [
            "called by policies",
            ", ".join(f"{code(policy)} on {code(table)}" for table, policy in function.policies)
            or "none",
        ],
    ]
    fence = "```"
    while fence in function.body:
        fence += "`"
    body = textwrap.dedent(function.body.strip("\n")).strip()
    return [
        f"### {code(function.signature)}",
        "",
        *table_rows(["property", "value"], properties),
        "",
        # GitHub highlights no plpgsql: its bodies read well as SQL.
        fence + ("sql" if function.language in ("sql", "plpgsql") else ""),
        *body.splitlines(),
        fence,
    ]


def functions_section(schema: Schema) -> list[str]:
    """Every function of the schema, or a line saying there is none."""
    if not schema.functions:
        return ["No functions of its own."]
    lines = [
        "Functions and procedures of the schema (not those of extensions), as the catalog",
        "has them. EXECUTE lists every role that may call one (superusers always may).",
    ]
    for function in schema.functions.values():
        lines += ["", *function_reference(function)]
    return lines


# --- the reference ------------------------------------------------------------------


def privileges_reference(security: Catalog, table: str) -> list[str]:
    """Who holds which privilege on `table`, column-level ones with their columns."""
    rows = [
        [_grantee(role), ", ".join(held_privileges(security, table, role))]
        for role in grantees(security, table)
    ]
    if not rows:
        return ["Privileges: none granted to any managed role or PUBLIC."]
    return ["Privileges:", "", *table_rows(["grantee", "privileges"], rows)]


def table_reference(table: Table, owner: str | None, security: Catalog | None = None) -> list[str]:
    enabled, forced = table.row_security
    rls = "enabled and forced" if enabled and forced else "enabled" if enabled else "disabled"
    lines = [f"### {code(table.name)}", "", f"Row-level security: {rls}."]
    if owner:
        lines[-1] += f" Rows belong to the user whose id is in {code(owner)}."
    lines += ["", "| column | type | nullable | default |", "|---|---|---|---|"]
    lines += [
        f"| {code(c.name)} | {c.type} | {'yes' if c.nullable else 'no'} | "
        f"{code(c.default) if c.default else ''} |"
        for c in table.columns.values()
    ]
    if table.indexes:
        lines += ["", "Indexes:", ""]
        lines += table_rows(
            ["index", "definition"],
            [
                [code(i.name), code(i.definition) + ("" if i.valid else " **INVALID**")]
                for i in table.indexes.values()
            ],
        )
    if table.constraints:
        lines += ["", "Constraints:", ""]
        lines += table_rows(
            ["constraint", "kind", "definition"],
            [[code(c.name), c.kind, code(c.definition)] for c in table.constraints.values()],
        )
    if security is not None:
        lines += ["", *privileges_reference(security, table.name)]
    return lines


def render(schema: Schema, owners: Mapping[str, str]) -> str:
    """The whole reference: diagram, row-security matrix, functions, a section per
    table."""
    lines = [
        "# Database schema",
        "",
        "<!-- Generated by `make docs` (todo_database/review/docs.py) from a database migrated",
        "     to head. Do not edit: change the models and revisions, then run `make docs`. -->",
        "",
        f"At revision {code(schema.revision or 'base')}: {len(schema.tables)} tables.",
        "",
        "## Entity-relationship diagram",
        "",
        '"owns": the user owns the rows through the table\'s owner column (row-level security',
        "scopes the todo API to the current user's rows through it).",
        "",
        *er_diagram(schema, owners),
        "",
        "## Row-level security",
        "",
        *row_security_summary(schema),
        "",
        "What each role may do, command by command. Permissive policies combine with OR,",
        "restrictive ones with AND; a role without the privilege gets nothing whatever the",
        "policies say, and a role holding it on some columns only (`SELECT (id, name)`)",
        "reaches those columns alone.",
        "",
        *security_matrix(schema),
        "",
        "## Functions",
        "",
        *functions_section(schema),
        "",
        "## Tables",
    ]
    for table in schema.tables.values():
        lines += ["", *table_reference(table, owners.get(table.name), schema.security)]
    return "\n".join(lines) + "\n"


# --- make docs ----------------------------------------------------------------------


def build_docs(root: Path = database.PROJECT_ROOT, admin: URL | None = None) -> str:
    """The reference for `root`'s schema at head, built on a throwaway database."""
    admin = database.review_admin_url() if admin is None else admin
    with throwaway_database(admin, "docs") as url:
        say("migrating it to head")
        migrate(root, url)
        schema = read_database(url)
    return render(schema, owner_columns(models.metadata))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m todo_database.review.docs",
        description="Write the schema reference (diagram, row-security matrix, functions, tables).",
    )
    parser.add_argument("--output", type=Path, default=DOCS_PATH, help="default: %(default)s")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        text = build_docs()
    except (DocsError, database.DatabaseError) as exc:
        print(f"docs: error: {exc}", file=sys.stderr)
        return 2
    output: Path = args.output
    output.parent.mkdir(parents=True, exist_ok=True)
    changed = not output.exists() or output.read_text() != text
    output.write_text(text)
    verb = "wrote" if changed else "unchanged:"
    say(f"{verb} {output} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
