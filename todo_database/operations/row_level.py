"""Alembic operations for row-level security, their SQL and their rendering.

Each operation is registered with Alembic's documented hooks
(``Operations.register_operation``, ``Operations.implementation_for``,
``renderers.dispatch_for``), so a revision reads like any other::

    op.ensure_role("todo_app")
    op.enable_row_security("todo")
    op.force_row_security("todo")
    op.create_policy("todo", "todo_app_select_own", command="SELECT", roles=["todo_app"],
                     using="user_id = (SELECT ...)")
    op.grant_privileges("todo", "todo_app", ["DELETE", "INSERT", "SELECT", "UPDATE"])

Every operation knows its reverse, so autogenerate writes the downgrade too, and
every one renders in offline (``--sql``) mode because it only ever executes SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from models.security import Policy, declared_role
from todo_database.operations.opposites import OppositeOp, opposites

#: Table privileges in the order GRANT statements list them (MAINTAIN: PostgreSQL 17+).
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


def _quote(operations: Operations, name: str) -> str:
    return str(operations.impl.dialect.identifier_preparer.quote(name))


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _table(operations: Operations, table: str, schema: str | None) -> str:
    quoted = _quote(operations, table)
    return f"{_quote(operations, schema)}.{quoted}" if schema else quoted


def _roles_sql(operations: Operations, roles: Sequence[str]) -> str:
    return ", ".join("PUBLIC" if role == "public" else _quote(operations, role) for role in roles)


# --- roles --------------------------------------------------------------------------


#: pg_roles' column for each role attribute (``models.security.ROLE_ATTRIBUTES``).
ROLE_COLUMNS = {
    "login": "rolcanlogin",
    "superuser": "rolsuper",
    "createdb": "rolcreatedb",
    "createrole": "rolcreaterole",
    "inherit": "rolinherit",
    "replication": "rolreplication",
    "bypassrls": "rolbypassrls",
}
#: What a role is when nothing else is declared.
DEFAULT_ATTRIBUTES = declared_role("").attributes()


def role_clause(attributes: Mapping[str, bool]) -> str:
    """``LOGIN NOBYPASSRLS ...``: `attributes` as CREATE and ALTER ROLE write them."""
    return " ".join(f"{'' if value else 'NO'}{name.upper()}" for name, value in attributes.items())


#: SQL: whether the migration role may grant, alter and drop the existing role `{role}`
#: (a literal). Before PostgreSQL 16, CREATEROLE manages every role but a superuser; from
#: 16 on, only the roles it created (CREATE ROLE grants their creator ADMIN OPTION) or
#: was granted WITH ADMIN OPTION. Neon's owner role is such a CREATEROLE role.
MAY_MANAGE = """(SELECT me.rolsuper
        OR (current_setting('server_version_num')::int < 160000
            AND me.rolcreaterole AND NOT it.rolsuper)
        OR pg_has_role(me.oid, it.oid, 'MEMBER WITH ADMIN OPTION')
     FROM pg_roles me, pg_roles it
     WHERE me.rolname = current_user AND it.rolname = {role})"""


@Operations.register_operation("ensure_role")
@dataclass
class EnsureRoleOp(MigrateOperation):
    """Create a role as declared unless it exists; refuse one that exists otherwise.

    Roles are cluster-wide: every database on the server (test databases, Neon
    branches of one compute) shares them, so creating is idempotent and safe under
    concurrent migrations of several databases. An existing role whose attributes or
    memberships differ from the declaration (someone made the API's role BYPASSRLS, or
    a member of the auth role) fails the revision, naming the difference: nothing is
    changed behind the back of whoever changed it, and nothing runs on top of it. So
    does an existing role the migration role may not manage (:data:`MAY_MANAGE`: on
    PostgreSQL 16+, one it did not create, as a role made in Neon's console), saying
    what to do, before any later statement needs to grant it or act as it.
    """

    name: str
    attributes: dict[str, bool] = field(default_factory=lambda: dict(DEFAULT_ATTRIBUTES))
    member_of: tuple[str, ...] = ()

    @classmethod
    def ensure_role(
        cls,
        operations: Operations,
        name: str,
        *,
        member_of: Sequence[str] = (),
        **attributes: bool,
    ) -> None:
        """``op.ensure_role("todo_app")``, attributes other than the defaults as
        keywords (``login=True``), and the roles it is a member of."""
        unknown = set(attributes) - set(DEFAULT_ATTRIBUTES)
        if unknown:
            raise TypeError(f"ensure_role: no such role attribute: {', '.join(sorted(unknown))}")
        operations.invoke(cls(name, {**DEFAULT_ATTRIBUTES, **attributes}, tuple(member_of)))

    def reverse(self) -> DropRoleIfUnusedOp:
        return DropRoleIfUnusedOp(self.name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("ensure_role", self.name)


@Operations.register_operation("drop_role_if_unused")
@dataclass
class DropRoleIfUnusedOp(MigrateOperation):
    """Drop a role only when no database of the cluster still depends on it and no role
    is a member of it but those that only manage it (ADMIN OPTION alone, as CREATE ROLE
    leaves its creator on PostgreSQL 16+); otherwise leave it, so a downgrade here never
    breaks another database. A role the migration role may not manage (made by someone
    else, on PostgreSQL 16+) is left too, with a notice: it was never the chain's."""

    name: str

    @classmethod
    def drop_role_if_unused(cls, operations: Operations, name: str) -> None:
        operations.invoke(cls(name))

    def reverse(self) -> EnsureRoleOp:
        return EnsureRoleOp(self.name)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_role_if_unused", self.name)


@Operations.register_operation("alter_role")
@dataclass
class AlterRoleOp(MigrateOperation):
    """``ALTER ROLE``: a managed role's attributes put back as declared (a repair of
    drift that ``alembic check`` reports). Cluster-wide, like the role itself."""

    name: str
    attributes: dict[str, bool]
    previous: dict[str, bool]

    @classmethod
    def alter_role(cls, operations: Operations, name: str, **attributes: bool) -> None:
        # The previous attributes matter only to reverse(); revisions pass the new ones.
        operations.invoke(cls(name, attributes, attributes))

    def reverse(self) -> AlterRoleOp:
        return AlterRoleOp(self.name, self.previous, self.attributes)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("alter_role", self.name, tuple(sorted(self.attributes.items())))


@dataclass
class _MembershipOp(OppositeOp):
    """``GRANT group TO member`` or ``REVOKE group FROM member``; each the other's reverse."""

    group: str
    member: str

    @classmethod
    def membership(cls, operations: Operations, group: str, member: str) -> None:
        operations.invoke(cls(group, member))


@Operations.register_operation("grant_role", "membership")
class GrantRoleOp(_MembershipOp):
    operation_name = "grant_role"


@Operations.register_operation("revoke_role", "membership")
class RevokeRoleOp(_MembershipOp):
    operation_name = "revoke_role"


opposites(GrantRoleOp, RevokeRoleOp)


@Operations.register_operation("set_login_settings")
@dataclass
class SetLoginSettingsOp(MigrateOperation):
    """The declared settings of a role's login members (``Role.login_settings``), as
    their sessions in this database get them: on the role itself, as the record of what
    is declared, and on each LOGIN member that neither bypasses row security nor is a
    superuser (the application's login roles). They are set in this database (``ALTER
    ROLE ... IN DATABASE ... SET``, which outranks a role's own settings); what else the
    role holds in it is reset, and so is what it holds role-wide but the declared values
    (a login role made with its limits, as ``CREATE ROLE`` then ``ALTER ROLE ... SET``,
    keeps them for every database). A setting the server does not know
    (``transaction_timeout`` before PostgreSQL 17) is left out there."""

    name: str
    settings: dict[str, str]
    previous: dict[str, str] = field(default_factory=dict)

    @classmethod
    def set_login_settings(
        cls, operations: Operations, name: str, settings: Mapping[str, str]
    ) -> None:
        # What the members held before matters only to reverse(): none, then.
        operations.invoke(cls(name, dict(settings)))

    def reverse(self) -> SetLoginSettingsOp:
        return SetLoginSettingsOp(self.name, self.previous, self.settings)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("set_login_settings", self.name, tuple(sorted(self.settings.items())))


#: SQL: the login roles a role's ``login_settings`` apply to, besides the role itself
#: (``{role}``, a literal): its members that may log in, neither superusers nor able to
#: bypass row security (which rules out the migration role).
LOGIN_MEMBERS = """SELECT m.oid, m.rolname FROM pg_roles m
    WHERE m.rolcanlogin AND NOT m.rolsuper AND NOT m.rolbypassrls
      AND pg_has_role(m.oid, (SELECT grp.oid FROM pg_roles grp WHERE grp.rolname = {role}),
                      'MEMBER')"""


@Operations.implementation_for(SetLoginSettingsOp)
def _set_login_settings(operations: Operations, operation: SetLoginSettingsOp) -> None:
    name = _literal(operation.name)
    declared = (
        "ARRAY["
        + ", ".join(_literal(f"{key}={value}") for key, value in sorted(operation.settings.items()))
        + "]::text[]"
    )
    settings = "".join(
        f"""
        IF EXISTS (SELECT FROM pg_settings s WHERE s.name = {_literal(key)}) THEN
            EXECUTE format('ALTER ROLE %I IN DATABASE %I SET {key} = %L', member.rolname,
                           current_database(), {_literal(value)});
        END IF;"""
        for key, value in sorted(operation.settings.items())
    )
    operations.execute(
        f"""DO $$
DECLARE
    member record;
    setting record;
BEGIN
    FOR member IN SELECT oid, rolname FROM pg_roles WHERE rolname = {name}
                  UNION {LOGIN_MEMBERS.format(role=name)} LOOP
        IF NOT {MAY_MANAGE.format(role="member.rolname")} THEN
            RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE =
                'login role ' || member.rolname || ' is a member of ' || {name}
                || ', but ' || quote_ident(current_user) || ' may not set its limits (a '
                || 'role made in the Neon console is not the owner''s): make the API''s '
                || 'login roles as ' || quote_ident(current_user)
                || ', or have a role that may run GRANT ' || member.rolname || ' TO '
                || quote_ident(current_user) || ' WITH ADMIN OPTION';
        END IF;
        BEGIN
            FOR setting IN SELECT split_part(entry, '=', 1) AS name, entry
                           FROM pg_db_role_setting s, unnest(s.setconfig) AS entry
                           WHERE s.setrole = member.oid AND s.setdatabase = 0 LOOP
                IF setting.entry <> ALL ({declared}) THEN
                    EXECUTE format('ALTER ROLE %I RESET %s', member.rolname, setting.name);
                END IF;
            END LOOP;
            EXECUTE format('ALTER ROLE %I IN DATABASE %I RESET ALL', member.rolname,
                           current_database());{settings.replace(chr(10), chr(10) + "    ")}
        EXCEPTION WHEN undefined_object THEN
            NULL;  -- dropped meanwhile: nothing of it is left to limit
        END;
    END LOOP;
END
$$"""
    )


@Operations.implementation_for(EnsureRoleOp)
def _ensure_role(operations: Operations, operation: EnsureRoleOp) -> None:
    role, name = _quote(operations, operation.name), _literal(operation.name)
    declared = operation.attributes
    # Each attribute that differs, as "BYPASSRLS (declared NOBYPASSRLS)".
    differences = ", ".join(
        f"CASE WHEN {ROLE_COLUMNS[attribute]} <> {str(value).lower()} THEN "
        f"'{role_clause({attribute: not value})} (declared {role_clause({attribute: value})})' END"
        for attribute, value in declared.items()
    )
    groups = "ARRAY[" + ", ".join(_literal(g) for g in sorted(operation.member_of)) + "]::text[]"
    grants = "".join(
        f"\n        GRANT {_quote(operations, group)} TO {role};"
        for group in sorted(operation.member_of)
    )
    operations.execute(
        f"""DO $$
DECLARE
    differences text;
    found_groups text[];
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN
        CREATE ROLE {role} {role_clause(declared)};{grants}
        RETURN;
    END IF;
    IF NOT {MAY_MANAGE.format(role=name)} THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE =
            'role ' || {name} || ' exists, but ' || quote_ident(current_user)
            || ' may not manage it (PostgreSQL 16+ lets a CREATEROLE role manage only the '
            || 'roles it created or holds WITH ADMIN OPTION; a role made in the Neon console '
            || 'is not the owner''s): drop ' || {name} || ' so that the migration creates it, '
            || 'or have a role that may run GRANT ' || {name} || ' TO '
            || quote_ident(current_user) || ' WITH ADMIN OPTION';
    END IF;
    SELECT nullif(concat_ws(', ', {differences}), '') INTO differences
    FROM pg_roles WHERE rolname = {name};
    SELECT coalesce(array_agg(g.rolname::text ORDER BY g.rolname), '{{}}') INTO found_groups
    FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
    WHERE m.member = {name}::regrole;
    IF differences IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE =
            'role ' || {name} || ' exists, but is ' || differences
            || ': ALTER ROLE it back, or change its declaration in models/security.py';
    END IF;
    IF found_groups IS DISTINCT FROM {groups} THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE =
            'role ' || {name} || ' is a member of ' || found_groups::text
            || ', but is declared a member of ' || {groups}::text
            || ': GRANT or REVOKE it back, or change its declaration in models/security.py';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- created by a concurrent migration of another database
END
$$"""
    )


@Operations.implementation_for(AlterRoleOp)
def _alter_role(operations: Operations, operation: AlterRoleOp) -> None:
    role = _quote(operations, operation.name)
    operations.execute(f"ALTER ROLE {role} {role_clause(operation.attributes)}")


def _change_membership(operations: Operations, operation: _MembershipOp) -> None:
    group, member = _quote(operations, operation.group), _quote(operations, operation.member)
    if isinstance(operation, GrantRoleOp):
        operations.execute(f"GRANT {group} TO {member}")
    else:
        operations.execute(f"REVOKE {group} FROM {member}")


for _membership in (GrantRoleOp, RevokeRoleOp):
    Operations.implementation_for(_membership)(_change_membership)


@Operations.implementation_for(DropRoleIfUnusedOp)
def _drop_role_if_unused(operations: Operations, operation: DropRoleIfUnusedOp) -> None:
    name = _literal(operation.name)
    operations.execute(
        f"""DO $$
DECLARE
    members boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {name}) THEN
        RETURN;
    END IF;
    -- A member that holds only ADMIN OPTION (PostgreSQL 16+: what CREATE ROLE gives its
    -- creator) manages the role without using it.
    IF current_setting('server_version_num')::int >= 160000 THEN
        EXECUTE 'SELECT EXISTS (SELECT FROM pg_auth_members WHERE roleid = $1::regrole '
            'AND (inherit_option OR set_option OR NOT admin_option))' INTO members USING {name};
    ELSE
        members := EXISTS (SELECT FROM pg_auth_members WHERE roleid = {name}::regrole);
    END IF;
    IF NOT members AND NOT EXISTS (SELECT FROM pg_shdepend WHERE refobjid = {name}::regrole) THEN
        IF NOT {MAY_MANAGE.format(role=name)} THEN
            RAISE NOTICE 'role % is kept: % may not drop it', {name}, current_user;
            RETURN;
        END IF;
        DROP ROLE {_quote(operations, operation.name)};
    END IF;
EXCEPTION WHEN dependent_objects_still_exist THEN
    NULL;  -- another database gained a dependency meanwhile: keep the role
END
$$"""
    )


# --- enabling and forcing -------------------------------------------------------------


@dataclass
class _TableSwitchOp(OppositeOp):
    """``ALTER TABLE <table> <clause>``: one of four switches, each the reverse of another."""

    table_name: str
    schema: str | None = None

    #: What follows ``ALTER TABLE <table>``.
    clause: ClassVar[str] = ""

    @classmethod
    def switch(cls, operations: Operations, table_name: str, schema: str | None = None) -> None:
        """``op.<operation_name>(table_name, schema=None)``: every switch's entry point."""
        operations.invoke(cls(table_name, schema))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.operation_name, self.schema, self.table_name)


