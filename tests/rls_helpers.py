"""Shared by the row-level security tests: the declarations read as data, rows made for
the tables they declare owned, and one transaction acting as an application role.

Everything here is derived from the row-security declarations of the tables of
``models.metadata`` (resolved as the comparator resolves them, so a table owned
through a parent row gets its derived policies). A newly declared owned table, owned
by a column or through a parent row, is covered by the tests that use these helpers
without a test of its own. When rows for such a table cannot be made generically,
:func:`new_row` fails with a message naming the table and column and pointing at
:data:`ROW_FACTORIES`: nothing is ever skipped silently.
"""

from __future__ import annotations

import decimal
import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

import session_binding
from migrations.rowsecurity.declarations import declared_functions, row_security
from models import metadata
from models.security import APP_ROLE, BIND_SESSION, ROLES, RowSecurity

#: SQLSTATE 42501, raised both for "permission denied for table" and for "new row
#: violates row-level security policy" (a WITH CHECK failure).
INSUFFICIENT_PRIVILEGE: Final = "42501"

#: What :func:`attempt` returns for a statement PostgreSQL refused with 42501.
REFUSED: Final = "refused"
Refused = Literal["refused"]

#: The row commands a role can be granted and policies can govern.
COMMANDS: Final = ("SELECT", "INSERT", "UPDATE", "DELETE")

#: The table Better Auth keeps its users in; every owner column points at its ``id``.
USER_TABLE: Final = "user"
#: Users the tests act as; at least two, so "another user" always exists.
USERS: Final = ("user-1", "user-2", "user-3")
#: A user with a live session and no row but their own user row: what a signed-in
#: attacker sees of other users' rows is what they see of the rest.
OUTSIDER: Final = "user-without-rows"
#: Rows seeded per user in each owned table whose owner column allows more than one.
ROWS_PER_USER: Final = 2

#: Better Auth's sessions: the credential the verified identity checks.
SESSION_TABLE: Final = "session"


def live_token(user: str) -> str:
    """The token of `user`'s live session, as :func:`seed` makes it."""
    return f"live-session-of-{user}"


def expired_token(user: str) -> str:
    """The token of `user`'s session that expired an hour ago."""
    return f"expired-session-of-{user}"


#: Values by column name for one row of a table owned by `owner`; `n` tells rows apart.
RowFactory = Callable[[str, int], dict[str, object]]

#: Tables whose rows are better made by hand than generically. A table missing here is
#: made generically (see :func:`generic_row`), or :func:`new_row` says why it cannot be.
ROW_FACTORIES: Final[Mapping[str, RowFactory]] = {
    USER_TABLE: lambda owner, n: {
        "id": owner,
        "name": f"User {owner}",
        "email": f"{owner}@example.com",
        "emailVerified": True,
    },
    "todo": lambda owner, n: {"user_id": owner, "title": f"todo {n} of {owner}"},
}


class NoRowFactoryError(LookupError):
    """An owned table for which rows can be made neither by a factory nor generically."""


def granted_commands(security: RowSecurity, role: str) -> frozenset[str]:
    """The row commands `role` may run: granted the privilege and named by a policy."""
    privileges = {p for grant in security.grants if grant.role == role for p in grant.privileges}
    governed = {
        command
        for policy in security.policies
        if role in policy.roles
        for command in (COMMANDS if policy.command == "ALL" else (policy.command,))
    }
    return frozenset(c for c in COMMANDS if c in privileges and c in governed)


def reachable_tables(role: str) -> frozenset[str]:
    """Tables on which the declarations give `role` a privilege or a policy."""
    return frozenset(
        table.name
        for table in metadata.sorted_tables
        if (security := row_security(table)) is not None
        and (
            any(grant.role == role for grant in security.grants)
            or any(role in policy.roles for policy in security.policies)
        )
    )


