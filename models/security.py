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

#: The todo API's role. Login roles are made members of it at deployment.
APP_ROLE = "todo_app"
#: The Better Auth server's role.
AUTH_ROLE = "todo_auth"
#: Every role these declarations grant to; created NOLOGIN, NOBYPASSRLS, owning nothing.
ROLES = (APP_ROLE, AUTH_ROLE)
#: The grantee every role belongs to; policies and grants may name it, as in SQL.
PUBLIC = "public"

#: Key of a table's ``info`` under which its :class:`RowSecurity` is declared.
ROW_SECURITY = "row_security"

#: The current user, as the API sets it per transaction with
#: ``SELECT set_config('app.user_id', <id>, true)``. Unset and empty both read as
#: NULL, which equals no id: nobody. The scalar subquery makes the planner evaluate
#: it once per statement (an InitPlan) instead of once per row.
CURRENT_USER_ID = "(SELECT NULLIF(current_setting('app.user_id', true), ''))"

Command = Literal["ALL", "SELECT", "INSERT", "UPDATE", "DELETE"]
Privilege = Literal["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"]

#: What a role needs to read and write rows; nothing that changes the table itself.
READ_WRITE: frozenset[Privilege] = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
READ_ONLY: frozenset[Privilege] = frozenset({"SELECT"})


@dataclass(frozen=True)
class Policy:
    """One ``CREATE POLICY``: who (`roles`) may do what (`command`) to which rows.

    `using` filters the rows a command sees; `with_check` vets the rows it writes.
    """

    name: str
    command: Command
    roles: tuple[str, ...]
    using: str | None = None
    with_check: str | None = None
    permissive: bool = True


@dataclass(frozen=True)
class Grant:
    """Table privileges given to one role."""

    role: str
    privileges: frozenset[Privilege]


@dataclass(frozen=True)
class ThroughParent:
    """Rows belong to whoever owns the parent row that `column` (a foreign key)
    references. The policies for `role` are derived from the parent table's own
    ownership when the models are compared (``migrations/rowsecurity``), because the
    parent is known only once every table exists."""

    column: str
    role: str


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
    #: Why the table has no row-level security, when it opts out.
    exemption: str | None = field(default=None, compare=False)
    #: Catalog lints (tests/test_catalog_lint.py) this table breaks on purpose:
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
            exemption=self.exemption or other.exemption,
            lint_acknowledged={**self.lint_acknowledged, **other.lint_acknowledged},
        )


def owner_is_current_user(column: str) -> str:
    """The condition "`column` holds the current user's id"."""
    return f"{column} = {CURRENT_USER_ID}"


def own_row_policies(role: str, mine: str, written: str | None = None) -> tuple[Policy, ...]:
    """One policy per command for `role`: it reads, changes and deletes only the rows
    for which `mine` holds, and writes only rows for which `written` (by default the
    same condition) holds."""
    written = written or mine
    return (
        Policy(f"{role}_select_own", "SELECT", (role,), using=mine),
        Policy(f"{role}_insert_own", "INSERT", (role,), with_check=written),
        Policy(f"{role}_update_own", "UPDATE", (role,), using=mine, with_check=written),
        Policy(f"{role}_delete_own", "DELETE", (role,), using=mine),
    )


def owned_by(column: str, *, role: str = APP_ROLE) -> RowSecurity:
    """Rows belong to the user whose id is in `column`: `role` may select, insert,
    update and delete only the current user's rows, and may neither create a row for
    another user nor hand one over to another user."""
    return RowSecurity(
        policies=own_row_policies(role, owner_is_current_user(column)),
        grants=(Grant(role, READ_WRITE),),
        owner_column=column,
        owner_roles=frozenset({role}),
    )


def owned_through(column: str, *, role: str = APP_ROLE) -> RowSecurity:
    """Rows belong to whoever owns the row `column` references (a link table such as
    ``todo_tag`` through ``todo_id``): `role` gets the same four policies as
    :func:`owned_by` gives, each matching the parent row's owner, and the same
    privileges. The parent must itself be owned (by a column or through its parent),
    and `role` must be able to read it."""
    return RowSecurity(
        grants=(Grant(role, READ_WRITE),),
        through=ThroughParent(column, role),
    )


def readable_own_row(column: str, *, role: str = APP_ROLE) -> RowSecurity:
    """`role` may read the one row whose `column` is the current user's id."""
    return RowSecurity(
        policies=(
            Policy(f"{role}_select_own", "SELECT", (role,), using=owner_is_current_user(column)),
        ),
        grants=(Grant(role, READ_ONLY),),
        owner_column=column,
        owner_roles=frozenset({role}),
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