@Operations.register_operation("enable_row_security", "switch")
class EnableRowSecurityOp(_TableSwitchOp):
    clause = "ENABLE ROW LEVEL SECURITY"
    operation_name = "enable_row_security"


@Operations.register_operation("disable_row_security", "switch")
class DisableRowSecurityOp(_TableSwitchOp):
    clause = "DISABLE ROW LEVEL SECURITY"
    operation_name = "disable_row_security"


@Operations.register_operation("force_row_security", "switch")
class ForceRowSecurityOp(_TableSwitchOp):
    clause = "FORCE ROW LEVEL SECURITY"
    operation_name = "force_row_security"


@Operations.register_operation("no_force_row_security", "switch")
class NoForceRowSecurityOp(_TableSwitchOp):
    clause = "NO FORCE ROW LEVEL SECURITY"
    operation_name = "no_force_row_security"


opposites(EnableRowSecurityOp, DisableRowSecurityOp)
opposites(ForceRowSecurityOp, NoForceRowSecurityOp)


def _switch_table(operations: Operations, operation: _TableSwitchOp) -> None:
    table = _table(operations, operation.table_name, operation.schema)
    operations.execute(f"ALTER TABLE {table} {operation.clause}")


for _switch in (
    EnableRowSecurityOp,
    DisableRowSecurityOp,
    ForceRowSecurityOp,
    NoForceRowSecurityOp,
):
    Operations.implementation_for(_switch)(_switch_table)


