"""The models' row-security declarations, resolved and checked.

:func:`row_security` is a table's declaration with the policies that ownership
through a parent row implies filled in (``owned_through``: they depend on the parent
table, known only once every model is imported). :func:`check_declarations` is what
``make revision`` and ``alembic check`` refuse, in one line: a table that neither
declares row security nor opts out with a reason, a role no declaration of
:data:`models.security.ROLES` names, an ownership that does not resolve.

Everything that reads the declarations (the comparator, the schema docs, the review,
the isolation tests) reads them through here, so all see the same policies.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Literal, get_args

from alembic.util import CommandError
from sqlalchemy import MetaData, Table
from sqlalchemy.dialects.postgresql.base import PGDialect

from models.security import (
    DEFINER_SEARCH_PATH,
    FUNCTIONS,
    IDENTITY,
    PUBLIC,
    ROLES,
    ROW_SECURITY,
    SHARING_ROLE,
    VERIFIED_USER_ID,
    Command,
    Function,
    Grant,
    MemberOf,
    Policy,
    Privilege,
    RowSecurity,
    SharedWith,
    ThroughParent,
    declared_role,
    own_row_policies,
)

# PostgreSQL's quoting rules (reserved words such as user), without a connection.
_DIALECT = PGDialect()  # type: ignore[no-untyped-call]
_quote = _DIALECT.identifier_preparer.quote

HOW_TO_DECLARE = (
    'info={ROW_SECURITY: owned_by("<column>")}, owned_through("<foreign key column>") or '
    'without_row_security("<why>") from models.security'
)


#: ``context.configure(compare_row_security=False)`` (``alembic -x row_security=off``)
#: leaves row security out of autogenerate's comparison.
COMPARE_OPTION = "compare_row_security"


#: What a policy can be for, as ``CREATE POLICY ... FOR`` spells it.
POLICY_COMMANDS = get_args(Command)
#: Table privileges, as ``GRANT`` spells them.
TABLE_PRIVILEGES = get_args(Privilege)
#: The privileges PostgreSQL grants per column.
COLUMN_PRIVILEGES = frozenset({"SELECT", "INSERT", "UPDATE", "REFERENCES"})


class DeclarationError(CommandError):
    """A row-security declaration that cannot be turned into a schema, in one line."""


def declared(table: Table) -> RowSecurity | None:
    """The :class:`RowSecurity` a table's ``info`` holds, as written (nothing derived)."""
    declaration = table.info.get(ROW_SECURITY)
    if declaration is None or isinstance(declaration, RowSecurity):
        return declaration
    raise DeclarationError(
        f"table {table.name!r}: info[{ROW_SECURITY!r}] is a {type(declaration).__name__}, "
        f"not a RowSecurity: use {HOW_TO_DECLARE}"
    )


def row_security(table: Table) -> RowSecurity | None:
    """The table's row security with every derived policy in place, or None when it
    declares none."""
    declaration = declared(table)
    if declaration is None:
        return None
    if declaration.through is not None:
        declaration = declaration + _through_parent(table, declaration.through)
    if declaration.sharing is not None:
        declaration = declaration + _shared(table, declaration.sharing)
    if declaration.membership is not None:
        declaration = declaration + _membership(table, declaration.membership)
    return declaration


def _through_parent(table: Table, through: ThroughParent) -> RowSecurity:
    """The four policies of a row owned through its parent: read where the parent is
    read, changed and written where it is changed (the same, unless a shared row is on
    the way up)."""
    gate = _scan_gate(table, through.identity.proven)
    seen = (table.name,)
    read = _owned_through(table, through, seen=seen, per_row=False, access="read")
    change = _owned_through(table, through, seen=seen, per_row=False, access="write")
    written = _owned_through(table, through, seen=seen, per_row=True, access="write")
    return RowSecurity(
        policies=own_row_policies(
            through.role,
            mine=f"{read} AND {gate}",
            changeable=f"{change} AND {gate}",
            written=written,
            claim_acknowledged=through.claim_acknowledged,
        )
    )


# --- shared rows --------------------------------------------------------------------

