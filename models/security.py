"""Row-level security as plain data, declared next to each table.

A table declares its :class:`RowSecurity` in ``__table_args__``'s ``info`` under
:data:`ROW_SECURITY`: whether RLS is enabled and forced, its policies, and the
privileges each application role gets. Alembic's autogenerate (see
``migrations/rowsecurity``) turns the declarations into revisions and compares them
with the live catalog; the tests derive their isolation checks from them.

The common case, a table owned through a column, is one line::

    __table_args__ = (..., {"info": {ROW_SECURITY: owned_by("user_id")}})
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: The todo API's role. Login roles are made members of it at deployment.
APP_ROLE = "todo_app"
#: The Better Auth server's role.
AUTH_ROLE = "todo_auth"
#: Every role these declarations grant to; created NOLOGIN, NOBYPASSRLS, owning nothing.
ROLES = (APP_ROLE, AUTH_ROLE)

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

    def __add__(self, other: RowSecurity) -> RowSecurity:
        return RowSecurity(
            policies=self.policies + other.policies,
            grants=self.grants + other.grants,
            enabled=self.enabled and other.enabled,
            forced=self.forced and other.forced,
            owner_column=self.owner_column or other.owner_column,
        )


def owned_by(column: str, *, role: str = APP_ROLE) -> RowSecurity:
    """Rows belong to the user whose id is in `column`: `role` may select, insert,
    update and delete only the current user's rows, and may neither create a row for
    another user nor hand one over to another user."""
    mine = f"{column} = {CURRENT_USER_ID}"
    return RowSecurity(
        policies=(
            Policy(f"{role}_select_own", "SELECT", (role,), using=mine),
            Policy(f"{role}_insert_own", "INSERT", (role,), with_check=mine),
            Policy(f"{role}_update_own", "UPDATE", (role,), using=mine, with_check=mine),
            Policy(f"{role}_delete_own", "DELETE", (role,), using=mine),
        ),
        grants=(Grant(role, READ_WRITE),),
        owner_column=column,
    )


def readable_own_row(column: str, *, role: str = APP_ROLE) -> RowSecurity:
    """`role` may read the one row whose `column` is the current user's id."""
    return RowSecurity(
        policies=(
            Policy(f"{role}_select_own", "SELECT", (role,), using=f"{column} = {CURRENT_USER_ID}"),
        ),
        grants=(Grant(role, READ_ONLY),),
        owner_column=column,
    )


def full_access(role: str) -> RowSecurity:
    """`role` may read and write every row (a trusted server such as Better Auth's)."""
    return RowSecurity(
        policies=(Policy(f"{role}_all", "ALL", (role,), using="true", with_check="true"),),
        grants=(Grant(role, READ_WRITE),),
    )
