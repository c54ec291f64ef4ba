"""The functions the policies call (``models.security.FUNCTIONS``): Alembic operations
and their rendering; :mod:`todo_database.catalog` reads them, and
:mod:`todo_database.autogenerate.functions` compares them with the declarations.

A function is compared as PostgreSQL holds it: its declared twin is created in
``pg_temp`` (:mod:`todo_database.autogenerate.deparse`) and both are read from
``pg_proc``: arguments
and result as ``pg_get_function_arguments``/``_result`` print them, the body as
stored, the language, volatility, SECURITY DEFINER and settings, then the owner and
who may execute it. Every function of the schema that no extension owns is managed:
one the declarations lack is dropped (and its downgrade recreates it).

The revision writes a new function whole, its owner and executors included::

    op.create_function("bind_session", arguments="token text", returns="text", ...,
                       owner="todo_identity", executors=["todo_app"])

and changes to an existing one as ``op.replace_function``, ``op.alter_function_owner``,
``op.grant_execute`` and ``op.revoke_execute``.

A body is stored as written less its common indentation (:func:`stored_body`): the
revision file indents it with the code around it, and the body PostgreSQL keeps must
not depend on that.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from sqlalchemy.dialects.postgresql.base import PGDialect

from models.security import PUBLIC, Function
from todo_database.operations.opposites import OppositeOp, opposites


def _quote(operations: Operations, name: str) -> str:
    return str(operations.impl.dialect.identifier_preparer.quote(name))


# PostgreSQL's quoting rules, without a connection (the ops render offline too).
_quote_name = PGDialect().identifier_preparer.quote  # type: ignore[no-untyped-call]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _dollar_quoted(body: str) -> str:
    tag = "$function$"
    while tag in body:
        tag = tag[:-1] + "_$"
    return f"{tag}{body}{tag}"


def search_path_sql(search_path: str) -> str:
    """``'pg_catalog', 'pg_temp'``: each schema a literal of its own (one literal holding
    ``a, b`` would name a single schema called that); ``''`` for the empty path."""
    schemas = [schema.strip() for schema in search_path.split(",") if schema.strip()]
    return ", ".join(_literal(schema) for schema in schemas) or "''"


def stored_body(body: str) -> str:
    """`body` as PostgreSQL is given it: without the indentation all its lines share,
    on lines of its own."""
    return "\n" + textwrap.dedent(body).strip("\n") + "\n"


def definition_sql(
    function: Function, *, schema: str | None = None, or_replace: bool = False
) -> str:
    """``CREATE [OR REPLACE] FUNCTION ...``: the whole definition, in `schema` (by
    default the function's own)."""
    name = f"{schema or function.schema}.{function.name}"
    clauses = [
        f"CREATE {'OR REPLACE ' if or_replace else ''}FUNCTION {name}({function.arguments})",
        f"RETURNS {function.returns}",
        f"LANGUAGE {function.language}",
        function.volatility,
    ]
    if function.security_definer:
        clauses.append("SECURITY DEFINER")
    if function.search_path is not None:
        clauses.append(f"SET search_path = {search_path_sql(function.search_path)}")
    clauses.append(f"AS {_dollar_quoted(stored_body(function.body))}")
    return "\n".join(clauses)


# --- operations ---------------------------------------------------------------------


@Operations.register_operation("create_function", "from_definition")
@dataclass
class CreateFunctionOp(MigrateOperation):
    """``CREATE FUNCTION``, the whole definition; then its owner, and EXECUTE taken from
    PUBLIC (which PostgreSQL lets call any new function) and given to its executors.
    Its reverse drops it."""

    function: Function

    operation_name: ClassVar[str] = "create_function"

    @classmethod
    def from_definition(
        cls,
        operations: Operations,
        name: str,
        *,
        returns: str,
        body: str,
        arguments: str = "",
        language: str = "plpgsql",
        volatility: str = "VOLATILE",
        security_definer: bool = False,
        search_path: str | None = None,
        owner: str | None = None,
        executors: Sequence[str] = (),
        schema: str = "public",
    ) -> None:
        """``op.create_function(...)``; ``op.drop_function(...)`` and
        ``op.replace_function(...)`` take the same."""
        function = Function(
            name,
            returns,
            body,
            arguments,
            language,  # type: ignore[arg-type]
            volatility,  # type: ignore[arg-type]
            security_definer,
            search_path,
            owner,
            tuple(executors),
            schema,
        )
        operations.invoke(cls(function))

    def reverse(self) -> MigrateOperation:
        return DropFunctionOp(self.function)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.operation_name, self.function.signature)