# --- policies ------------------------------------------------------------------------


def policy_kind(policy: Policy) -> str:
    """``AS PERMISSIVE|RESTRICTIVE FOR <command>``: what ALTER POLICY cannot change."""
    return f"AS {'PERMISSIVE' if policy.permissive else 'RESTRICTIVE'} FOR {policy.command}"


def policy_expressions(policy: Policy) -> str:
    """``USING (...) WITH CHECK (...)``, each clause only when the policy has it."""
    clauses = []
    if policy.using is not None:
        clauses.append(f"USING ({policy.using})")
    if policy.with_check is not None:
        clauses.append(f"WITH CHECK ({policy.with_check})")
    return " ".join(clauses)


def policy_clauses(policy: Policy) -> str:
    """Everything of a ``CREATE POLICY`` after ``ON <table>`` but the roles."""
    return f"{policy_kind(policy)} {policy_expressions(policy)}".rstrip()


@dataclass
class _PolicyDefinitionOp(OppositeOp):
    """Create or drop a policy. Both carry the whole definition: each is the other's
    reverse, and a drop must be able to recreate what it dropped."""

    table_name: str
    policy: Policy
    schema: str | None = None

    @classmethod
    def from_definition(
        cls,
        operations: Operations,
        table_name: str,
        name: str,
        *,
        command: str = "ALL",
        roles: Sequence[str] = ("public",),
        using: str | None = None,
        with_check: str | None = None,
        permissive: bool = True,
        schema: str | None = None,
    ) -> None:
        """``op.create_policy(...)`` / ``op.drop_policy(...)``, with the same arguments."""
        policy = Policy(name, command, tuple(roles), using, with_check, permissive)  # type: ignore[arg-type]
        operations.invoke(cls(table_name, policy, schema))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.operation_name, self.schema, self.table_name, self.policy.name)


