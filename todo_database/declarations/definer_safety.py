"""Whether a SECURITY DEFINER function could run its caller's objects as its owner.

Such a function runs with its owner's rights inside the caller's session, and the
names it uses are looked up there: in ``pg_catalog``, then the function's
``search_path``, and, for relations and data types, in the session's temporary schema,
first unless the path names ``pg_temp`` (CREATE FUNCTION, "Writing SECURITY DEFINER
Functions Safely"). Any SQL the caller runs (an injection in the API) may create a
``pg_temp.text`` domain whose CHECK calls a function of its own, or a ``pg_temp.session``
table, and the function then runs it, or reads it, as its owner. Supabase's
``function_search_path_mutable`` lint passes any pinned path, ``''`` included, which
still searches ``pg_temp`` first.

A function is safe here when:

* its body is SQL-standard (``BEGIN ATOMIC``): PostgreSQL resolves every name when it
  is created, and nothing at run time; or
* its ``search_path`` is pinned, names ``pg_temp`` last, and every other schema in it
  is one nobody but its owner may create objects in; and its body names no relation or
  type that ``pg_catalog`` does not hold without the schema, nor runs SQL it builds at
  run time (``EXECUTE``), which no reading of the body can check.

:func:`problems` takes the functions and the names they could meet, as
:mod:`todo_database.catalog.functions` reads them (``read_definers``, ``read_names``),
and says, in one line each, what is wrong: ``make revision`` and ``alembic check``
refuse a declared function it faults (on the twin the comparison builds of it), and the
catalog lint of the tests runs it over every SECURITY DEFINER function of the database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

_SAFE_SCHEMAS = ("pg_catalog", "pg_temp")
#: Words that stand where a relation is named: what follows them is looked up.
_RELATION_BEFORE = re.compile(
    r"\b(?:FROM|JOIN|UPDATE|TABLE|INSERT\s+INTO|DELETE\s+FROM|TRUNCATE|LOCK)\s+(?!ONLY\b)",
    re.IGNORECASE,
)
_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_QUALIFIED = re.compile(rf"{_IDENTIFIER}(?:\s*\.\s*{_IDENTIFIER})*")
#: SQL words that may stand where the patterns above expect a name, and the type names
#: of the SQL standard, which the grammar maps to pg_catalog's types without a lookup.
_NOT_NAMES = frozenset(
    {
        *("lateral", "only", "select", "values", "with", "rows"),
        *("integer", "int", "smallint", "bigint", "real", "double", "float", "decimal"),
        *("dec", "character", "char", "varchar", "nchar", "national", "time", "timestamp"),
        *("interval", "bit", "boolean", "setof"),
    }
)


@dataclass(frozen=True)
class Definer:
    """A SECURITY DEFINER function as the catalog holds it."""

    signature: str
    language: str
    body: str
    sql_standard_body: bool
    settings: tuple[str, ...]

    @property
    def search_path(self) -> list[str] | None:
        """Its pinned search path, schema by schema (None: not pinned)."""
        for setting in self.settings:
            if setting.startswith("search_path="):
                value = setting.removeprefix("search_path=")
                return [_unquote(part.strip()) for part in value.split(",") if part.strip()]
        return None


@dataclass(frozen=True)
class Names:
    """What a name in a function's body could be looked up as."""

    #: Relations and types that pg_catalog holds (found there first).
    in_catalog: frozenset[str]
    #: Relations and types of other schemas.
    elsewhere: frozenset[str]
    #: Schemas in which some role other than the owner (or a superuser) may create
    #: objects.
    open_schemas: frozenset[str]


def problems(definers: Iterable[Definer], names: Names) -> list[str]:
    """What lets each of `definers` resolve a name its caller made, one line each."""
    found: list[str] = []
    for definer in definers:
        found += [
            f"SECURITY DEFINER function {definer.signature} {problem}"
            for problem in _problems(
                definer, set(names.in_catalog), set(names.elsewhere), set(names.open_schemas)
            )
        ]
    return found


