"""Roles: ensured as declared (``op.ensure_role``), their attributes and memberships
put back, the settings their login members get, and dropped once nothing uses them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations

from models.security import declared_role
from todo_database.operations.opposites import OppositeOp, opposites
from todo_database.operations.spelling import (
    call,
    literal,
    quote,
)

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
    role holds in it is reset, and so is any other setting it holds role-wide. Its own
    values of the declared settings are left to the cluster's other databases (a login
    role made with its limits, as ``CREATE ROLE`` then ``ALTER ROLE ... SET``, keeps them
    for every database), and so is all it holds role-wide when no setting is declared
    (the downgrade past the first limits). A setting the server does not know
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
    name = literal(operation.name)
    declared_names = "ARRAY[" + ", ".join(map(literal, sorted(operation.settings))) + "]::text[]"
    settings = "".join(
        f"""
        IF EXISTS (SELECT FROM pg_settings s WHERE s.name = {literal(key)}) THEN
            EXECUTE format('ALTER ROLE %I IN DATABASE %I SET {key} = %L', member.rolname,
                           current_database(), {literal(value)});
        END IF;"""
        for key, value in sorted(operation.settings.items())
    )
    # Role-wide settings reach every database of the cluster, and another database may
    # rely on the limits a login role was made with. Those of the settings declared here
    # are left: the ones set in this database outrank them. Any other is reset, as it
    # would act here too (an injected search_path); with none declared (the downgrade
    # past the first limits), nothing is said of this database, and all are left.
    role_wide = (
        f"""
            FOR setting IN SELECT split_part(entry, '=', 1) AS name
                           FROM pg_db_role_setting s, unnest(s.setconfig) AS entry
                           WHERE s.setrole = member.oid AND s.setdatabase = 0 LOOP
                IF setting.name <> ALL ({declared_names}) THEN
                    EXECUTE format('ALTER ROLE %I RESET %s', member.rolname, setting.name);
                END IF;
            END LOOP;"""
        if operation.settings
        else ""
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
        BEGIN{role_wide}
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
    role, name = quote(operations, operation.name), literal(operation.name)
    declared = operation.attributes
    # Each attribute that differs, as "BYPASSRLS (declared NOBYPASSRLS)".
    differences = ", ".join(
        f"CASE WHEN {ROLE_COLUMNS[attribute]} <> {str(value).lower()} THEN "
        f"'{role_clause({attribute: not value})} (declared {role_clause({attribute: value})})' END"
        for attribute, value in declared.items()
    )
    groups = "ARRAY[" + ", ".join(literal(g) for g in sorted(operation.member_of)) + "]::text[]"
    grants = "".join(
        f"\n        GRANT {quote(operations, group)} TO {role};"
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
    role = quote(operations, operation.name)
    operations.execute(f"ALTER ROLE {role} {role_clause(operation.attributes)}")


def _change_membership(operations: Operations, operation: _MembershipOp) -> None:
    group, member = quote(operations, operation.group), quote(operations, operation.member)
    if isinstance(operation, GrantRoleOp):
        operations.execute(f"GRANT {group} TO {member}")
    else:
        operations.execute(f"REVOKE {group} FROM {member}")


for _membership in (GrantRoleOp, RevokeRoleOp):
    Operations.implementation_for(_membership)(_change_membership)


@Operations.implementation_for(DropRoleIfUnusedOp)
def _drop_role_if_unused(operations: Operations, operation: DropRoleIfUnusedOp) -> None:
    name = literal(operation.name)
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
        DROP ROLE {quote(operations, operation.name)};
    END IF;
EXCEPTION WHEN dependent_objects_still_exist THEN
    NULL;  -- another database gained a dependency meanwhile: keep the role
END
$$"""
    )


@renderers.dispatch_for(EnsureRoleOp)
def _render_ensure_role(context: AutogenContext, operation: EnsureRoleOp) -> str:
    changed = {k: v for k, v in operation.attributes.items() if DEFAULT_ATTRIBUTES.get(k) != v}
    member_of = sorted(operation.member_of) or None
    return call("ensure_role", operation.name, member_of=member_of, **changed)


@renderers.dispatch_for(SetLoginSettingsOp)
def _render_login_settings(context: AutogenContext, operation: SetLoginSettingsOp) -> str:
    return call("set_login_settings", operation.name, dict(sorted(operation.settings.items())))


@renderers.dispatch_for(AlterRoleOp)
def _render_alter_role(context: AutogenContext, operation: AlterRoleOp) -> str:
    return call("alter_role", operation.name, **operation.attributes)


@renderers.dispatch_for(_MembershipOp)
def _render_membership(context: AutogenContext, operation: _MembershipOp) -> str:
    return call(operation.operation_name, operation.group, operation.member)


@renderers.dispatch_for(DropRoleIfUnusedOp)
def _render_drop_role(context: AutogenContext, operation: DropRoleIfUnusedOp) -> str:
    return call("drop_role_if_unused", operation.name)
