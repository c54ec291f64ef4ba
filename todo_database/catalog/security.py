"""Row security, grants, roles and their settings: what the database holds of what
this project manages.

:func:`read_catalog` reads the managed roles (attributes, memberships, the settings
their login members get), each table's row-level security switches, policies (and
what their expressions read), grants on tables, columns, serial sequences and the
database itself, in a few queries, into a :class:`Catalog` of plain data: what
autogenerate, ``alembic check``, the docs and the review compare with the models.
:func:`read_policies` and :func:`read_policy_tables` read another schema's too (the
declarations' twins); the last readers answer a backfill's questions mid-upgrade.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy.engine import Connection

from models.security import ROLES, Policy, declared_role
from todo_database.catalog.schemas import CURRENT
from todo_database.declarations.grantees import managed_grantee
from todo_database.operations.roles import LOGIN_MEMBERS, ROLE_COLUMNS


@dataclass
class Catalog:
    """What the database has, for the tables and roles this project manages."""

    roles: set[str] = field(default_factory=set)
    #: Each managed role's attributes (``models.security.ROLE_ATTRIBUTES``).
    role_attributes: dict[str, dict[str, bool]] = field(default_factory=dict)
    #: The roles each managed role is a member of.
    memberships: dict[str, set[str]] = field(default_factory=dict)
    #: Managed roles something in this database depends on (a grant, a policy).
    roles_used_here: set[str] = field(default_factory=set)
    #: Roles that may use the sequence behind each serial column, by (table, column).
    sequence_usage: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    #: The columns each policy's expressions read, of any table: (table, column).
    policy_columns: dict[tuple[str, str], set[tuple[str, str]]] = field(
        default_factory=lambda: defaultdict(set)
    )
    #: The other tables each policy's expressions read, by (table, policy).
    policy_tables: dict[tuple[str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    switches: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    policies: dict[str, dict[str, Policy]] = field(default_factory=lambda: defaultdict(dict))
    grants: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    #: Privileges a managed role may pass on (WITH GRANT OPTION): never declared, so drift.
    grant_options: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    #: Column privileges, by (table, role): privilege -> the columns it is held on.
    column_grants: dict[tuple[str, str], dict[str, frozenset[str]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    #: Column privileges a managed role may pass on: drift too.
    column_grant_options: dict[tuple[str, str], dict[str, frozenset[str]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    #: Privileges on the database itself, by managed grantee (WITH GRANT OPTION or not).
    database_grants: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Settings of each managed role and of its login members (``Role.login_settings``),
    #: by role: member -> (its role-wide settings, its settings in this database).
    login_settings: dict[str, dict[str, tuple[dict[str, str], dict[str, str]]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    #: The settings this server knows (``transaction_timeout`` is PostgreSQL 17's).
    known_settings: set[str] = field(default_factory=set)


_ROLES = f"""
    SELECT r.rolname, {", ".join(ROLE_COLUMNS.values())},
           ARRAY(SELECT g.rolname::text FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                 WHERE m.member = r.oid)
    FROM pg_roles r WHERE r.rolname = ANY(%(roles)s)
"""


_ROLES_USED_HERE = """
    SELECT DISTINCT r.rolname FROM pg_shdepend d JOIN pg_roles r ON r.oid = d.refobjid
    WHERE d.refclassid = 'pg_authid'::regclass AND r.rolname = ANY(%(roles)s)
      AND d.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


_SWITCHES = """
    SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
    WHERE relnamespace = current_schema()::regnamespace AND relkind IN ('r', 'p')
"""


_POLICIES = """
    SELECT p.tablename, p.policyname, p.cmd, p.roles::text[], p.qual, p.with_check,
           p.permissive = 'PERMISSIVE'
    FROM pg_policies p JOIN pg_namespace n ON n.nspname = p.schemaname
    WHERE n.oid = {schema}
"""