@dataclass(frozen=True)
class OwnedTable:
    """A table whose rows belong to one user each, as declared for one role.

    A row belongs to a user by the value of :attr:`owner_column`: the user's id, or,
    for a table owned through a parent row, the key of a parent row the user owns."""

    table: sa.Table
    owner_column: str
    #: The row commands the role has on it (privilege and policy both declared).
    commands: frozenset[str]
    #: The table and column `owner_column` references, when owned through a parent row.
    parent: tuple[str, str] | None = None
    #: The commands a restrictive policy narrows further for the role (a user may, say,
    #: delete only completed todos): on those, the user's own rows are an upper bound.
    narrowed: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def owner(self) -> sa.Column[Any]:
        return self.table.columns[self.owner_column]

    def readable_columns(self, role: str) -> list[sa.Column[Any]]:
        """The columns `role` may read: all of them, or those its grants name."""
        security = row_security(self.table)
        assert security is not None
        names: set[str] = set()
        for grant in security.grants:
            if grant.role == role and "SELECT" in grant.privileges:
                names |= set(self.table.columns.keys() if grant.columns is None else grant.columns)
        return [column for column in self.table.columns if column.name in names]

    @property
    def one_row_per_owner(self) -> bool:
        """Whether the owner column alone is the primary key or unique (for a direct
        owner: one row per user)."""
        if self.parent is not None:
            return False
        primary_key = [column.name for column in self.table.primary_key.columns]
        return primary_key == [self.owner_column] or bool(self.owner.unique)

    def __str__(self) -> str:
        return self.name


def _parent_of(table: sa.Table, column: str) -> tuple[str, str]:
    (key,) = table.columns[column].foreign_keys
    return key.column.table.name, key.column.name


def owned_tables(role: str = APP_ROLE) -> tuple[OwnedTable, ...]:
    """Every table declared owned (by a column or through a parent row) with at least
    one policy for `role`, in dependency order."""
    found = []
    for table in metadata.sorted_tables:
        security = row_security(table)
        if security is None or not any(role in policy.roles for policy in security.policies):
            continue
        commands = granted_commands(security, role)
        narrowed = frozenset(
            command
            for policy in security.policies
            if role in policy.roles and not policy.permissive
            for command in (COMMANDS if policy.command == "ALL" else (policy.command,))
        )
        if security.through is not None and security.through.role == role:
            column = security.through.column
            parent = _parent_of(table, column)
            found.append(OwnedTable(table, column, commands, parent, narrowed))
        elif security.owner_column is not None and role in security.owner_roles:
            found.append(OwnedTable(table, security.owner_column, commands, None, narrowed))
    return tuple(found)


def owned_by_any_role() -> tuple[tuple[str, OwnedTable], ...]:
    """(role, table) for every role and every table owned for it."""
    return tuple((role, owned) for role in ROLES for owned in owned_tables(role))


def users_table() -> OwnedTable:
    """The user table, viewed as owned by its own ``id``, whatever the declarations say."""
    return OwnedTable(metadata.tables[USER_TABLE], "id", frozenset())


# --- seeded rows and who owns them ------------------------------------------------------


@dataclass(frozen=True)
class SeededRow:
    owner: str
    #: Primary-key values by column name.
    key: dict[str, object]
    #: Every column's value, as the database stored it.
    values: dict[str, object]


@dataclass
class Seeded:
    """The rows :func:`seed` made, and who owns what through them."""

    rows: dict[str, list[SeededRow]] = field(default_factory=dict)

    def of(self, owned: OwnedTable | str, owner: str) -> list[SeededRow]:
        name = owned if isinstance(owned, str) else owned.name
        return [row for row in self.rows.get(name, []) if row.owner == owner]

    def reference(self, table: str, column: str, owner: str, n: int = 0) -> object | None:
        """The `column` value of one of `owner`'s rows of `table` (the `n`-th, cycling):
        what a foreign key to it holds to point at something `owner` owns."""
        rows = self.of(table, owner)
        return rows[n % len(rows)].values[column] if rows else None

    def owner_value(self, owned: OwnedTable, owner: str, n: int = 0) -> object | None:
        """A value of `owned`'s owner column that makes a row `owner`'s (None: none
        can, e.g. no parent row belongs to the empty id)."""
        if owned.parent is None:
            return owner
        return self.reference(*owned.parent, owner, n)

    def owner_values(self, owned: OwnedTable, owner: str) -> list[object]:
        """Every value of `owned`'s owner column that makes a row `owner`'s."""
        if owned.parent is None:
            return [owner]
        table, column = owned.parent
        return [row.values[column] for row in self.of(table, owner)]

    def owner_of(self, owned: OwnedTable, value: object) -> str | None:
        """Whose a row is whose owner column holds `value`."""
        if owned.parent is None:
            return None if value is None else str(value)
        table, column = owned.parent
        for row in self.rows.get(table, []):
            if row.values[column] == value:
                return row.owner
        return None

    def belongs_to(self, owned: OwnedTable, owner: str) -> sa.ColumnElement[bool]:
        """The condition that picks `owner`'s rows of `owned`."""
        return owned.owner.in_(self.owner_values(owned, owner))