@Operations.register_operation("create_policy", "from_definition")
class CreatePolicyOp(_PolicyDefinitionOp):
    operation_name = "create_policy"


@Operations.register_operation("drop_policy", "from_definition")
class DropPolicyOp(_PolicyDefinitionOp):
    operation_name = "drop_policy"


opposites(CreatePolicyOp, DropPolicyOp)


@Operations.register_operation("alter_policy")
@dataclass
class AlterPolicyOp(MigrateOperation):
    """ALTER POLICY: what PostgreSQL lets change in place (roles, USING, WITH CHECK).

    A change of command or of PERMISSIVE/RESTRICTIVE is a drop and a create instead.
    """

    table_name: str
    policy: Policy
    previous: Policy
    schema: str | None = None

    @classmethod
    def alter_policy(
        cls,
        operations: Operations,
        table_name: str,
        name: str,
        *,
        roles: Sequence[str],
        using: str | None = None,
        with_check: str | None = None,
        schema: str | None = None,
    ) -> None:
        # The previous definition matters only to reverse(); revisions pass the new one.
        policy = Policy(name, "ALL", tuple(roles), using, with_check)
        operations.invoke(cls(table_name, policy, policy, schema))

    def reverse(self) -> AlterPolicyOp:
        return AlterPolicyOp(self.table_name, self.previous, self.policy, self.schema)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("alter_policy", self.schema, self.table_name, self.policy.name)