@Operations.register_operation("drop_function", "from_definition")
class DropFunctionOp(CreateFunctionOp):
    """``DROP FUNCTION``; carries the whole definition, so its reverse recreates it."""

    operation_name = "drop_function"

    def reverse(self) -> MigrateOperation:
        return CreateFunctionOp(self.function)


@Operations.register_operation("replace_function", "from_definition")
class ReplaceFunctionOp(CreateFunctionOp):
    """``CREATE OR REPLACE FUNCTION``: a new body or attributes, the same signature and
    result (PostgreSQL changes a result type only by dropping the function)."""

    operation_name = "replace_function"
    previous: Function | None = None

    def __init__(self, function: Function, previous: Function | None = None) -> None:
        super().__init__(function)
        self.previous = previous

    def reverse(self) -> MigrateOperation:
        # Revisions pass only the new definition: its reverse then replaces it by itself.
        return ReplaceFunctionOp(self.previous or self.function, self.function)


@Operations.implementation_for(CreateFunctionOp)
def _create_function(operations: Operations, operation: CreateFunctionOp) -> None:
    function = operation.function
    # Created by the migration role, which may grant on it as its owner; the owner it is
    # declared with comes last, keeping those grants.
    operations.execute(definition_sql(function))
    if PUBLIC not in function.executors:
        operations.execute(_execute_statement(RevokeExecuteOp(function.signature, PUBLIC)))
    for role in function.executors:
        operations.execute(_execute_statement(GrantExecuteOp(function.signature, role)))
    if function.owner is not None:
        _alter_function_owner(operations, FunctionOwnerOp(function.signature, function.owner))


@Operations.implementation_for(ReplaceFunctionOp)
def _replace_function(operations: Operations, operation: ReplaceFunctionOp) -> None:
    # Owner and EXECUTE are kept by CREATE OR REPLACE; they change in their own ops.
    function = operation.function
    operations.execute(
        acting_for_owner(function.signature, [definition_sql(function, or_replace=True)])
    )


@Operations.implementation_for(DropFunctionOp)
def _drop_function(operations: Operations, operation: DropFunctionOp) -> None:
    signature = operation.function.signature
    operations.execute(acting_for_owner(signature, [f"DROP FUNCTION {signature}"]))


# --- acting for a function's owner ------------------------------------------------------
#
# Only a function's owner may replace, drop or grant on it, and only a role that may act
# as the new owner may give it one, which must then be allowed to CREATE in the function's
# schema. A superuser skips every check; Neon's owner role, which runs the migrations, is
# no superuser: it may act for a role it manages (one it created) once a member of it, and
# may let a role CREATE in public, which it owns. So the statements run in one block that
# makes the migration role a member of those roles, and lets the new owner CREATE in the
# schema, only for as long as they run, and says in one line what to do when it may not.


def split_signature(signature: str) -> tuple[str, str, str]:
    """``schema.name(arguments)`` (:attr:`Function.signature`) as its three parts."""
    qualified, _, rest = signature.partition("(")
    schema, _, name = qualified.rpartition(".")
    return schema or "public", name, rest.removesuffix(")")


def _owner_lookup(signature: str) -> str:
    """SQL: the name of the role owning the function of `signature` (NULL: none). The
    arguments are matched as PostgreSQL prints them, or, when only one function has the
    name, whatever they are."""
    schema, name, arguments = split_signature(signature)
    return (
        "(SELECT pg_get_userbyid(p.proowner) FROM pg_catalog.pg_proc p "
        f"WHERE p.pronamespace = to_regnamespace({_literal(schema)}) "
        f"AND p.proname = {_literal(name)} "
        f"ORDER BY pg_get_function_identity_arguments(p.oid) = {_literal(arguments)} DESC "
        "LIMIT 1)"
    )