def _generic_value(table: sa.Table, column: sa.Column[Any], owner: str, n: int) -> object:
    type_ = column.type
    if isinstance(type_, sa.types.TypeDecorator):  # a type of the project's own: what it stores
        type_ = type_.impl_instance
    if isinstance(type_, sa.Enum) and type_.enums:
        return type_.enums[0]
    if isinstance(type_, sa.ARRAY):
        return []
    try:
        python_type = type_.python_type
    except NotImplementedError:
        python_type = object
    values: dict[type, Callable[[], object]] = {
        str: lambda: f"{n} {owner}",
        bool: lambda: False,
        int: lambda: n + 1,
        float: lambda: float(n + 1),
        decimal.Decimal: lambda: decimal.Decimal(n + 1),
        datetime: lambda: datetime.now(UTC),
        date: lambda: datetime.now(UTC).date(),
        time: lambda: time(12, 0),
        timedelta: lambda: timedelta(minutes=n + 1),
        uuid.UUID: uuid.uuid4,
        dict: dict,
        list: list,
        bytes: f"{n} {owner}".encode,
    }
    if python_type not in values:
        raise NoRowFactoryError(
            f"owned table {table.name!r}: no generic value for required column "
            f"{column.name!r} of type {column.type}; add a factory for {table.name!r} "
            "to ROW_FACTORIES in tests/rls_helpers.py"
        )
    return values[python_type]()


def generic_row(owned: OwnedTable, owner: str, n: int, seeded: Seeded) -> dict[str, object]:
    """A row owned by `owner` with a made-up value in every other column that needs one
    (not nullable, no default). A foreign key points at one of `owner`'s rows of the
    table it references. Fails with :class:`NoRowFactoryError` on a column it cannot
    fill: a reference to a table nobody owns, an unknown type."""
    table = owned.table
    row: dict[str, object] = {owned.owner_column: seeded.owner_value(owned, owner, n)}
    for column in table.columns:
        if (
            column.name == owned.owner_column
            or column.nullable
            or column.server_default is not None
            or column.default is not None
            or column.computed is not None
            or column.identity is not None
            or column is table.autoincrement_column
        ):
            continue
        if column.foreign_keys:
            (key,) = column.foreign_keys
            target = seeded.reference(key.column.table.name, key.column.name, owner, n)
            if target is None:
                raise NoRowFactoryError(
                    f"owned table {table.name!r}: required column {column.name!r} references "
                    f"{key.column.table.name!r}, of which no row belongs to a user, so rows "
                    f"cannot be made generically; add a factory for {table.name!r} to "
                    "ROW_FACTORIES in tests/rls_helpers.py"
                )
            row[column.name] = target
            continue
        row[column.name] = _generic_value(table, column, owner, n)
    return _with_an_unused_key(owned, row, owner, n, seeded)


