"""The generated schema reference is up to date, and what it renders means what it says.

``specs/001-database-layer/schema.md`` is regenerated here from a database at head
(a copy of the session's migrated template) and compared with the committed file. What
the reference reads from the catalog (column privileges, functions, the policies that
call them) is checked on objects each test makes itself, not on today's schema.
"""

from __future__ import annotations

import difflib

import pytest
from sqlalchemy.engine import URL, Engine

import models
from models.security import Policy
from tests.conftest import new_engine
from todo_database.catalog.security import Catalog
from todo_database.deploy import database
from todo_database.deploy.database import PROJECT_ROOT
from todo_database.review import docs as schema_docs
from todo_database.review.docs import Column, Constraint, Schema, Table


def test_schema_reference_is_up_to_date(head_engine: Engine) -> None:
    with head_engine.connect() as connection:
        schema = schema_docs.read_schema(connection)
    expected = schema_docs.render(schema, schema_docs.owner_columns(models.metadata))
    path = schema_docs.DOCS_PATH
    current = path.read_text() if path.exists() else ""
    if current != expected:
        diff = difflib.unified_diff(
            current.splitlines(), expected.splitlines(), "committed", "at head", lineterm=""
        )
        pytest.fail(
            f"{path.relative_to(PROJECT_ROOT)} is out of date with the "
            "models and revisions: run `make docs` and commit the result.\n"
            + "\n".join(list(diff)[:60])
        )


def test_reading_twice_renders_the_same(head_engine: Engine) -> None:
    owners = schema_docs.owner_columns(models.metadata)
    with head_engine.connect() as connection:
        first = schema_docs.render(schema_docs.read_schema(connection), owners)
        second = schema_docs.render(schema_docs.read_schema(connection), owners)
    assert first == second
    assert "alembic_version" not in first


def small_schema(*, rls: tuple[bool, bool] = (True, True), policies: list[Policy]) -> Schema:
    """A "user" table and a "note" table its owner_id column points at."""
    user = Table(
        "user",
        {"id": Column("id", "text", False, None)},
        {},
        {"user_pkey": Constraint("user_pkey", "primary key", "PRIMARY KEY (id)", ("id",))},
        (True, True),
    )
    note = Table(
        "note",
        {
            "id": Column("id", "uuid", False, "gen_random_uuid()"),
            "owner_id": Column("owner_id", "text", False, None),
            "written at": Column("written at", "timestamp with time zone", True, None),
        },
        {},
        {
            "note_owner_id_fkey": Constraint(
                "note_owner_id_fkey",
                "foreign key",
                'FOREIGN KEY (owner_id) REFERENCES "user"(id)',
                ("owner_id",),
                "user",
                ("id",),
                "cascade",
            ),
            "note_pkey": Constraint("note_pkey", "primary key", "PRIMARY KEY (id)", ("id",)),
        },
        rls,
    )
    security = Catalog()
    security.grants[("note", "todo_app")] = frozenset({"SELECT", "INSERT"})
    security.policies["note"] = {policy.name: policy for policy in policies}
    return Schema({"note": note, "user": user}, security, "abc")


MINE = Policy("mine", "ALL", ("todo_app",), using="(owner_id = 'me')")


def test_the_diagram_quotes_tables_and_marks_ownership() -> None:
    diagram = "\n".join(schema_docs.er_diagram(small_schema(policies=[]), {"note": "owner_id"}))
    assert diagram.startswith("```mermaid\nerDiagram\n")
    assert '"user" ||--o{ "note" : "owns"' in diagram
    assert 'text owner_id FK "owner"' in diagram
    assert "timestamptz written_at" in diagram  # Mermaid words: no spaces
    assert "uuid id PK" in diagram
    plain = "\n".join(schema_docs.er_diagram(small_schema(policies=[]), {}))
    assert '"user" ||--o{ "note" : "owner_id"' in plain