def _tag_for(text: str) -> str:
    tag = "$owner$"
    while tag in text:
        tag = tag[:-1] + "_$"
    return tag


def acting_for_owner(
    signature: str, statements: Sequence[str], *, new_owner: str | None = None
) -> str:
    """A ``DO`` block running `statements` on the function of `signature` with the rights
    of its owner (and, given `new_owner`, of the role it is to be owned by), which the
    migration role holds for the block's length only. Run in a revision's transaction: a
    failure takes every grant back with the rest."""
    schema, _, _ = split_signature(signature)
    body = ";\n    ".join(statements)
    new = _literal(new_owner) if new_owner is not None else "NULL"
    block = f"""
DECLARE
    owner text := {_owner_lookup(signature)};
    new_owner text := {new};
    version int := current_setting('server_version_num')::int;
    granted text[] := '{{}}';
    creates boolean := false;
BEGIN
    IF owner IS NOT NULL AND NOT pg_has_role(current_user, owner, 'USAGE') THEN
        {_grant_self("owner", "INHERIT TRUE, SET FALSE")}
    END IF;
    IF new_owner IS NOT NULL AND NOT pg_has_role(current_user, new_owner,
            CASE WHEN version >= 160000 THEN 'SET' ELSE 'MEMBER' END) THEN
        {_grant_self("new_owner", "INHERIT FALSE, SET TRUE")}
    END IF;
    IF new_owner IS NOT NULL
       AND NOT has_schema_privilege(new_owner, {_literal(schema)}, 'CREATE') THEN
        BEGIN  -- without the right to, GRANT warns and grants nothing, or fails
            EXECUTE format('GRANT CREATE ON SCHEMA %I TO %I', {_literal(schema)}, new_owner);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;
        END;
        IF NOT has_schema_privilege(new_owner, {_literal(schema)}, 'CREATE') THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
                '%I may not make %I the owner of %s: an owner must be allowed to CREATE '
                'in schema %I, which only the schema''s owner may grant for the moment it '
                'takes; run the migrations as the database''s owner (on Neon, the '
                'project''s owner role, neondb_owner)', current_user, new_owner,
                {_literal(signature)}, {_literal(schema)});
        END IF;
        creates := true;
    END IF;
    {body};
    IF creates THEN
        EXECUTE format('REVOKE CREATE ON SCHEMA %I FROM %I', {_literal(schema)}, new_owner);
    END IF;
    FOR i IN 1 .. coalesce(array_length(granted, 1), 0) LOOP
        EXECUTE format('REVOKE %I FROM %I', granted[i], current_user);
    END LOOP;
END
"""
    tag = _tag_for(block)
    return f"DO {tag}{block}{tag}"


def _grant_self(role: str, options: str) -> str:
    """PL/pgSQL: the migration role made a member of the role in variable `role` (on
    PostgreSQL 16+ with `options`) and the role added to ``granted``, or one line saying
    what to do. A membership another session grants at that moment (a concurrent
    migration of another database of the cluster, a DBA) is left to that session."""
    return f"""BEGIN
            IF version >= 160000 THEN
                EXECUTE format('GRANT %I TO %I WITH {options}', {role}, current_user);
            ELSE
                EXECUTE format('GRANT %I TO %I', {role}, current_user);
            END IF;
            granted := granted || {role};
        EXCEPTION WHEN unique_violation THEN
            -- Another session granted this membership at that moment (memberships
            -- belong to the cluster, not to one database): it keeps or takes it back.
            NULL;
        WHEN insufficient_privilege THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
                '%I may not act as role %I, which owns or is to own a function: PostgreSQL '
                '16+ lets a CREATEROLE role act only as the roles it created or holds WITH '
                'ADMIN OPTION (a role made in the Neon console is not the owner''s); drop '
                '%I so that the migration creates it, or have a role that may run GRANT %I '
                'TO %I WITH ADMIN OPTION', current_user, {role}, {role}, {role}, current_user);
        END;"""