#: What a sharing function answers: the keys of the shared rows the current user reads,
#: changes (owner and writers), or manages the members of (owner and managers).
Access = Literal["read", "write", "manage"]
_ACCESS_SUFFIX: dict[Access, str] = {
    "read": "readable_ids",
    "write": "writable_ids",
    "manage": "managed_ids",
}


def sharing_function_name(table_name: str, access: Access) -> str:
    return f"{table_name}_{_ACCESS_SUFFIX[access]}"


def _shared_keys(table_name: str, access: Access) -> str:
    """SQL: the keys of the rows of `table_name` the current user has `access` to, as
    an array evaluated once per statement (an InitPlan)."""
    return f"ARRAY(SELECT public.{_quote(sharing_function_name(table_name, access))}())"


def _members_of(table: Table, sharing: SharedWith) -> tuple[Table, MemberOf]:
    """The membership table of the shared `table`, as it declares itself."""
    where = f"{table.name!r} is shared with the members of {sharing.members!r}"
    members = table.metadata.tables.get(sharing.members)
    if members is None:
        raise DeclarationError(f"{where}, which is not a table of the models")
    declaration = declared(members)
    if declaration is None or declaration.membership is None:
        raise DeclarationError(
            f"{where}, which does not declare member_of(...) from models.security"
        )
    column = members.columns.get(declaration.membership.shared)
    keys = list(column.foreign_keys) if column is not None else []
    if len(keys) != 1 or keys[0].column.table is not table:
        raise DeclarationError(
            f"{where}, but its column {declaration.membership.shared!r} is no foreign key to it"
        )
    if keys[0].column.name != sharing.key:
        raise DeclarationError(
            f"{where}, whose {declaration.membership.shared!r} references "
            f"{keys[0].column.name!r}, not the shared key {sharing.key!r}"
        )
    return members, declaration.membership


def _shared(table: Table, sharing: SharedWith) -> RowSecurity:
    """A shared table's policies: read by its owner and members, changed by its owner and
    writers (never its owner or key: the role may UPDATE the other columns only),
    deleted by its owner alone, created by anyone for themselves; and what its sharing
    functions' owner may read of it."""
    for column in (sharing.owner, sharing.key):
        if column not in table.columns:
            raise DeclarationError(
                f"{table.name!r} is shared with owner {sharing.owner!r} and key "
                f"{sharing.key!r}, but has no column {column!r}"
            )
    _members_of(table, sharing)
    name = _quote(table.name)
    key = f"{name}.{_quote(sharing.key)}"
    gate = _scan_gate(table, sharing.identity.proven)
    readable = f"{key} = ANY ({_shared_keys(table.name, 'read')})"
    writable = f"{key} = ANY ({_shared_keys(table.name, 'write')})"
    mine = sharing.identity.owns(f"{name}.{_quote(sharing.owner)}")
    role = sharing.role
    changeable = frozenset(
        column.name for column in table.columns if column.name not in (sharing.key, sharing.owner)
    )
    return RowSecurity(
        policies=(
            Policy(f"{role}_select_shared", "SELECT", (role,), using=f"{readable} AND {gate}"),
            Policy(f"{role}_insert_own", "INSERT", (role,), with_check=mine),
            Policy(
                f"{role}_update_shared",
                "UPDATE",
                (role,),
                using=f"{writable} AND {gate}",
                with_check=writable,
            ),
            Policy(f"{role}_delete_own", "DELETE", (role,), using=mine),
            Policy(f"{SHARING_ROLE}_lookup", "SELECT", (SHARING_ROLE,), using="true"),
        ),
        grants=(
            Grant(role, frozenset({"UPDATE"}), changeable),
            Grant(SHARING_ROLE, frozenset({"SELECT"}), frozenset({sharing.key, sharing.owner})),
        ),
    )