def test_the_matrix_says_what_each_role_reaches() -> None:
    restrictive = Policy("not_old", "SELECT", ("todo_app",), using="(age < 1)", permissive=False)
    matrix = schema_docs.access_matrix(small_schema(policies=[MINE, restrictive]))
    select = matrix[("note", "todo_app", "SELECT")]
    assert select.verdict() == "granted"
    assert schema_docs.render_clauses(select.using) == (
        "`(owner_id = 'me')` (mine) AND restrictive `(age < 1)` (not_old)"
    )
    insert = matrix[("note", "todo_app", "INSERT")]
    assert [clause.expression for clause in insert.check] == ["(owner_id = 'me')"]  # from USING
    assert matrix[("note", "todo_app", "DELETE")].verdict() == "not granted"
    assert ("note", "todo_auth", "SELECT") not in matrix

    unguarded = schema_docs.access_matrix(small_schema(rls=(False, False), policies=[]))
    assert unguarded[("note", "todo_app", "SELECT")].verdict() == "granted, RLS off: ⚠️ every row"
    no_policy = schema_docs.access_matrix(small_schema(policies=[]))
    assert no_policy[("note", "todo_app", "SELECT")].verdict() == "granted, no policy: no row"


def test_the_matrix_marks_changes() -> None:
    before = small_schema(policies=[])
    after = small_schema(policies=[Policy("mine", "SELECT", ("todo_app",), using="true")])
    after.security.grants[("note", "todo_app")] = frozenset({"SELECT"})
    rows = schema_docs.security_matrix(after, before)
    by_command = {row.split(" | ")[2].strip("~"): row for row in rows[2:] if "`note`" in row}
    assert by_command["SELECT"].endswith("| ✏️ changed; was: granted, no policy: no row |")
    assert "🗑️ removed" not in by_command["SELECT"]
    assert "~~`note`~~" in by_command["INSERT"]  # INSERT is no longer granted: gone
    assert "| `user` | — | — | no role has any privilege |" in "\n".join(rows)


def test_code_spans_survive_table_cells() -> None:
    assert schema_docs.code("a || b") == "`a \\|\\| b`"
    assert schema_docs.code("x `y`") == "`` x `y` ``"


def test_a_bad_admin_url_names_its_variable() -> None:
    with pytest.raises(
        database.DatabaseError, match=r"^REVIEW_DATABASE_URL has unsupported scheme"
    ):
        database.review_admin_url({"REVIEW_DATABASE_URL": "mysql://root@localhost/x"})


def test_the_matrix_shows_privileges_held_on_some_columns() -> None:
    schema = small_schema(policies=[MINE])
    security = schema.security
    security.column_grants[("note", "todo_app")] = {
        "UPDATE": frozenset({"written at", "owner_id"}),
        "SELECT": frozenset({"id"}),  # the table-wide SELECT covers it already
    }
    security.column_grants[("note", "public")] = {"SELECT": frozenset({"id"})}
    matrix = schema_docs.access_matrix(schema)
    update = matrix[("note", "todo_app", "UPDATE")]
    assert update.verdict() == 'granted UPDATE (owner_id, "written at")'
    assert [clause.policy for clause in update.using] == ["mine"]
    assert matrix[("note", "todo_app", "SELECT")].verdict() == "granted"
    # PUBLIC's column privileges reach every role, as its table privileges do.
    assert matrix[("note", "todo_auth", "SELECT")].verdict() == (
        "granted SELECT (id), no policy: no row"
    )
    assert schema_docs.describe_privileges(security, "note", "todo_app") == (
        'SELECT, INSERT, UPDATE (owner_id, "written at")'
    )
    assert schema_docs.describe_privileges(security, "user", "todo_app") == "nothing"
    reference = "\n".join(schema_docs.privileges_reference(security, "note"))
    assert '| `todo_app` | SELECT, INSERT, UPDATE (owner_id, "written at") |' in reference
    assert "| PUBLIC | SELECT (id) |" in reference
    text = schema_docs.render(schema, {})
    assert "## Functions\n\nNo functions of its own.\n" in text