@Operations.implementation_for(CreatePolicyOp)
def _create_policy(operations: Operations, operation: CreatePolicyOp) -> None:
    policy = operation.policy
    table = _table(operations, operation.table_name, operation.schema)
    operations.execute(
        f"CREATE POLICY {_quote(operations, policy.name)} ON {table} {policy_kind(policy)} "
        f"TO {_roles_sql(operations, policy.roles)} {policy_expressions(policy)}".rstrip()
    )


@Operations.implementation_for(DropPolicyOp)
def _drop_policy(operations: Operations, operation: DropPolicyOp) -> None:
    table = _table(operations, operation.table_name, operation.schema)
    operations.execute(f"DROP POLICY {_quote(operations, operation.policy.name)} ON {table}")


@Operations.implementation_for(AlterPolicyOp)
def _alter_policy(operations: Operations, operation: AlterPolicyOp) -> None:
    policy = operation.policy
    table = _table(operations, operation.table_name, operation.schema)
    operations.execute(
        f"ALTER POLICY {_quote(operations, policy.name)} ON {table} "
        f"TO {_roles_sql(operations, policy.roles)} {policy_expressions(policy)}".rstrip()
    )


# --- privileges ----------------------------------------------------------------------


@dataclass
class _PrivilegesOp(OppositeOp):
    """Grant or revoke table privileges; each is the other's reverse.

    `grant_option` is WITH GRANT OPTION on a grant, and on a revoke GRANT OPTION FOR:
    only the right to pass the privileges on. With `columns`, the privileges are on
    those columns only (``GRANT SELECT (id, name) ON ...``)."""

    table_name: str
    role: str
    privileges: tuple[str, ...]
    schema: str | None = None
    grant_option: bool = False
    columns: tuple[str, ...] = ()

    #: GRANT and REVOKE change the catalog, not the table: no lock to take up front
    #: (:mod:`todo_database.online.forms`).
    takes_no_table_lock: ClassVar[bool] = True
    #: The ``op.`` method's keyword for `grant_option`.
    option_keyword: ClassVar[str] = ""

    def statement(self, privileges: str, table: str, role: str) -> str:
        raise NotImplementedError

    def to_diff_tuple(self) -> tuple[Any, ...]:
        only_option = ("grant option",) if self.grant_option else ()
        on_columns = (self.columns,) if self.columns else ()
        return (
            self.operation_name,
            self.schema,
            self.table_name,
            self.role,
            self.privileges,
            *on_columns,
            *only_option,
        )