def _problems(
    definer: Definer, catalog_names: set[str], other_names: set[str], open_schemas: set[str]
) -> Iterator[str]:
    if definer.sql_standard_body:
        return  # every name was resolved when it was created
    path = definer.search_path
    if path is None:
        yield (
            "has no pinned search_path: it looks names up in its caller's "
            "(SET search_path = pg_catalog, pg_temp)"
        )
    elif not path or path[-1] != "pg_temp":
        pinned = ", ".join(path) or "''"
        yield (
            f"searches pg_temp first for relations and types (search_path {pinned}): "
            "list pg_temp last (SET search_path = pg_catalog, pg_temp)"
        )
    for schema in path or ():
        if schema not in _SAFE_SCHEMAS and schema in open_schemas:
            yield (
                f"has schema {schema} in its search_path, where roles other than its owner "
                "may create objects"
            )
    text = _code_only(definer.body)
    if definer.language == "plpgsql" and re.search(r"\bEXECUTE\b", text, re.IGNORECASE):
        yield "runs SQL built at run time (EXECUTE), whose names no reading of its body can check"
    for name in sorted(_unqualified_names(text, catalog_names, other_names)):
        yield (
            f"names {name} without its schema: a caller's pg_temp.{name} would be used "
            "instead (write the schema: public.<name>, pg_catalog.<type>)"
        )


def _unqualified_names(text: str, catalog_names: set[str], other_names: set[str]) -> set[str]:
    """Names written without a schema where PostgreSQL looks a relation or type up:
    after FROM, JOIN, UPDATE, INSERT INTO..., after ``::``, before ``%TYPE`` or
    ``%ROWTYPE``, as a variable's type in DECLARE; and any bare word that names a
    relation or type outside pg_catalog. A name pg_catalog holds is found there first."""
    found: set[str] = set()
    for position in _RELATION_BEFORE.finditer(text):
        match = _QUALIFIED.match(text, position.end())
        # A function (extract(epoch FROM now())) is never looked up in pg_temp.
        if match is not None and not text[match.end() :].lstrip().startswith("("):
            found |= _bare(match.group(0), catalog_names)
    for match in re.finditer(rf"::\s*({_QUALIFIED.pattern})", text):
        found |= _bare(match.group(1), catalog_names)
    for match in re.finditer(rf"({_QUALIFIED.pattern})\s*%\s*(?:ROW)?TYPE\b", text, re.I):
        parts = match.group(1).split(".")
        # table.column%TYPE looks the table up; a variable%TYPE or schema.table.column
        # looks nothing up.
        if len(parts) == 2:
            found |= _bare(parts[0].strip(), catalog_names)
    declare = re.search(r"\bDECLARE\b(.*?)\bBEGIN\b", text, re.IGNORECASE | re.DOTALL)
    if declare is not None:
        for line in declare.group(1).split(";"):
            parts = re.match(
                rf"\s*{_IDENTIFIER}\s+(?:CONSTANT\s+)?({_QUALIFIED.pattern})", line, re.I
            )
            if parts is not None and not parts.group(1).lower().startswith("alias"):
                found |= _bare(parts.group(1), catalog_names)
    for word in re.finditer(rf"(?<![.\w$\"])({_IDENTIFIER})(?!\s*[.(\w\"])", text):
        name = _unquote(word.group(1))
        if name in other_names and name not in catalog_names:
            found.add(name)
    return found


def _bare(written: str, catalog_names: set[str]) -> set[str]:
    """`written` (``a``, ``a.b``) when it names something without a schema that
    pg_catalog does not hold."""
    parts = [_unquote(part.strip()) for part in written.split(".")]
    if len(parts) > 1 or parts[0].lower() in _NOT_NAMES:
        return set()
    return set() if parts[0] in catalog_names else {parts[0]}


def _unquote(name: str) -> str:
    if name.startswith('"') and name.endswith('"'):
        return name[1:-1].replace('""', '"')
    return name.lower()


def _code_only(body: str) -> str:
    """`body` without comments and the contents of string literals."""
    text = re.sub(r"--[^\n]*", " ", body)
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$(\w*)\$.*?\$\1\$", "''", text, flags=re.DOTALL)
    return re.sub(r"'(?:[^']|'')*'", "''", text)


__all__ = ["Definer", "Names", "problems"]