def _with_an_unused_key(
    owned: OwnedTable, row: dict[str, object], owner: str, n: int, seeded: Seeded
) -> dict[str, object]:
    """`row`, its foreign keys repointed when its primary key is made of them and the
    rows already made hold it (a link table whose key is two references): the `n`-th
    combination of `owner`'s rows no seeded row uses."""
    key = [column for column in owned.table.primary_key.columns]
    if not key or not all(column.foreign_keys and column.name in row for column in key):
        return row
    taken = {
        tuple(existing.values[column.name] for column in key)
        for existing in seeded.rows.get(owned.name, [])
    }
    choices = []
    for column in key:
        (reference,) = column.foreign_keys
        target = reference.column
        choices.append([r.values[target.name] for r in seeded.of(target.table.name, owner)])
    free = [combination for combination in itertools.product(*choices) if combination not in taken]
    if not free:
        raise NoRowFactoryError(
            f"owned table {owned.name!r}: every combination of {owner}'s rows its primary key "
            f"({', '.join(c.name for c in key)}) can reference is taken; seed more rows "
            "(ROWS_PER_USER) or add a factory to ROW_FACTORIES in tests/rls_helpers.py"
        )
    combination = free[n % len(free)]
    return {**row, **{column.name: value for column, value in zip(key, combination, strict=True)}}


def new_row(owned: OwnedTable, owner: str, n: int, seeded: Seeded) -> dict[str, object]:
    """Values by column name for a new row of `owned` belonging to `owner`."""
    factory = ROW_FACTORIES.get(owned.name)
    row = generic_row(owned, owner, n, seeded) if factory is None else factory(owner, n)
    if seeded.owner_of(owned, row.get(owned.owner_column)) != owner:
        raise NoRowFactoryError(
            f"ROW_FACTORIES[{owned.name!r}] must put the owner in {owned.owner_column!r}"
        )
    unknown = set(row) - {column.name for column in owned.table.columns}
    if unknown:
        raise NoRowFactoryError(f"ROW_FACTORIES[{owned.name!r}] names no such column: {unknown}")
    return row


def insert(owned: OwnedTable, row: Mapping[str, object]) -> sa.Insert:
    """INSERT of `row`, without the RETURNING SQLAlchemy would add for a server-made key
    (RETURNING is subject to the SELECT policies too, and hides the row count)."""
    values = {owned.table.columns[name]: value for name, value in row.items()}
    return sa.insert(owned.table).values(values).inline()


def where_key(owned: OwnedTable, key: Mapping[str, object]) -> sa.ColumnElement[bool]:
    """The condition that picks the row whose primary key is `key`."""
    return sa.and_(*(owned.table.columns[name] == value for name, value in key.items()))


def seed(
    connection: Connection, users: Sequence[str] = USERS, outsiders: Sequence[str] = (OUTSIDER,)
) -> Seeded:
    """As the connection's (superuser) role: `users` in the user table, then rows for
    each of them in every table owned for any role, parents first; `outsiders` in the
    user table only; and a live and an expired session for everyone. Returns the rows."""
    seeded = Seeded()
    owned = {users_table().name: users_table()}
    for _, table in owned_by_any_role():
        owned.setdefault(table.name, table)
    for name in [t.name for t in metadata.sorted_tables if t.name in owned]:
        target = owned[name]
        per_user = 1 if target.one_row_per_owner else ROWS_PER_USER
        columns = list(target.table.columns)
        keys = [column.name for column in target.table.primary_key.columns]
        rows = seeded.rows.setdefault(target.name, [])
        for user in users:
            for n in range(per_user):
                statement = insert(target, new_row(target, user, n, seeded)).returning(*columns)
                try:
                    stored = connection.execute(statement).one()._asdict()
                except DBAPIError as exc:
                    reason = (str(exc.orig).strip().splitlines() or ["refused"])[0]
                    raise NoRowFactoryError(
                        f"owned table {name!r}: a generic row was refused ({reason}); add a "
                        f"factory for {name!r} to ROW_FACTORIES in tests/rls_helpers.py"
                    ) from None
                rows.append(SeededRow(user, {k: stored[k] for k in keys}, stored))
    users_rows = seeded.rows[users_table().name]
    for outsider in outsiders:
        values = new_row(users_table(), outsider, 0, seeded)
        stored = (
            connection.execute(
                insert(users_table(), values).returning(*users_table().table.columns)
            )
            .one()
            ._asdict()
        )
        users_rows.append(SeededRow(outsider, {"id": stored["id"]}, stored))
    seed_sessions(connection, [*users, *outsiders])
    return seeded


