"""Row-level security as plain data, declared next to each table.

A table declares its :class:`RowSecurity` in ``__table_args__``'s ``info`` under
:data:`ROW_SECURITY`: whether RLS is enabled and forced, its policies, and the
privileges each application role gets. Alembic's autogenerate (see
``migrations/rowsecurity``) turns the declarations into revisions and compares them
with the live catalog; the tests derive their isolation checks from them.

The common cases are one line each::

    # rows belong to the user whose id is in user_id
    __table_args__ = (..., {"info": {ROW_SECURITY: owned_by("user_id")}})
    # rows belong to whoever owns the todo that todo_id references
    __table_args__ = (..., {"info": {ROW_SECURITY: owned_through("todo_id")}})
    # no row-level security, on purpose
    __table_args__ = (..., {"info": {ROW_SECURITY: without_row_security("why")}})

Every table declares one of them (``make revision`` refuses a table that does not),
and every role a policy or grant names is one of :data:`ROLES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal


class Role(str):
    """A role these declarations manage: the string of its name (so it reads wherever a
    role name does), with its attributes and the managed roles it is a member of. A
    plain string in :data:`ROLES` is a role with the defaults: NOLOGIN, NOSUPERUSER,
    NOCREATEDB, NOCREATEROLE, INHERIT, NOREPLICATION, NOBYPASSRLS, a member of nothing.
    """

    login: bool
    superuser: bool
    createdb: bool
    createrole: bool
    inherit: bool
    replication: bool
    bypassrls: bool
    member_of: tuple[str, ...]
    #: Settings of every session its login members open in this database: the
    #: application's login roles, those of its members that neither bypass row security
    #: nor are superusers. PostgreSQL applies a role's settings to sessions of that role
    #: only, not of its members, so they are set on each member (and on the role itself,
    #: as the record of what is declared), ``IN DATABASE`` (which outranks a role's own
    #: settings, and leaves other databases of the server alone); a member with other
    #: settings, here or role-wide (an injection may ``ALTER ROLE CURRENT_USER SET``), is
    #: drift that ``alembic check`` reports.
    login_settings: Mapping[str, str]

    def __new__(
        cls,
        name: str,
        *,
        login: bool = False,
        superuser: bool = False,
        createdb: bool = False,
        createrole: bool = False,
        inherit: bool = True,
        replication: bool = False,
        bypassrls: bool = False,
        member_of: tuple[str, ...] = (),
        login_settings: Mapping[str, str] | None = None,
    ) -> Role:
        role = super().__new__(cls, name)
        role.login, role.superuser, role.createdb = login, superuser, createdb
        role.createrole, role.inherit, role.replication = createrole, inherit, replication
        role.bypassrls, role.member_of = bypassrls, tuple(member_of)
        role.login_settings = dict(login_settings or {})
        return role

    def attributes(self) -> dict[str, bool]:
        """The attributes by their ``CREATE ROLE`` keyword, lower case."""
        return {name: bool(getattr(self, name)) for name in ROLE_ATTRIBUTES}

    def __getnewargs_ex__(self) -> tuple[tuple[str], dict[str, object]]:
        return (str(self),), {
            **self.attributes(),
            "member_of": self.member_of,
            "login_settings": dict(self.login_settings),
        }

    def __repr__(self) -> str:
        defaults = Role(str(self))
        declared = {
            **self.attributes(),
            "member_of": self.member_of,
            "login_settings": dict(self.login_settings),
        }
        changed = [
            f"{name}={value!r}"
            for name, value in declared.items()
            if getattr(defaults, name) != value
        ]
        return f"Role({', '.join([repr(str(self)), *changed])})"


#: A role's attributes, as ``CREATE ROLE`` names them.
ROLE_ATTRIBUTES = (
    "login",
    "superuser",
    "createdb",
    "createrole",
    "inherit",
    "replication",
    "bypassrls",
)


def declared_role(role: str) -> Role:
    """`role` with its declared attributes (the defaults for a plain name)."""
    return role if isinstance(role, Role) else Role(role)


#: What any session of the API may take, whatever SQL it runs: a request that holds a
#: lock, a transaction or a connection for longer is ended by the server. An injected
#: statement can raise them for its own transaction (they are USERSET), never for the
#: next request's: each is a setting of the API's login roles (``login_settings``).
#: ``transaction_timeout`` is PostgreSQL 17's; older servers leave it out.
API_LIMITS: Mapping[str, str] = {
    "statement_timeout": "5s",
    "lock_timeout": "2s",
    "idle_in_transaction_session_timeout": "10s",
    "transaction_timeout": "15s",
}
#: The todo API's role. Login roles are made members of it at deployment, and carry its
#: limits once the next migration (or ``alembic check``'s repair) has run.
APP_ROLE = Role("todo_app", login_settings=API_LIMITS)
#: The Better Auth server's role.
AUTH_ROLE = Role("todo_auth")
#: Owns the functions that verify who the current user is: it reads the token, user
#: and expiry of Better Auth's sessions, and nothing else.
IDENTITY_ROLE = Role("todo_identity")
#: Owns the functions that say which shared rows the current user may read, change, or
#: manage the members of (:func:`shared_with`): it reads the shared tables' keys and
#: owners, and the membership tables, and nothing else.
SHARING_ROLE = Role("todo_sharing")
#: Every role these declarations grant to, name in a policy or make own a function,
#: each created as declared (NOLOGIN, NOBYPASSRLS, owning no table, unless it says
#: otherwise). An existing role that differs is refused by the migration and reported
#: by ``alembic check``.
ROLES: tuple[str, ...] = (APP_ROLE, AUTH_ROLE, IDENTITY_ROLE, SHARING_ROLE)
#: The grantee every role belongs to; policies and grants may name it, as in SQL.
PUBLIC = "public"

#: Key of a table's ``info`` under which its :class:`RowSecurity` is declared.
ROW_SECURITY = "row_security"

Command = Literal["ALL", "SELECT", "INSERT", "UPDATE", "DELETE"]
Privilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]

#: What a role needs to read and write rows; nothing that changes the table itself.
READ_WRITE: frozenset[Privilege] = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
READ_ONLY: frozenset[Privilege] = frozenset({"SELECT"})

DatabasePrivilege = Literal["CONNECT", "TEMPORARY", "CREATE"]


@dataclass(frozen=True)
class DatabaseGrant:
    """Privileges on the database itself (``GRANT ... ON DATABASE``) for one role."""

    role: str
    privileges: frozenset[DatabasePrivilege]


#: What each role may do with the database itself, compared and repaired like a table's
#: grants; its owner (the migration role) holds everything regardless. PostgreSQL gives
#: PUBLIC CONNECT and TEMPORARY on every new database. TEMPORARY lets any SQL the API
#: runs create temporary tables, types, views and functions, which live as long as the
#: connection (a pooled one serves the next user next) and which PostgreSQL searches
#: first for a relation or type name a statement does not qualify: no role of the
#: application needs it, so PUBLIC keeps CONNECT alone.
DATABASE_GRANTS: tuple[DatabaseGrant, ...] = (DatabaseGrant(PUBLIC, frozenset({"CONNECT"})),)


Language = Literal["sql", "plpgsql"]
Volatility = Literal["IMMUTABLE", "STABLE", "VOLATILE"]


@dataclass(frozen=True)
class Function:
    """A function the policies call, declared like a table: the revisions create,
    replace, own, grant and drop it, and ``alembic check`` reports any drift.

    `body` is kept as written (PostgreSQL stores it so). A ``SECURITY DEFINER``
    function runs as its `owner` with the caller's session, so it pins its
    `search_path` to :data:`DEFINER_SEARCH_PATH` and names every relation and type
    outside ``pg_catalog`` with its schema: PostgreSQL searches the session's temporary
    schema for relation and type names, first unless the path lists ``pg_temp``, and
    any SQL the caller runs may put objects there (``make revision`` refuses a body or
    path that lets it). Only `executors` may call it; PUBLIC, which PostgreSQL lets call
    any new function, may not.
    """

    name: str
    returns: str
    body: str
    arguments: str = ""
    language: Language = "plpgsql"
    volatility: Volatility = "VOLATILE"
    security_definer: bool = False
    search_path: str | None = None
    owner: str | None = None
    executors: tuple[str, ...] = ()
    schema: str = "public"

    @property
    def signature(self) -> str:
        """``schema.name(arguments)``, as DROP and ALTER FUNCTION name it."""
        return f"{self.schema}.{self.name}({self.arguments})"


@dataclass(frozen=True)
class Identity:
    """Where the policies learn who the current user is.

    `user_id` is the current user's id (SQL, evaluated once per statement). When
    `claimed_user_id` is given too (the id the transaction says it acts for, SQL, once
    per statement), a row is the current user's only if its owner column equals both:
    for a transaction whose claim is not verified they differ (or are NULL), and since
    both are compared with the same column, PostgreSQL compares them with each other
    once, before it reads a single row (a One-Time Filter). A transaction without an
    identity then scans nothing: not even ``EXPLAIN ANALYZE`` can count the rows it
    may not see."""

    user_id: str
    #: A condition without columns (SQL) that holds only when the identity is proven:
    #: what a table owned through a parent row, which has no owner column to compare
    #: twice, gates its scans on, and what a policy of one's own may require.
    proven: str
    claimed_user_id: str | None = None
    functions: tuple[Function, ...] = ()
    #: Whether the id is checked against a live session. One that is not is only the
    #: transaction's claim, which any SQL it runs may set: policies for the API's roles
    #: may not rest on it (``claim_acknowledged``).
    verified: bool = True

    def owns(self, column: str) -> str:
        """The condition "`column` holds the current user's id"."""
        if self.claimed_user_id is None:
            return f"{column} = {self.user_id}"
        return f"{column} = {self.user_id} AND {column} = {self.claimed_user_id}"


@dataclass(frozen=True)
class Policy:
    """One ``CREATE POLICY``: who (`roles`) may do what (`command`) to which rows.

    `using` filters the rows a command sees; `with_check` vets the rows it writes.
    A policy that reads the claimed user id (:data:`CLAIMED_USER_ID`, ``app.user_id``)
    without the verified one (:data:`VERIFIED_USER_ID`) is refused by ``make revision``
    and ``alembic check``: any SQL the role runs can set the claim. A policy for a
    trusted job's role says why it may, in `claim_acknowledged`.
    """

    name: str
    command: Command
    roles: tuple[str, ...]
    using: str | None = None
    with_check: str | None = None
    permissive: bool = True
    claim_acknowledged: str | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Grant:
    """Privileges given to one role: on the whole table, or on `columns` only (then
    only SELECT, INSERT, UPDATE and REFERENCES, as PostgreSQL has them per column)."""

    role: str
    privileges: frozenset[Privilege]
    columns: frozenset[str] | None = None


@dataclass(frozen=True)
class ThroughParent:
    """Rows belong to whoever owns the parent row that `column` (a foreign key)
    references. The policies for `role` are derived from the parent table's own
    ownership when the models are compared (``migrations/rowsecurity``), because the
    parent is known only once every table exists."""

    column: str
    role: str
    identity: Identity
    claim_acknowledged: str | None = None


@dataclass(frozen=True)
class SharedWith:
    """Rows of this table are their owner's (`owner`, a user id) and are shared with the
    members the membership table `members` lists (:class:`MemberOf`). The policies, and
    the functions they call, are derived when the models are compared
    (``migrations/rowsecurity``), as the membership table is known only then."""

    members: str
    owner: str
    key: str
    role: str
    identity: Identity


@dataclass(frozen=True)
class MemberOf:
    """A membership table: each row makes user `user` a member of the shared row that
    `shared` (a foreign key) references, at level `level` (``"viewer"``, ``"editor"``...),
    one of `levels`. Every member reads the shared row; `writers` change it; `managers`
    add, change and remove its members, as its owner does."""

    shared: str
    user: str
    level: str
    levels: tuple[str, ...]
    writers: tuple[str, ...]
    managers: tuple[str, ...]
    role: str
    identity: Identity


@dataclass(frozen=True)
class RowSecurity:
    """Everything row-level about one table."""

    policies: tuple[Policy, ...] = ()
    grants: tuple[Grant, ...] = ()
    enabled: bool = True
    #: FORCE applies the policies to the table's owner too, so the migration role is
    #: not silently exempt.
    forced: bool = True
    #: The column whose value is the owning user's id, when rows belong to one user.
    owner_column: str | None = field(default=None, compare=False)
    #: The roles whose policies scope rows to their owner through `owner_column`.
    owner_roles: frozenset[str] = field(default=frozenset(), compare=False)
    #: Ownership through a parent row (a link table), when rows belong to one user so.
    through: ThroughParent | None = field(default=None, compare=False)
    #: Sharing with members, when the table's rows are shared (:func:`shared_with`).
    sharing: SharedWith | None = field(default=None, compare=False)
    #: The membership it records, when the table lists a shared row's members.
    membership: MemberOf | None = field(default=None, compare=False)
    #: Why the table has no row-level security, when it opts out.
    exemption: str | None = field(default=None, compare=False)
    #: Catalog lints (tests/isolation/test_catalog_lint.py) this table breaks on purpose:
    #: ``{"rule": "reason"}`` or ``{"rule:column": "reason"}``.
    lint_acknowledged: Mapping[str, str] = field(default_factory=dict, compare=False)

    def __add__(self, other: RowSecurity) -> RowSecurity:
        return RowSecurity(
            policies=self.policies + other.policies,
            grants=self.grants + other.grants,
            enabled=self.enabled and other.enabled,
            forced=self.forced and other.forced,
            owner_column=self.owner_column or other.owner_column,
            owner_roles=self.owner_roles | other.owner_roles,
            through=self.through or other.through,
            sharing=self.sharing or other.sharing,
            membership=self.membership or other.membership,
            exemption=self.exemption or other.exemption,
            lint_acknowledged={**self.lint_acknowledged, **other.lint_acknowledged},
        )


# --- who the current user is --------------------------------------------------------

#: The user id the transaction claims, as :data:`BIND_SESSION` (or, for a trusted job,
#: ``set_config('app.user_id', <id>, true)``) sets it. Unset and empty both read as
#: NULL, which equals no id: nobody. The scalar subquery makes the planner evaluate it
#: once per statement (an InitPlan) instead of once per row. On its own it proves
#: nothing: any session may set it, which is why a policy reading it alone is refused.
CLAIMED_USER_ID = "(SELECT NULLIF(current_setting('app.user_id', true), ''))"

#: The search path of every SECURITY DEFINER function: ``pg_catalog`` first, and the
#: session's temporary schema last, where it can shadow nothing ``pg_catalog`` has
#: (left out, ``pg_temp`` is searched first for relations and types: ``''`` is not
#: enough). Names outside ``pg_catalog`` are written with their schema.
DEFINER_SEARCH_PATH = "pg_catalog, pg_temp"

#: The SQLSTATE ``bind_session`` fails with on a connection that holds temporary
#: objects, which an earlier client of a pooled connection may have left to shadow the
#: next one's names: the connection must be discarded (``session_binding`` does).
TAINTED_CONNECTION = "TB001"

#: ``SELECT public.bind_session(<Better Auth session token>)``, first in every
#: transaction of the API: when the token is a live session (it exists and has not
#: expired), binds it to this transaction (transaction-local settings: the token, the
#: transaction's start, and the claimed user id) and returns the user's id; NULL, and
#: nobody, for any other token. It binds nothing on a connection that holds temporary
#: objects (:data:`TAINTED_CONNECTION`): no role of the API may create any, so they are
#: an earlier client's, left to shadow the names of this one.
BIND_SESSION = Function(
    name="bind_session",
    arguments="token text",
    returns="text",
    volatility="VOLATILE",
    security_definer=True,
    search_path=DEFINER_SEARCH_PATH,
    owner=IDENTITY_ROLE,
    executors=(APP_ROLE,),
    body=f"""
    DECLARE
        found pg_catalog.text;
    BEGIN
        IF pg_catalog.pg_my_temp_schema() <> 0 THEN
            RAISE EXCEPTION USING ERRCODE = '{TAINTED_CONNECTION}',
                MESSAGE = 'this connection holds temporary objects of an earlier client: '
                    || 'bound nobody; discard the connection';
        END IF;
        SELECT s."userId" INTO found FROM public.session s
        WHERE s.token = bind_session.token AND s."expiresAt" > pg_catalog.now();
        PERFORM pg_catalog.set_config(
            'app.session_token', coalesce(bind_session.token, ''), true);
        PERFORM pg_catalog.set_config(
            'app.session_bound', extract(epoch FROM pg_catalog.now())::pg_catalog.text, true);
        PERFORM pg_catalog.set_config('app.user_id', coalesce(found, ''), true);
        RETURN found;
    END
    """,
)

#: The id of the user whose live session :data:`BIND_SESSION` bound to this very
#: transaction; NULL otherwise. The settings alone prove nothing (any session may set
#: them): the token must be a live session in ``session``, which the API's role cannot
#: read, and the binding must carry this transaction's start, so a setting left on a
#: pooled connection, by an earlier transaction or by hand at session level, binds
#: nothing (no two transactions of one connection start at the same microsecond).
VERIFIED_USER_ID = Function(
    name="verified_user_id",
    returns="text",
    volatility="STABLE",
    security_definer=True,
    search_path=DEFINER_SEARCH_PATH,
    owner=IDENTITY_ROLE,
    executors=(APP_ROLE,),
    body="""
    BEGIN
        IF pg_catalog.current_setting('app.session_bound', true)
            IS DISTINCT FROM extract(epoch FROM pg_catalog.now())::pg_catalog.text THEN
            RETURN NULL;
        END IF;
        RETURN (SELECT s."userId" FROM public.session s
                WHERE s.token = pg_catalog.current_setting('app.session_token', true)
                  AND s."expiresAt" > pg_catalog.now());
    END
    """,
)

#: The API's identity: a Better Auth session token, verified in the database.
VERIFIED_SESSION = Identity(
    user_id="(SELECT public.verified_user_id())",
    claimed_user_id=CLAIMED_USER_ID,
    functions=(BIND_SESSION, VERIFIED_USER_ID),
    proven="public.verified_user_id() = NULLIF(current_setting('app.user_id', true), '')",
)
#: The user id as the connection claims it (``set_config('app.user_id', ...)``),
#: unverified: only for a table whose only reader is a trusted job, never the API's.
#: Its policies are refused unless they say why (``claim_acknowledged="..."``).
UNVERIFIED_CLAIM = Identity(
    user_id=CLAIMED_USER_ID,
    proven="NULLIF(current_setting('app.user_id', true), '') IS NOT NULL",
    verified=False,
)
#: The identity every ``owned_by``, ``owned_through`` and ``readable_own_row`` uses.
IDENTITY = VERIFIED_SESSION
#: Every function the declarations need, created and compared like the tables.
FUNCTIONS: tuple[Function, ...] = IDENTITY.functions


# --- the one-liners ------------------------------------------------------------------


def owner_is_current_user(column: str, identity: Identity = IDENTITY) -> str:
    """The condition "`column` holds the current user's id"."""
    return identity.owns(column)


def own_row_policies(
    role: str,
    mine: str,
    written: str | None = None,
    *,
    changeable: str | None = None,
    claim_acknowledged: str | None = None,
) -> tuple[Policy, ...]:
    """One policy per command for `role`: it reads only the rows for which `mine` holds,
    changes and deletes only those for which `changeable` (by default the same condition)
    holds, and writes only rows for which `written` (by default `changeable`) holds."""
    changeable = changeable or mine
    written = written or changeable
    why = claim_acknowledged
    return (
        Policy(f"{role}_select_own", "SELECT", (role,), using=mine, claim_acknowledged=why),
        Policy(f"{role}_insert_own", "INSERT", (role,), with_check=written, claim_acknowledged=why),
        Policy(
            f"{role}_update_own",
            "UPDATE",
            (role,),
            using=changeable,
            with_check=written,
            claim_acknowledged=why,
        ),
        Policy(f"{role}_delete_own", "DELETE", (role,), using=changeable, claim_acknowledged=why),
    )


def owned_by(
    column: str,
    *,
    role: str = APP_ROLE,
    identity: Identity = IDENTITY,
    claim_acknowledged: str | None = None,
) -> RowSecurity:
    """Rows belong to the user whose id is in `column`: `role` may select, insert,
    update and delete only the current user's rows, and may neither create a row for
    another user nor hand one over to another user. With :data:`UNVERIFIED_CLAIM` as
    `identity`, `claim_acknowledged` says why the role may be trusted with it."""
    return RowSecurity(
        policies=own_row_policies(
            role, owner_is_current_user(column, identity), claim_acknowledged=claim_acknowledged
        ),
        grants=(Grant(role, READ_WRITE),),
        owner_column=column,
        owner_roles=frozenset({role}),
    )


def owned_through(
    column: str,
    *,
    role: str = APP_ROLE,
    identity: Identity = IDENTITY,
    claim_acknowledged: str | None = None,
) -> RowSecurity:
    """Rows belong to whoever owns the row `column` references (a link table such as
    ``todo_tag`` through ``todo_id``): `role` gets the same four policies as
    :func:`owned_by` gives, each matching the parent row's owner, and the same
    privileges. The parent must itself be owned (by a column or through its parent),
    and `role` must be able to read it."""
    return RowSecurity(
        grants=(Grant(role, READ_WRITE),),
        through=ThroughParent(column, role, identity, claim_acknowledged),
    )


def readable_own_row(
    column: str,
    *,
    role: str = APP_ROLE,
    identity: Identity = IDENTITY,
    columns: frozenset[str] | None = None,
    claim_acknowledged: str | None = None,
) -> RowSecurity:
    """`role` may read the one row whose `column` is the current user's id: all of its
    columns, or only `columns`."""
    return RowSecurity(
        policies=(
            Policy(
                f"{role}_select_own",
                "SELECT",
                (role,),
                using=owner_is_current_user(column, identity),
                claim_acknowledged=claim_acknowledged,
            ),
        ),
        grants=(Grant(role, READ_ONLY, columns),),
        owner_column=column,
        owner_roles=frozenset({role}),
    )


def shared_with(
    members: str,
    *,
    owner: str,
    key: str = "id",
    role: str = APP_ROLE,
    identity: Identity = IDENTITY,
) -> RowSecurity:
    """Rows belong to the user whose id is in `owner`, who shares each with the members
    the table `members` lists for it (declared :func:`member_of`). For `role`:

    * the owner and every member read the row; the owner and the members whose level
      writes change it; only the owner deletes it, and a user creates rows of their own;
    * nobody changes the owner or the key (`role` gets UPDATE on the other columns only),
      so no member takes a row over or moves it;
    * rows owned through a shared row (``owned_through`` a foreign key to it: the todos
      of a shared list, their comments) follow it: read by whoever reads it, written by
      whoever writes it.

    The checks run once per statement, through SECURITY DEFINER functions owned by
    ``todo_sharing`` (``<table>_readable_ids()``...), so that no policy reads the other
    table's rows under its own policies (which would recurse), and revoking a membership
    takes effect at the member's next statement."""
    return RowSecurity(
        grants=(Grant(role, frozenset({"SELECT", "INSERT", "DELETE"})),),
        sharing=SharedWith(members, owner, key, role, identity),
        owner_column=owner,
        owner_roles=frozenset({role}),
    )