def _membership(table: Table, membership: MemberOf) -> RowSecurity:
    """A membership table's policies: a member of a shared row sees its members; its owner
    and managers add, change and remove them, never themselves, and only at a declared
    level; a member may leave."""
    where = f"{table.name!r} lists members through {membership.shared!r}"
    for column in (membership.shared, membership.user, membership.level):
        if column not in table.columns:
            raise DeclarationError(f"{where}, but has no column {column!r}")
    if undeclared := sorted({*membership.writers, *membership.managers} - {*membership.levels}):
        raise DeclarationError(f"{where}: levels {undeclared} are not among {membership.levels}")
    (key,) = table.columns[membership.shared].foreign_keys
    shared: Table = key.column.table
    sharing = declared(shared)
    if sharing is None or sharing.sharing is None or sharing.sharing.members != table.name:
        raise DeclarationError(
            f"{where}, but {shared.name!r} does not declare shared_with({table.name!r}, ...)"
        )
    name = _quote(table.name)
    parent = f"{name}.{_quote(membership.shared)}"
    member = f"{name}.{_quote(membership.user)}"
    me = membership.identity.user_id
    gate = _scan_gate(table, membership.identity.proven)
    readable = f"{parent} = ANY ({_shared_keys(shared.name, 'read')})"
    managed = f"{parent} = ANY ({_shared_keys(shared.name, 'manage')})"
    levels = ", ".join("'" + level.replace("'", "''") + "'" for level in membership.levels)
    written = (
        f"{managed} AND {member} <> {me} AND "
        f"{name}.{_quote(membership.level)}::text = ANY (ARRAY[{levels}]::text[])"
    )
    role = membership.role
    return RowSecurity(
        policies=(
            Policy(f"{role}_select_members", "SELECT", (role,), using=f"{readable} AND {gate}"),
            Policy(f"{role}_insert_members", "INSERT", (role,), with_check=written),
            Policy(
                f"{role}_update_members",
                "UPDATE",
                (role,),
                using=f"{managed} AND {gate}",
                with_check=written,
            ),
            Policy(
                f"{role}_delete_members",
                "DELETE",
                (role,),
                using=f"({managed} OR {member} = {me}) AND {gate}",
            ),
            Policy(f"{SHARING_ROLE}_lookup", "SELECT", (SHARING_ROLE,), using="true"),
        ),
        grants=(
            Grant(
                SHARING_ROLE,
                frozenset({"SELECT"}),
                frozenset({membership.shared, membership.user, membership.level}),
            ),
        ),
    )


def sharing_functions(table: Table) -> tuple[Function, ...]:
    """The SECURITY DEFINER functions a shared table's policies (and those of its
    membership table and of the rows owned through it) call: the keys of the rows the
    current user reads, changes, or manages the members of. Owned by ``todo_sharing``,
    which reads the tables without their policies applying to it recursively."""
    security = declared(table)
    if security is None or security.sharing is None:
        return ()
    sharing = security.sharing
    members, membership = _members_of(table, sharing)
    key_type = table.columns[sharing.key].type.compile(dialect=_DIALECT)
    level = f"m.{_quote(membership.level)}::pg_catalog.text"
    functions = []
    for access, levels in (
        ("read", membership.levels),
        ("write", membership.writers),
        ("manage", membership.managers),
    ):
        listed = ", ".join("'" + value.replace("'", "''") + "'" for value in levels)
        member_rows = (
            f"SELECT m.{_quote(membership.shared)} FROM public.{_quote(members.name)} m\n"
            f"            WHERE m.{_quote(membership.user)} = me"
            f" AND {level} = ANY (ARRAY[{listed}]::pg_catalog.text[])"
            if levels
            else ""
        )
        # UNION ALL: a key listed twice (an owner who is a member too) matches the same
        # rows, and nothing sorts or hashes the keys.
        union = f"\n            UNION ALL\n            {member_rows}" if member_rows else ""
        functions.append(
            Function(
                name=sharing_function_name(table.name, access),  # type: ignore[arg-type]
                returns=f"SETOF {key_type}",
                volatility="STABLE",
                security_definer=True,
                search_path=DEFINER_SEARCH_PATH,
                owner=SHARING_ROLE,
                executors=(sharing.role,),
                body=f"""
    DECLARE
        me pg_catalog.text := {sharing.identity.user_id};
    BEGIN
        RETURN QUERY
            SELECT t.{_quote(sharing.key)} FROM public.{_quote(table.name)} t
            WHERE t.{_quote(sharing.owner)} = me{union};
    END
    """,
            )
        )
    return tuple(functions)