@Operations.register_operation("grant_privileges")
class GrantPrivilegesOp(_PrivilegesOp):
    operation_name = "grant_privileges"
    option_keyword = "with_grant_option"

    @classmethod
    def grant_privileges(
        cls,
        operations: Operations,
        table_name: str,
        role: str,
        privileges: Sequence[str],
        *,
        schema: str | None = None,
        with_grant_option: bool = False,
        columns: Sequence[str] = (),
    ) -> None:
        operations.invoke(
            cls(table_name, role, tuple(privileges), schema, with_grant_option, tuple(columns))
        )

    def statement(self, privileges: str, table: str, role: str) -> str:
        option = " WITH GRANT OPTION" if self.grant_option else ""
        return f"GRANT {privileges} ON {table} TO {role}{option}"


@Operations.register_operation("revoke_privileges")
class RevokePrivilegesOp(_PrivilegesOp):
    operation_name = "revoke_privileges"
    option_keyword = "grant_option"

    @classmethod
    def revoke_privileges(
        cls,
        operations: Operations,
        table_name: str,
        role: str,
        privileges: Sequence[str],
        *,
        schema: str | None = None,
        grant_option: bool = False,
        columns: Sequence[str] = (),
    ) -> None:
        operations.invoke(
            cls(table_name, role, tuple(privileges), schema, grant_option, tuple(columns))
        )

    def statement(self, privileges: str, table: str, role: str) -> str:
        option = "GRANT OPTION FOR " if self.grant_option else ""
        return f"REVOKE {option}{privileges} ON {table} FROM {role}"


opposites(GrantPrivilegesOp, RevokePrivilegesOp)


def _change_privileges(operations: Operations, operation: _PrivilegesOp) -> None:
    table = _table(operations, operation.table_name, operation.schema)
    role = _roles_sql(operations, [operation.role])
    privileges = ", ".join(operation.privileges)
    if operation.columns:
        columns = ", ".join(_quote(operations, column) for column in operation.columns)
        privileges = ", ".join(f"{privilege} ({columns})" for privilege in operation.privileges)
    operations.execute(operation.statement(privileges, table, role))


for _privileges in (GrantPrivilegesOp, RevokePrivilegesOp):
    Operations.implementation_for(_privileges)(_change_privileges)