#: A table, two functions and a policy calling one of them: what the reference must read
#: back from the catalog, whatever the models say.
OWN_OBJECTS = """
CREATE TABLE note (id integer PRIMARY KEY, owner_id text NOT NULL, "Body" text);
ALTER TABLE note ENABLE ROW LEVEL SECURITY;
CREATE FUNCTION public.note_owner() RETURNS text LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = '' AS $$ SELECT 'me'::text $$;
REVOKE EXECUTE ON FUNCTION public.note_owner() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.note_owner() TO todo_app;
CREATE FUNCTION public.plus(a integer, b integer DEFAULT 1) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN RETURN a + b; END $$;
CREATE POLICY mine ON note FOR UPDATE TO todo_app
    USING (owner_id = (SELECT public.note_owner()))
    WITH CHECK (owner_id = (SELECT public.note_owner()));
GRANT SELECT (id, "Body") ON note TO todo_app;
GRANT UPDATE ("Body") ON note TO todo_app;
"""


@pytest.mark.superuser(
    "only an extension's owner (plpgsql's: the bootstrap superuser) may add to it"
)
def test_a_function_an_extension_owns_is_not_the_schemas(
    superuser_url: URL, empty_url: URL
) -> None:
    engine = new_engine(superuser_url.set(database=empty_url.database))
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(
                "CREATE FUNCTION public.from_extension() RETURNS int LANGUAGE sql "
                "AS $$ SELECT 1 $$; "
                "ALTER EXTENSION plpgsql ADD FUNCTION public.from_extension()"
            )
            connection.exec_driver_sql(
                "CREATE FUNCTION public.of_the_schema() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$"
            )
        with engine.connect() as connection:
            schema = schema_docs.read_schema(connection)
    finally:
        engine.dispose()
    assert list(schema.functions) == ["public.of_the_schema()"]


def test_functions_and_column_grants_come_from_the_catalog(empty_url: URL) -> None:
    engine = new_engine(empty_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(OWN_OBJECTS)
            me = str(connection.exec_driver_sql("SELECT current_user").scalar())
        with engine.connect() as connection:
            schema = schema_docs.read_schema(connection)
    finally:
        engine.dispose()

    assert list(schema.functions) == [
        "public.note_owner()",
        "public.plus(a integer, b integer DEFAULT 1)",
    ]
    owner_of_note = schema.functions["public.note_owner()"]
    assert (owner_of_note.language, owner_of_note.volatility) == ("sql", "STABLE")
    assert owner_of_note.security_definer
    assert owner_of_note.settings == ('search_path=""',)
    assert owner_of_note.executors == (me, "todo_app")
    # USING and WITH CHECK both call it: one policy, listed once.
    assert owner_of_note.policies == (("note", "mine"),)
    plus = schema.functions["public.plus(a integer, b integer DEFAULT 1)"]
    assert (plus.returns, plus.security_definer, plus.policies) == ("integer", False, ())
    assert plus.executors == (me, "public")

    text = schema_docs.render(schema, {})
    functions = text.split("## Functions", 1)[1].split("## Tables", 1)[0]
    note_owner, plus_text = functions.split("### `public.note_owner()`", 1)[1].split(
        "### `public.plus(", 1
    )
    assert f"| security | SECURITY DEFINER: runs with the rights of its owner, `{me}` |" in (
        note_owner
    )
    assert '| settings | `search_path=""` |' in note_owner
    assert f"| EXECUTE | `{me}` (owner), `todo_app` |" in note_owner
    assert "PUBLIC" not in note_owner
    assert "| called by policies | `mine` on `note` |" in note_owner
    assert "```sql\nSELECT 'me'::text\n```" in note_owner
    assert f"| EXECUTE | `{me}` (owner), PUBLIC (every role) |" in plus_text
    assert "| settings | none |" in plus_text
    assert "| called by policies | none |" in plus_text

    matrix = schema_docs.access_matrix(schema)
    assert matrix[("note", "todo_app", "SELECT")].verdict() == (
        'granted SELECT ("Body", id), no policy: no row'
    )
    update = matrix[("note", "todo_app", "UPDATE")]
    assert update.verdict() == 'granted UPDATE ("Body")'
    assert [clause.policy for clause in update.using] == ["mine"]
    assert '| `todo_app` | SELECT ("Body", id), UPDATE ("Body") |' in text