def _scan_gate(table: Table, proven: str) -> str:
    """``t.tableoid = t's oid AND t.tableoid = (SELECT t's oid WHERE <proven>)``: true
    for every row when the identity is proven, false otherwise; and, the same column
    compared with two values without columns, PostgreSQL compares those with each other
    once, before the scan (a One-Time Filter). Without it, a transaction without an
    identity would scan the rows an index finds before the policy's filter dropped
    them, and EXPLAIN ANALYZE would count them. A table owned by a column gets the same
    from comparing its owner with the verified and the claimed id."""
    name = _quote(table.name)
    oid = "'" + name.replace("'", "''") + "'::regclass::oid"
    return f"{name}.tableoid = {oid} AND {name}.tableoid = (SELECT {oid} WHERE {proven})"


def declared_row_security(metadata: MetaData) -> Iterator[tuple[Table, RowSecurity]]:
    """Each table that declares row security, resolved, in dependency order."""
    for table in metadata.sorted_tables:
        if (declaration := row_security(table)) is not None:
            yield table, declaration


def _owned_through(
    table: Table,
    through: ThroughParent,
    *,
    seen: tuple[str, ...],
    per_row: bool,
    access: Access = "read",
) -> str:
    """The condition that a row of `table` belongs to the current user through the
    parent row its `column_name` references. Every name is qualified, so that no column
    of the parent can capture one of the link table's.

    Two forms, because a policy's USING and its WITH CHECK are used differently:

    * to find rows (USING, `per_row` False), the set of the user's parent keys,
      ``col = ANY (ARRAY(SELECT ...))``: evaluated once per statement (an InitPlan), so
      a scan of the link table uses an index on `column_name`. A correlated EXISTS
      there is planned as a filter over every row of the link table;
    * to vet the rows a statement writes (WITH CHECK, `per_row` True), the one parent
      row, ``EXISTS (SELECT 1 ... WHERE key = col ...)``, found through the parent's key
      whatever the number of parent rows the user has.

    A shared parent (:func:`models.security.shared_with`) is read by whoever reads it and
    written by whoever writes it (`access`): the keys its sharing functions give, once
    per statement, in either form.
    """
    column_name, role = through.column, through.role
    column = table.columns.get(column_name)
    where = f"{table.name!r} is owned through {column_name!r}"
    if column is None:
        raise DeclarationError(f"{where}, which is not one of its columns")
    keys = list(column.foreign_keys)
    if len(keys) != 1:
        raise DeclarationError(
            f"{where}, which must reference exactly one parent column "
            f"(it has {len(keys)} foreign keys)"
        )
    parent_column = keys[0].column
    parent: Table = parent_column.table
    if parent.name in seen:
        raise DeclarationError(
            f"{where}, which leads back to {parent.name!r}: a policy may not read its own table"
        )
    parent_security = declared(parent)
    reference = f"{_quote(table.name)}.{_quote(column.name)}"
    if parent_security is not None and parent_security.sharing is not None:
        if parent_column.name != parent_security.sharing.key:
            raise DeclarationError(
                f"{where}, which references {parent.name}.{parent_column.name}, not the "
                f"shared key {parent_security.sharing.key!r}"
            )
        return f"{reference} = ANY ({_shared_keys(parent.name, access)})"
    if parent_security is None or not (parent_security.owner_column or parent_security.through):
        raise DeclarationError(
            f"{where}, but {parent.name!r} is owned by no user: declare it owned_by(...) "
            "or owned_through(...) first"
        )
    readable = any(
        grant.role in (role, PUBLIC) and "SELECT" in grant.privileges
        for grant in parent_security.grants
    )
    if not readable:
        raise DeclarationError(
            f"{where}, but {role!r} may not read {parent.name!r}, so its policies could "
            "never see the parent row: grant it SELECT there"
        )
    name = _quote(parent.name)
    if parent_security.owner_column:
        owner = f"{name}.{_quote(parent_security.owner_column)}"
        parent_is_mine = through.identity.owns(owner)
    else:
        assert parent_security.through is not None
        grandparent = ThroughParent(
            parent_security.through.column, role, through.identity, through.claim_acknowledged
        )
        parent_is_mine = _owned_through(
            parent, grandparent, seen=(*seen, parent.name), per_row=per_row, access=access
        )
    key = f"{name}.{_quote(parent_column.name)}"
    if per_row:
        return f"EXISTS (SELECT 1 FROM {name} WHERE {key} = {reference} AND {parent_is_mine})"
    return f"{reference} = ANY (ARRAY(SELECT {key} FROM {name} WHERE {parent_is_mine}))"