def member_of(
    shared: str,
    *,
    user: str = "user_id",
    level: str = "role",
    levels: tuple[str, ...] = ("viewer", "editor"),
    writers: tuple[str, ...] = ("editor",),
    managers: tuple[str, ...] = (),
    role: str = APP_ROLE,
    identity: Identity = IDENTITY,
) -> RowSecurity:
    """A membership table of a shared table (:func:`shared_with`): `shared` references
    the shared row, `user` the member, `level` their level, one of `levels`. For `role`,
    a member of a row sees its other members; its owner and its `managers` add, change
    and remove members, never themselves (so nobody adds themselves, or raises their own
    level); a member may leave."""
    return RowSecurity(
        grants=(Grant(role, READ_WRITE),),
        membership=MemberOf(shared, user, level, levels, writers, managers, role, identity),
    )


def full_access(role: str) -> RowSecurity:
    """`role` may read and write every row (a trusted server such as Better Auth's)."""
    return RowSecurity(
        policies=(Policy(f"{role}_all", "ALL", (role,), using="true", with_check="true"),),
        grants=(Grant(role, READ_WRITE),),
    )


def without_row_security(reason: str, *, grants: tuple[Grant, ...] = ()) -> RowSecurity:
    """No row-level security, on purpose and for `reason` (public reference data, a
    queue only a trusted job reads...): RLS stays disabled and every role granted on
    the table reaches every row. The review shows the reason in place of a warning."""
    return RowSecurity(grants=grants, enabled=False, forced=False, exemption=reason)