def seed_sessions(connection: Connection, users: Sequence[str]) -> None:
    """A live and an expired Better Auth session for each of `users` (see
    :func:`live_token`, :func:`expired_token`)."""
    now = datetime.now(UTC)
    sessions = [
        {
            "id": f"{kind}-{user}",
            "token": token(user),
            "userId": user,
            "expiresAt": now + expiry,
            "createdAt": now,
            "updatedAt": now,
        }
        for user in users
        for kind, token, expiry in (
            ("live", live_token, timedelta(days=1)),
            ("expired", expired_token, timedelta(hours=-1)),
        )
    ]
    connection.execute(sa.insert(metadata.tables[SESSION_TABLE]), sessions)


# --- acting as a role ---------------------------------------------------------------------


def may_bind_sessions() -> frozenset[str]:
    """The roles that may run :data:`BIND_SESSION`, as the revisions grant it."""
    (function,) = (
        f for f in declared_functions(metadata.sorted_tables) if f.name == BIND_SESSION.name
    )
    return frozenset(function.executors)


def bind(connection: Connection, token: str) -> str | None:
    """Bind `token` as the API does (:func:`session_binding.bind`): the user whose live
    session `token` is, or None (nobody) for any other token."""
    try:
        return session_binding.bind(connection, token)
    except session_binding.InvalidSessionError:
        return None


@contextmanager
def acting_as(
    connection: Connection, user_id: str | None, *, role: str = APP_ROLE, commit: bool = False
) -> Iterator[Connection]:
    """One transaction on `connection` as `role`, bound to `user_id`'s live session as
    the API binds it (:func:`bind`); `user_id` None binds nothing, and the empty string
    binds the empty token (both: nobody). A role that may not bind sessions (a trusted
    job's) sets ``app.user_id`` instead.

    Rolled back on leaving unless `commit`. Mind that once a session has set
    ``app.user_id`` locally, the setting reads as '' (not NULL) after that transaction.
    """
    quoted = connection.dialect.identifier_preparer.quote(role)
    transaction = connection.begin()
    try:
        connection.exec_driver_sql(f"SET LOCAL ROLE {quoted}")
        if user_id is not None and role in may_bind_sessions():
            bound = bind(connection, live_token(user_id) if user_id else "")
            assert bound == (user_id or None), f"{user_id!r}'s live session bound {bound!r}"
        elif user_id is not None:  # a trusted job's role: it says whom it acts for
            connection.execute(
                sa.text("SELECT set_config('app.user_id', :id, true)"), {"id": user_id}
            )
        yield connection
    except BaseException:
        transaction.rollback()
        raise
    if commit:
        transaction.commit()
    else:
        transaction.rollback()


def is_refused(error: DBAPIError) -> bool:
    """Whether PostgreSQL refused for lack of privilege or by a WITH CHECK policy."""
    return getattr(error.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE


def attempt(connection: Connection, statement: sa.Executable) -> int | Refused:
    """Run a write in a savepoint: the rows it affected, or :data:`REFUSED`.

    Any error other than 42501 is raised: it is not what the policies are about.
    """
    try:
        with connection.begin_nested():
            # SQLAlchemy keeps the row count of an UPDATE or DELETE only, unless told.
            result = connection.execute(statement, execution_options={"preserve_rowcount": True})
    except DBAPIError as error:
        if is_refused(error):
            return REFUSED
        raise
    return int(result.rowcount)


def read(connection: Connection, statement: sa.Executable) -> list[tuple[Any, ...]] | Refused:
    """Run a query in a savepoint: its rows, or :data:`REFUSED`."""
    try:
        with connection.begin_nested():
            return [tuple(row) for row in connection.execute(statement)]
    except DBAPIError as error:
        if is_refused(error):
            return REFUSED
        raise