def check_declarations(tables: Iterable[Table]) -> None:
    """Raise :class:`DeclarationError` naming every problem with the declarations."""
    problems = [problem for table in tables for problem in _problems(table)]
    problems += [
        f"role {role!r} is declared a member of {group!r}, which is not declared in ROLES "
        "(models/security.py)"
        for role in ROLES
        for group in declared_role(role).member_of
        if group not in ROLES
    ]
    tables = list(tables)
    problems += [
        problem
        for function in declared_functions_or_none(tables)
        for problem in _function_problems(function)
    ]
    if problems:
        raise DeclarationError("; ".join(problems))


def _problems(table: Table) -> Iterator[str]:
    if table.info.get("skip_autogenerate"):
        return
    try:
        declaration = row_security(table)
    except DeclarationError as exc:
        yield str(exc)
        return
    name = repr(table.name)
    if declaration is None:
        yield f"table {name} declares no row-level security: add {HOW_TO_DECLARE}"
        return
    yield from _undeclared_roles(name, declaration)
    yield from _claims_alone(name, declaration)
    yield from _spelling_problems(name, declaration)
    yield from _column_grant_problems(table, declaration)
    names = [policy.name for policy in declaration.policies]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        yield f"table {name} declares policy {duplicate!r} twice"
    if declaration.owner_column and declaration.owner_column not in table.columns:
        yield f"table {name} is owned by {declaration.owner_column!r}, which is not a column"
    if not declaration.enabled:
        if not (declaration.exemption or "").strip():
            yield (
                f"table {name} disables row-level security without saying why: "
                'use without_row_security("<why>")'
            )
        if declaration.policies:
            yield f"table {name} declares policies but disables row-level security"


#: What a policy reads when it reads the transaction's claim, and what it calls when
#: it verifies it.
_CLAIM = re.compile(r"current_setting\(\s*'app\.", re.IGNORECASE)
_VERIFIED = re.compile(
    rf"\b{re.escape(VERIFIED_USER_ID.schema)}\.{re.escape(VERIFIED_USER_ID.name)}\s*\(",
    re.IGNORECASE,
)


def reads_claim_alone(expression: str | None) -> bool:
    """Whether `expression` reads a setting of the transaction's (``app.*``, which any
    SQL may set) without requiring the verified identity."""
    return bool(expression and _CLAIM.search(expression) and not _VERIFIED.search(expression))


def _claims_alone(name: str, declaration: RowSecurity) -> Iterator[str]:
    for policy in declaration.policies:
        if policy.claim_acknowledged is not None and policy.claim_acknowledged.strip():
            continue
        if reads_claim_alone(policy.using) or reads_claim_alone(policy.with_check):
            yield (
                f"policy {policy.name!r} on {name} trusts the user id the transaction claims "
                "(app.user_id, which any SQL it runs may set) without the verified one: "
                "use the verified identity (IDENTITY, public.verified_user_id()), or, for a "
                'trusted job\'s role only, say why with claim_acknowledged="..."'
            )


def _spelling_problems(name: str, declaration: RowSecurity) -> Iterator[str]:
    for policy in declaration.policies:
        if policy.command not in POLICY_COMMANDS:
            yield (
                f"policy {policy.name!r} on {name} is for {policy.command!r}: "
                f"write one of {', '.join(POLICY_COMMANDS)}"
            )
    for grant in declaration.grants:
        if unknown := sorted(set(grant.privileges) - set(TABLE_PRIVILEGES)):
            yield f"table {name} grants {grant.role!r} {unknown}: write them as {TABLE_PRIVILEGES}"


def _column_grant_problems(table: Table, declaration: RowSecurity) -> Iterator[str]:
    name = repr(table.name)
    for grant in declaration.grants:
        if grant.columns is None:
            continue
        if unknown := sorted(set(grant.columns) - set(table.columns.keys())):
            yield f"table {name} grants {grant.role!r} columns it does not have: {unknown}"
        if per_table := sorted(set(grant.privileges) - COLUMN_PRIVILEGES):
            allowed = ", ".join(sorted(COLUMN_PRIVILEGES))
            yield f"table {name} grants {per_table} on columns; only {allowed} can be"


