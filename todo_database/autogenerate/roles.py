"""Roles compared: the declared roles a revision ensures, their attributes and
memberships, and the settings their login members get."""

from __future__ import annotations

from collections.abc import Iterable

from alembic.operations import MigrateOperation

from models.security import (
    ROLES,
    declared_role,
)
from todo_database.catalog.security import Catalog
from todo_database.operations import functions as routines
from todo_database.operations.policies import AlterPolicyOp, CreatePolicyOp
from todo_database.operations.privileges import (
    GrantDatabasePrivilegesOp,
    GrantPrivilegesOp,
    GrantSequenceUsageOp,
)
from todo_database.operations.roles import (
    AlterRoleOp,
    EnsureRoleOp,
    GrantRoleOp,
    RevokeRoleOp,
    SetLoginSettingsOp,
)


def ensured_roles(operations: Iterable[MigrateOperation], catalog: Catalog) -> list[str]:
    """The roles a revision ensures: every declared role the cluster lacks, and every
    one its operations grant to, name in a policy or make own a function while
    nothing in this database uses it yet. Roles are cluster-wide, so a role another
    database (a test database, another branch) created is no sign that this
    database's revisions ever did: a revision must run on a fresh cluster too."""
    named: set[str] = set()
    for operation in operations:
        if isinstance(operation, CreatePolicyOp | AlterPolicyOp):
            named.update(operation.policy.roles)
        elif isinstance(
            operation,
            GrantPrivilegesOp
            | GrantSequenceUsageOp
            | GrantDatabasePrivilegesOp
            | routines.GrantExecuteOp,
        ):
            named.add(operation.role)
        elif isinstance(operation, routines.FunctionOwnerOp):
            named.add(operation.owner)
    return [
        role
        for role in ROLES
        if role not in catalog.roles or (role in named and role not in catalog.roles_used_here)
    ]


def role_ops(catalog: Catalog) -> list[MigrateOperation]:
    """Managed roles that exist with other attributes or memberships than declared:
    put back as declared (``alembic check`` reports them: a role made BYPASSRLS, or a
    member of another role, switches isolation off)."""
    result: list[MigrateOperation] = []
    for name in ROLES:
        if name not in catalog.roles:
            continue
        role = declared_role(name)
        have = catalog.role_attributes[name]
        want = role.attributes()
        if changed := {k: v for k, v in want.items() if have.get(k) != v}:
            result.append(AlterRoleOp(str(name), changed, {k: have[k] for k in changed}))
        groups = catalog.memberships.get(name, set())
        result += [RevokeRoleOp(group, str(name)) for group in sorted(groups - set(role.member_of))]
        result += [GrantRoleOp(group, str(name)) for group in sorted(set(role.member_of) - groups)]
    return result


def login_settings_ops(catalog: Catalog) -> list[MigrateOperation]:
    """A managed role whose declared ``login_settings`` it, or one of its login members,
    does not get exactly in a session of this database (its settings here over its own),
    put back as declared: a role a person or an injection changed, or a login role made
    a member since without them."""
    result: list[MigrateOperation] = []
    for name in ROLES:
        if name not in catalog.roles:
            continue
        declared = declared_role(name).login_settings
        want = {k: v for k, v in declared.items() if k in catalog.known_settings}
        held = catalog.login_settings.get(name, {})
        # What a session of the member gets here: its settings in this database outrank
        # its own.
        if any({**everywhere, **here} != want for everywhere, here in held.values()):
            everywhere, here = held.get(str(name), ({}, {}))
            result.append(SetLoginSettingsOp(str(name), dict(declared), {**everywhere, **here}))
    return result


def ensure(role: str) -> EnsureRoleOp:
    declared = declared_role(role)
    return EnsureRoleOp(str(role), declared.attributes(), declared.member_of)