@Operations.register_operation("alter_function_owner")
@dataclass
class FunctionOwnerOp(MigrateOperation):
    """``ALTER FUNCTION ... OWNER TO``: a SECURITY DEFINER function runs as its owner.

    The migration role must be able to act as the new owner: it is made a member of
    it first when it is not (a role it created; Neon's owner role may, a superuser is
    one already)."""

    signature: str
    owner: str
    previous: str | None = None

    @classmethod
    def alter_function_owner(cls, operations: Operations, signature: str, owner: str) -> None:
        operations.invoke(cls(signature, owner))

    def reverse(self) -> FunctionOwnerOp:
        return FunctionOwnerOp(self.signature, self.previous or self.owner, self.owner)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("alter_function_owner", self.signature, self.owner)


@Operations.implementation_for(FunctionOwnerOp)
def _alter_function_owner(operations: Operations, operation: FunctionOwnerOp) -> None:
    owner = _quote(operations, operation.owner)
    operations.execute(
        acting_for_owner(
            operation.signature,
            [f"ALTER FUNCTION {operation.signature} OWNER TO {owner}"],
            new_owner=operation.owner,
        )
    )


@dataclass
class _ExecuteOp(OppositeOp):
    """``GRANT`` or ``REVOKE EXECUTE ON FUNCTION``; each the other's reverse."""

    signature: str
    role: str

    @classmethod
    def execute_privilege(cls, operations: Operations, signature: str, role: str) -> None:
        operations.invoke(cls(signature, role))


@Operations.register_operation("grant_execute", "execute_privilege")
class GrantExecuteOp(_ExecuteOp):
    operation_name = "grant_execute"


@Operations.register_operation("revoke_execute", "execute_privilege")
class RevokeExecuteOp(_ExecuteOp):
    operation_name = "revoke_execute"


opposites(GrantExecuteOp, RevokeExecuteOp)


def _execute_statement(operation: _ExecuteOp) -> str:
    role = "PUBLIC" if operation.role == PUBLIC else _quote_name(operation.role)
    if isinstance(operation, GrantExecuteOp):
        return f"GRANT EXECUTE ON FUNCTION {operation.signature} TO {role}"
    return f"REVOKE EXECUTE ON FUNCTION {operation.signature} FROM {role}"


def _change_execute(operations: Operations, operation: _ExecuteOp) -> None:
    # Granted by the function's owner: a grant by any other role is another grant.
    operations.execute(acting_for_owner(operation.signature, [_execute_statement(operation)]))


for _execute in (GrantExecuteOp, RevokeExecuteOp):
    Operations.implementation_for(_execute)(_change_execute)


# --- rendering ----------------------------------------------------------------------


def _body(body: str) -> str:
    """A function body as the revision writes it: triple-quoted, as it reads."""
    if '"""' in body or "\\" in body or not body.startswith("\n"):
        return repr(body)
    return f'"""{body}"""'


@renderers.dispatch_for(CreateFunctionOp)
def _render_function(context: AutogenContext, operation: CreateFunctionOp) -> str:
    function = operation.function
    arguments = [repr(function.name)]
    options: Mapping[str, object] = {
        "arguments": function.arguments or None,
        "returns": function.returns,
        "language": function.language,
        "volatility": function.volatility,
        "security_definer": function.security_definer or None,
        "search_path": function.search_path,
        "schema": None if function.schema == "public" else function.schema,
    }
    if not isinstance(operation, ReplaceFunctionOp):
        options = {
            **options,
            "owner": None if function.owner is None else str(function.owner),
            "executors": sorted(str(role) for role in function.executors) or None,
        }
    arguments += [f"{key}={value!r}" for key, value in options.items() if value is not None]
    arguments.append(f"body={_body(function.body)}")
    return f"op.{operation.operation_name}({', '.join(arguments)})"


@renderers.dispatch_for(FunctionOwnerOp)
def _render_owner(context: AutogenContext, operation: FunctionOwnerOp) -> str:
    return f"op.alter_function_owner({operation.signature!r}, {str(operation.owner)!r})"


@renderers.dispatch_for(_ExecuteOp)
def _render_execute(context: AutogenContext, operation: _ExecuteOp) -> str:
    return f"op.{operation.operation_name}({operation.signature!r}, {str(operation.role)!r})"