def _undeclared_roles(name: str, declaration: RowSecurity) -> Iterator[str]:
    known = {*ROLES, PUBLIC}
    for policy in declaration.policies:
        for role in policy.roles:
            if role not in known:
                yield (
                    f"policy {policy.name!r} on {name} names role {role!r}, which is not "
                    "declared in ROLES (models/security.py)"
                )
    for grant in declaration.grants:
        if grant.role not in known:
            yield (
                f"table {name} grants to role {grant.role!r}, which is not declared in ROLES "
                "(models/security.py)"
            )


def check_no_recursion(tables: Iterable[Table], reads: Mapping[tuple[str, str], set[str]]) -> None:
    """Refuse policies that read each other's tables for one role: PostgreSQL would
    refuse every query on them ("infinite recursion detected in policy"). `reads` is
    what each policy reads, by (table, policy), as PostgreSQL recorded it."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for table in tables:
        declaration = row_security(table)
        for policy in declaration.policies if declaration else ():
            for role in policy.roles:
                edges[role][table.name] |= reads.get((table.name, policy.name), set())
    for role, graph in sorted(edges.items()):
        cycle = _cycle(graph)
        if cycle:
            path = " -> ".join(repr(name) for name in cycle)
            raise DeclarationError(
                f"the policies for {role!r} read each other's tables ({path}): PostgreSQL "
                "would refuse every query on them (infinite recursion detected in policy); "
                "make one of them read a table whose policies do not read back"
            )


def _cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` (table -> tables it reads), as a path, if it has one."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for following in sorted(graph.get(node, ())):
            if state.get(following) == 1:
                return [*path[path.index(following) :], following]
            if following not in state and (found := visit(following)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def declared_functions(tables: Iterable[Table]) -> tuple[Function, ...]:
    """The declared functions as the revisions make them: each executable by its
    declared executors and by every role whose policies call it, or call another
    function of the same identity (a role that must prove whom it acts for must be able
    to bind a session too, not only to have it checked)."""
    tables = list(tables)
    sharing = [function for table in tables for function in sharing_functions(table)]
    functions = [*FUNCTIONS, *sharing]
    callers: dict[str, set[str]] = defaultdict(set)
    for table in tables:
        declaration = row_security(table)
        for policy in declaration.policies if declaration else ():
            expressions = f"{policy.using or ''} {policy.with_check or ''}"
            for function in functions:
                if f"{function.schema}.{_quote(function.name)}(" in expressions or (
                    f"{function.schema}.{function.name}(" in expressions
                ):
                    callers[function.signature] |= set(policy.roles)
    for identity_functions in (IDENTITY.functions,):
        together = set().union(*(callers[f.signature] for f in identity_functions))
        for function in identity_functions:
            callers[function.signature] |= together
    if sharing:
        # The sharing functions ask who the current user is, as their owner.
        for function in IDENTITY.functions:
            if function.name == "verified_user_id":
                callers[function.signature].add(SHARING_ROLE)
    return tuple(
        replace(
            function,
            executors=tuple(
                dict.fromkeys([*function.executors, *sorted(callers[function.signature])])
            ),
        )
        for function in functions
    )


def declared_functions_or_none(tables: list[Table]) -> tuple[Function, ...]:
    """The declared functions, or the static ones when the declarations do not resolve
    (their problems are said already)."""
    try:
        return declared_functions(tables)
    except DeclarationError:
        return FUNCTIONS


def _function_problems(function: Function) -> Iterator[str]:
    name = repr(function.signature)
    known = {*ROLES, PUBLIC}
    for role in (function.owner, *function.executors):
        if role is not None and role not in known:
            yield f"function {name} names role {role!r}, which is not declared in ROLES"
    if function.security_definer and function.search_path is None:
        yield (
            f"function {name} is SECURITY DEFINER without a pinned search_path: a caller "
            'could make it run their objects as its owner (declare search_path="")'
        )