@dataclass
class _DatabasePrivilegesOp(OppositeOp):
    """``GRANT`` or ``REVOKE`` privileges on the database the revision runs in (named at
    run time: a revision serves every database of the project); each the other's
    reverse."""

    role: str
    privileges: tuple[str, ...]

    takes_no_table_lock: ClassVar[bool] = True

    @classmethod
    def database_privileges(
        cls, operations: Operations, role: str, privileges: Sequence[str]
    ) -> None:
        operations.invoke(cls(role, tuple(privileges)))

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.operation_name, self.role, self.privileges)


@Operations.register_operation("grant_database_privileges", "database_privileges")
class GrantDatabasePrivilegesOp(_DatabasePrivilegesOp):
    operation_name = "grant_database_privileges"


@Operations.register_operation("revoke_database_privileges", "database_privileges")
class RevokeDatabasePrivilegesOp(_DatabasePrivilegesOp):
    operation_name = "revoke_database_privileges"


opposites(GrantDatabasePrivilegesOp, RevokeDatabasePrivilegesOp)


def _change_database_privileges(operations: Operations, operation: _DatabasePrivilegesOp) -> None:
    role = _roles_sql(operations, [operation.role]).replace("'", "''")
    verb, to = (
        ("GRANT", "TO") if isinstance(operation, GrantDatabasePrivilegesOp) else ("REVOKE", "FROM")
    )
    privileges = ", ".join(operation.privileges)
    operations.execute(
        f"""DO $$
BEGIN
    EXECUTE format('{verb} {privileges} ON DATABASE %I {to} {role}', current_database());
END
$$"""
    )


for _database_privileges in (GrantDatabasePrivilegesOp, RevokeDatabasePrivilegesOp):
    Operations.implementation_for(_database_privileges)(_change_database_privileges)


@dataclass
class _SequenceUsageOp(OppositeOp):
    """``GRANT`` or ``REVOKE USAGE`` on the sequence behind a serial column (an integer
    primary key): a role that may insert rows needs it to draw the next id. Found at
    run time (``pg_get_serial_sequence``), so it works on a table the same revision
    creates. Identity columns need no such grant."""

    table_name: str
    column_name: str
    role: str

    takes_no_table_lock: ClassVar[bool] = True

    @classmethod
    def sequence_usage(
        cls, operations: Operations, table_name: str, column_name: str, role: str
    ) -> None:
        operations.invoke(cls(table_name, column_name, role))


@Operations.register_operation("grant_sequence_usage", "sequence_usage")
class GrantSequenceUsageOp(_SequenceUsageOp):
    operation_name = "grant_sequence_usage"


@Operations.register_operation("revoke_sequence_usage", "sequence_usage")
class RevokeSequenceUsageOp(_SequenceUsageOp):
    operation_name = "revoke_sequence_usage"


opposites(GrantSequenceUsageOp, RevokeSequenceUsageOp)


def _change_sequence_usage(operations: Operations, operation: _SequenceUsageOp) -> None:
    table = _literal(_quote(operations, operation.table_name))
    role = _roles_sql(operations, [operation.role])
    verb, to = (
        ("GRANT", "TO") if isinstance(operation, GrantSequenceUsageOp) else ("REVOKE", "FROM")
    )
    operations.execute(
        f"""DO $$
BEGIN
    EXECUTE '{verb} USAGE ON SEQUENCE '
        || pg_get_serial_sequence({table}, {_literal(operation.column_name)}) || ' {to} {role}';
END
$$"""
    )


for _sequence_usage in (GrantSequenceUsageOp, RevokeSequenceUsageOp):
    Operations.implementation_for(_sequence_usage)(_change_sequence_usage)


#: Every operation on one table's row-level security (a ``table_name`` attribute each).
TABLE_OPERATIONS = (
    _TableSwitchOp,
    _PolicyDefinitionOp,
    AlterPolicyOp,
    _PrivilegesOp,
    _SequenceUsageOp,
)


# --- rendering into revision files ----------------------------------------------------