_GRANTS = f"""
    SELECT c.relname, coalesce(r.rolname, 'public'), a.privilege_type, a.is_grantable
    FROM pg_class c
    CROSS JOIN LATERAL aclexplode(c.relacl) a
    LEFT JOIN pg_roles r ON r.oid = a.grantee
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND {managed_grantee("a.grantee", "c.relowner")}
"""


# Sequences a serial column owns (deptype 'a'; identity columns' are 'i' and need no grant).
_SEQUENCES = f"""
    SELECT t.relname, a.attname,
           ARRAY(SELECT coalesce(r.rolname::text, 'public') FROM aclexplode(s.relacl) x
                 LEFT JOIN pg_roles r ON r.oid = x.grantee
                 WHERE x.privilege_type = 'USAGE' AND {managed_grantee("x.grantee", "s.relowner")})
    FROM pg_class s
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'a'
    JOIN pg_class t ON t.oid = d.refobjid
    JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
    WHERE s.relkind = 'S' AND t.relnamespace = current_schema()::regnamespace
"""


_POLICY_COLUMNS = """
    SELECT c.relname, p.polname, r.relname, a.attname
    FROM pg_policy p
    JOIN pg_class c ON c.oid = p.polrelid
    JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.refobjsubid > 0
    JOIN pg_class r ON r.oid = d.refobjid
    JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE c.relnamespace = current_schema()::regnamespace
"""


# A table a policy reads is recorded by the columns it reads (refobjsubid > 0), or whole
# when it reads none.
_POLICY_TABLES = """
    SELECT DISTINCT c.relname, p.polname, r.relname
    FROM pg_policy p
    JOIN pg_class c ON c.oid = p.polrelid
    JOIN pg_depend d ON d.classid = 'pg_policy'::regclass AND d.objid = p.oid
                    AND d.refclassid = 'pg_class'::regclass
    JOIN pg_class r ON r.oid = d.refobjid
    WHERE c.relnamespace = {schema} AND r.oid <> c.oid
"""


_COLUMN_GRANTS = f"""
    SELECT c.relname, a.attname, coalesce(r.rolname, 'public'), x.privilege_type, x.is_grantable
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    CROSS JOIN LATERAL aclexplode(a.attacl) x
    LEFT JOIN pg_roles r ON r.oid = x.grantee
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
      AND {managed_grantee("x.grantee", "c.relowner")}
"""


_DATABASE_GRANTS = f"""
    SELECT coalesce(r.rolname, 'public'), a.privilege_type
    FROM pg_database d
    CROSS JOIN LATERAL aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
    LEFT JOIN pg_roles r ON r.oid = a.grantee
    WHERE d.datname = current_database() AND {managed_grantee("a.grantee", "d.datdba")}
"""


_LOGIN_SETTINGS = f"""
    SELECT g.rolname, m.rolname,
           coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                     WHERE s.setrole = m.oid AND s.setdatabase = 0), '{{}}'),
           coalesce((SELECT s.setconfig FROM pg_db_role_setting s
                     WHERE s.setrole = m.oid AND s.setdatabase =
                           (SELECT oid FROM pg_database WHERE datname = current_database())),
                    '{{}}')
    FROM pg_roles g
    CROSS JOIN LATERAL (SELECT g.oid, g.rolname UNION
                        {LOGIN_MEMBERS.format(role="g.rolname")}) m
    WHERE g.rolname = ANY(%(roles)s)
"""


def _settings(config: Iterable[str]) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in config)


def read_policies(connection: Connection, schema: str = CURRENT) -> dict[str, dict[str, Policy]]:
    """The policies of `schema`'s tables, by table and name, as ``pg_policies`` prints
    them (under the session's search path)."""
    found: dict[str, dict[str, Policy]] = defaultdict(dict)
    for (
        table,
        name,
        command,
        policy_roles,
        using,
        with_check,
        permissive,
    ) in connection.exec_driver_sql(_POLICIES.format(schema=schema)):
        to = tuple(sorted(policy_roles))
        found[table][name] = Policy(name, command, to, using, with_check, permissive)
    return found


