"""Whose privileges the declarations decide."""

from __future__ import annotations


def managed_grantee(grantee: str, owner: str) -> str:
    """SQL: whether the role with oid `grantee` (SQL) is one whose privileges on an
    object owned by `owner` (SQL) the declarations decide: PUBLIC (grantee 0, which
    pg_roles does not list), the declared roles (``%(roles)s``, whatever someone made
    of them), and every other role but the owner, the roles the owner is a member of
    and has the privileges of (Neon's neon_superuser; pg_has_role alone would count
    every role for a superuser owner, and a membership alone every role a CREATEROLE
    owner made on PostgreSQL 16+, which holds only ADMIN OPTION on it), superusers and
    roles that bypass row security anyway, and PostgreSQL's predefined pg_* roles. A
    role taken out of ROLES is one of them still: what it was granted is revoked."""
    return f"""({grantee} = 0
        OR {grantee} IN (SELECT d.oid FROM pg_roles d WHERE d.rolname = ANY(%(roles)s))
        OR ({grantee} <> {owner}
        AND NOT (EXISTS (SELECT FROM pg_auth_members m
                         WHERE m.member = {owner} AND m.roleid = {grantee})
                 AND pg_has_role({owner}, {grantee}, 'USAGE'))
        AND NOT EXISTS (SELECT FROM pg_roles g WHERE g.oid = {grantee}
                        AND (g.rolsuper OR g.rolbypassrls OR left(g.rolname, 3) = 'pg_'))))"""