def _plain(value: Any) -> Any:
    """`value` as a revision writes it: a declared ``Role`` as its name, so that a
    revision never depends on how the models spell a role today."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list | tuple):
        return type(value)(_plain(item) for item in value)
    return value


def _call(name: str, *args: Any, **kwargs: Any) -> str:
    rendered = [repr(_plain(arg)) for arg in args]
    rendered += [f"{key}={_plain(value)!r}" for key, value in kwargs.items() if value is not None]
    return f"op.{name}({', '.join(rendered)})"


def _policy_kwargs(policy: Policy) -> dict[str, Any]:
    return {
        "command": policy.command,
        "roles": list(policy.roles),
        "using": policy.using,
        "with_check": policy.with_check,
        "permissive": None if policy.permissive else False,
    }


@renderers.dispatch_for(EnsureRoleOp)
def _render_ensure_role(context: AutogenContext, operation: EnsureRoleOp) -> str:
    changed = {k: v for k, v in operation.attributes.items() if DEFAULT_ATTRIBUTES.get(k) != v}
    member_of = sorted(operation.member_of) or None
    return _call("ensure_role", operation.name, member_of=member_of, **changed)


@renderers.dispatch_for(SetLoginSettingsOp)
def _render_login_settings(context: AutogenContext, operation: SetLoginSettingsOp) -> str:
    return _call("set_login_settings", operation.name, dict(sorted(operation.settings.items())))


@renderers.dispatch_for(AlterRoleOp)
def _render_alter_role(context: AutogenContext, operation: AlterRoleOp) -> str:
    return _call("alter_role", operation.name, **operation.attributes)


@renderers.dispatch_for(_MembershipOp)
def _render_membership(context: AutogenContext, operation: _MembershipOp) -> str:
    return _call(operation.operation_name, operation.group, operation.member)


@renderers.dispatch_for(DropRoleIfUnusedOp)
def _render_drop_role(context: AutogenContext, operation: DropRoleIfUnusedOp) -> str:
    return _call("drop_role_if_unused", operation.name)


@renderers.dispatch_for(_TableSwitchOp)
def _render_switch(context: AutogenContext, operation: _TableSwitchOp) -> str:
    return _call(operation.operation_name, operation.table_name, schema=operation.schema)


@renderers.dispatch_for(_PolicyDefinitionOp)
def _render_policy_definition(context: AutogenContext, operation: _PolicyDefinitionOp) -> str:
    return _call(
        operation.operation_name,
        operation.table_name,
        operation.policy.name,
        **_policy_kwargs(operation.policy),
        schema=operation.schema,
    )


@renderers.dispatch_for(AlterPolicyOp)
def _render_alter_policy(context: AutogenContext, operation: AlterPolicyOp) -> str:
    policy = operation.policy
    return _call(
        "alter_policy",
        operation.table_name,
        policy.name,
        roles=list(policy.roles),
        using=policy.using,
        with_check=policy.with_check,
        schema=operation.schema,
    )


@renderers.dispatch_for(_DatabasePrivilegesOp)
def _render_database_privileges(context: AutogenContext, operation: _DatabasePrivilegesOp) -> str:
    return _call(operation.operation_name, operation.role, list(operation.privileges))


@renderers.dispatch_for(_SequenceUsageOp)
def _render_sequence_usage(context: AutogenContext, operation: _SequenceUsageOp) -> str:
    return _call(
        operation.operation_name, operation.table_name, operation.column_name, operation.role
    )


@renderers.dispatch_for(_PrivilegesOp)
def _render_privileges(context: AutogenContext, operation: _PrivilegesOp) -> str:
    return _call(
        operation.operation_name,
        operation.table_name,
        operation.role,
        list(operation.privileges),
        schema=operation.schema,
        columns=list(operation.columns) or None,
        **{operation.option_keyword: operation.grant_option or None},
    )


__all__ = [
    "PRIVILEGES",
    "TABLE_OPERATIONS",
    "AlterPolicyOp",
    "AlterRoleOp",
    "CreatePolicyOp",
    "DisableRowSecurityOp",
    "DropPolicyOp",
    "DropRoleIfUnusedOp",
    "EnableRowSecurityOp",
    "EnsureRoleOp",
    "ForceRowSecurityOp",
    "GrantDatabasePrivilegesOp",
    "GrantPrivilegesOp",
    "GrantRoleOp",
    "GrantSequenceUsageOp",
    "NoForceRowSecurityOp",
    "RevokeDatabasePrivilegesOp",
    "RevokePrivilegesOp",
    "RevokeRoleOp",
    "RevokeSequenceUsageOp",
    "SetLoginSettingsOp",
]