def read_policy_tables(
    connection: Connection, schema: str = CURRENT
) -> dict[tuple[str, str], set[str]]:
    """The other tables each policy of `schema` reads, by (table, policy)."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for table, name, other in connection.exec_driver_sql(_POLICY_TABLES.format(schema=schema)):
        found[(table, name)].add(other)
    return found


def read_catalog(connection: Connection, roles: Iterable[str] = ROLES) -> Catalog:
    managed = {"roles": list(roles)}
    declared_settings = {
        key for role in managed["roles"] for key in declared_role(role).login_settings
    }
    catalog = Catalog()
    for name, *attributes, groups in connection.exec_driver_sql(_ROLES, managed):
        catalog.roles.add(name)
        catalog.role_attributes[name] = dict(zip(ROLE_COLUMNS, attributes, strict=True))
        catalog.memberships[name] = set(groups)
    catalog.roles_used_here = set(connection.exec_driver_sql(_ROLES_USED_HERE, managed).scalars())
    for table, enabled, forced in connection.exec_driver_sql(_SWITCHES):
        catalog.switches[table] = (enabled, forced)
    catalog.policies = read_policies(connection)
    for table, column, users in connection.exec_driver_sql(_SEQUENCES, managed):
        catalog.sequence_usage[(table, column)] = set(users)
    for table, name, other, column in connection.exec_driver_sql(_POLICY_COLUMNS):
        catalog.policy_columns[(table, name)].add((other, column))
    catalog.policy_tables = read_policy_tables(connection)
    for table, role, privilege, grantable in connection.exec_driver_sql(_GRANTS, managed):
        catalog.grants[(table, role)] = catalog.grants.get((table, role), frozenset()) | {privilege}
        if grantable:
            catalog.grant_options[(table, role)] = catalog.grant_options.get(
                (table, role), frozenset()
            ) | {privilege}
    for role, member, everywhere, here in connection.exec_driver_sql(_LOGIN_SETTINGS, managed):
        catalog.login_settings[role][member] = (_settings(everywhere), _settings(here))
    catalog.known_settings = set(
        connection.exec_driver_sql(
            "SELECT name FROM pg_settings WHERE name = ANY(%(names)s)",
            {"names": sorted(declared_settings)},
        ).scalars()
    )
    for role, privilege in connection.exec_driver_sql(_DATABASE_GRANTS, managed):
        catalog.database_grants[role] = catalog.database_grants.get(role, frozenset()) | {privilege}
    for table, column, role, privilege, grantable in connection.exec_driver_sql(
        _COLUMN_GRANTS, managed
    ):
        held = catalog.column_grants[(table, role)]
        held[privilege] = held.get(privilege, frozenset()) | {column}
        if grantable:
            passable = catalog.column_grant_options[(table, role)]
            passable[privilege] = passable.get(privilege, frozenset()) | {column}
    return catalog


# --- one table, asked while a backfill runs ----------------------------------------

_RESTRICTIVE_FOR_ME = """
    SELECT p.polname FROM pg_policy p
    WHERE p.polrelid = %(table)s::regclass AND NOT p.polpermissive
      AND p.polcmd IN ('*', 'r', 'w')
      AND (0 = ANY (p.polroles) OR EXISTS (
          SELECT FROM unnest(p.polroles) AS r(role)
          WHERE r.role <> 0 AND pg_has_role(current_user, r.role, 'MEMBER')))
    ORDER BY p.polname
"""


def restrictive_policies_for_me(connection: Connection, table: str) -> list[str]:
    """The restrictive policies of `table` (SQL for ``regclass``) that filter what the
    session's role reads or updates."""
    return list(connection.exec_driver_sql(_RESTRICTIVE_FOR_ME, {"table": table}).scalars())


def has_policy(connection: Connection, table: str, name: str) -> bool:
    """Whether `table` (SQL for ``regclass``) has a policy called `name`."""
    return bool(
        connection.exec_driver_sql(
            "SELECT EXISTS (SELECT FROM pg_policy WHERE polrelid = %(table)s::regclass "
            "AND polname = %(policy)s)",
            {"table": table, "policy": name},
        ).scalar()
    )
