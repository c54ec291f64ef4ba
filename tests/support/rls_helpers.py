"""Shared by the row-level security tests: the declarations read as data, rows made for
every table a role reaches, and one transaction acting as an application role.

Everything here is derived from the row-security declarations of the tables of
``models.metadata`` (resolved as the comparator resolves them, so a table owned
through a parent row gets its derived policies), and from the tables' own shape:
their foreign keys, keys, unique constraints and column types. A newly declared table
(owned by a column, through a parent row at any depth, a link table with a composite
key, a lookup table without row security) gets rows without a line of test code.
When rows for a table cannot be made generically, seeding fails with a message
naming the table and column and pointing at :data:`ROW_FACTORIES`: nothing is ever
skipped silently.

Who may see and change which of those rows is :mod:`tests.support.rls_oracle`'s.
"""

from __future__ import annotations

import decimal
import enum
import functools
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
from models import metadata
from models.security import APP_ROLE, BIND_SESSION, PUBLIC, ROLES, Identity, declared_role
from todo_database.declarations.row_security import declared, declared_functions, row_security

#: SQLSTATE 42501, raised both for "permission denied for table" and for "new row
#: violates row-level security policy" (a WITH CHECK failure).
INSUFFICIENT_PRIVILEGE: Final = "42501"

Refused = Literal["refused"]
#: What :func:`attempt` returns for a statement PostgreSQL refused with 42501.
REFUSED: Final[Refused] = "refused"

#: The row commands a role can be granted and policies can govern.
COMMANDS: Final = ("SELECT", "INSERT", "UPDATE", "DELETE")

#: The table Better Auth keeps its users in; every owner column points at its ``id``.
USER_TABLE: Final = "user"
#: Users the tests act as; at least two, so "another user" always exists.
USERS: Final = ("user-1", "user-2", "user-3")
#: A user with a live session and no row but their own user row: what a signed-in
#: attacker sees of other users' rows is what they see of the rest.
OUTSIDER: Final = "user-without-rows"
#: Rows seeded per user in each table, unless its key allows only one per owner.
ROWS_PER_USER: Final = 2

#: Better Auth's sessions: the credential the verified identity checks.
SESSION_TABLE: Final = "session"

#: Values by column name: one row of a table, as stored or as about to be written.
Row = Mapping[str, object]


def live_token(user: str) -> str:
    """The token of `user`'s live session, as :func:`seed` makes it."""
    return f"live-session-of-{user}"


def expired_token(user: str) -> str:
    """The token of `user`'s session that expired an hour ago."""
    return f"expired-session-of-{user}"


# --- who a transaction is -------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who a transaction is, as far as policies can tell: the user whose live session
    it bound (`verified`: what ``public.verified_user_id()`` returns) and the user id it
    claims (`claimed`: ``app.user_id``, which any SQL may set). None is no one."""

    verified: str | None
    claimed: str | None

    @classmethod
    def user(cls, user: str | None) -> Actor:
        """A transaction as the API runs it for `user` (None or '': for nobody)."""
        return cls(user or None, user or None)

    def __str__(self) -> str:
        if self.verified == self.claimed:
            return f"{self.verified or 'nobody'}"
        return f"verified {self.verified or 'nobody'}, claiming {self.claimed or 'nobody'}"


#: A transaction that binds no session and claims no one.
NO_ONE: Final = Actor(None, None)


# --- what the declarations say, as data ---------------------------------------------


def acts_as(role: str) -> frozenset[str]:
    """`role`, PUBLIC and every declared role `role` is a member of (its policies and
    grants apply to `role` too)."""
    found = {role, PUBLIC}
    pending = [role]
    while pending:
        for group in declared_role(pending.pop()).member_of:
            if group not in found:
                found.add(group)
                pending.append(group)
    return frozenset(found)


@functools.cache
def reachable_tables(role: str) -> frozenset[str]:
    """Tables on which the declarations give `role` a privilege or a policy."""
    roles = acts_as(role)
    return frozenset(
        table.name
        for table in metadata.sorted_tables
        if (security := row_security(table)) is not None
        and (
            any(grant.role in roles for grant in security.grants)
            or any(roles & set(policy.roles) for policy in security.policies)
        )
    )


@dataclass(frozen=True)
class Ownership:
    """How a row of `table` names the user it belongs to: their id in `column`, or,
    with a `parent`, the key (`parent_column`) of a row of the parent table whose own
    ownership says whose it is, to any depth."""

    table: str
    column: str
    parent: Ownership | None = None
    parent_column: str | None = None


@functools.cache
def ownership(table: sa.Table) -> Ownership | None:
    """The table's ownership as declared (``owned_by``, ``readable_own_row``: a column
    holding the user's id; ``owned_through``: a parent row), or None. The same path the
    derived policies of ``todo_database/declarations/row_security.py`` follow."""
    security = declared(table)
    if security is None:
        return None
    if security.owner_column:
        return Ownership(table.name, security.owner_column)
    if security.through is None:
        return None
    column = security.through.column
    (key,) = table.columns[column].foreign_keys
    parent = ownership(key.column.table)
    if parent is None:
        return None
    return Ownership(table.name, column, parent, key.column.name)


@functools.cache
def unique_keys(table: sa.Table) -> tuple[tuple[str, ...], ...]:
    """Every set of columns the table holds unique: its primary key, its UNIQUE
    constraints and unique indexes (a partial one too: a row may fall under it)."""
    keys = [tuple(c.name for c in table.primary_key.columns)]
    keys += [
        tuple(c.name for c in constraint.columns)
        for constraint in table.constraints
        if isinstance(constraint, sa.UniqueConstraint)
    ]
    keys += [
        tuple(c.name for c in index.columns)
        for index in table.indexes
        if index.unique and index.columns
    ]
    keys += [(column.name,) for column in table.columns if column.unique]
    return tuple(dict.fromkeys(key for key in keys if key))


def one_row_per_owner(table: sa.Table) -> bool:
    """Whether a user can own one row of the table at most: its owner column alone is
    a key (the user table's ``id``)."""
    owned = ownership(table)
    return owned is not None and owned.parent is None and (owned.column,) in unique_keys(table)


# --- rows shared with members -------------------------------------------------------------

#: What a user may do with a shared row: read it, write it, or manage its members.
ShareAccess = Literal["read", "write", "manage"]
#: Who a user is to a shared row, the most they are: its owner, a member whose level
#: manages, writes or only reads (a viewer), or no member at all.
Kind = Literal["owner", "manager", "writer", "viewer", "outsider"]
KINDS: Final[tuple[Kind, ...]] = ("owner", "manager", "writer", "viewer", "outsider")


@dataclass(frozen=True)
class Sharing:
    """A table whose rows their owner shares with members (``shared_with``) and its
    membership table (``member_of``), as data: what the oracle and the sharing tests
    read, the same declarations the derived policies come from."""

    table: str
    key: str
    owner: str
    members: str
    #: The membership table's columns: the shared row it is for, the member, the level.
    shared_column: str
    user_column: str
    level_column: str
    levels: tuple[str, ...]
    writers: tuple[str, ...]
    managers: tuple[str, ...]
    role: str
    identity: Identity

    def levels_that(self, access: ShareAccess) -> tuple[str, ...]:
        """The levels whose members have `access` (the owner always has)."""
        return {"read": self.levels, "write": self.writers, "manage": self.managers}[access]

    def kind_of_level(self, level: object) -> Kind:
        if level in self.managers:
            return "manager"
        if level in self.writers:
            return "writer"
        return "viewer" if level in self.levels else "outsider"


@functools.cache
def sharing_of(table: sa.Table) -> Sharing | None:
    """The sharing `table` takes part in: as the shared table, as its membership table,
    or owned through a shared row (at any depth); None for any other table."""
    security = declared(table)
    if security is None:
        return None
    if security.sharing is not None:
        shared = security.sharing
        members = declared(metadata.tables[shared.members])
        assert members is not None
        assert members.membership is not None
        membership = members.membership
        return Sharing(
            table.name,
            shared.key,
            shared.owner,
            shared.members,
            membership.shared,
            membership.user,
            membership.level,
            membership.levels,
            membership.writers,
            membership.managers,
            shared.role,
            shared.identity,
        )
    if security.membership is not None:
        (key,) = table.columns[security.membership.shared].foreign_keys
        return sharing_of(key.column.table)
    owned = ownership(table)
    while owned is not None and owned.parent is not None:
        owned = owned.parent
    if owned is None or owned.table == table.name:
        return None
    return sharing_of(metadata.tables[owned.table])


# --- seeded rows, and who owns what through them ----------------------------------------


@dataclass(frozen=True)
class SeededRow:
    #: The user the row belongs to, for a table owned by users (else None).
    owner: str | None
    #: Primary-key values by column name.
    key: dict[str, object]
    #: Every column's value, as the database stored it.
    values: dict[str, object]


@dataclass
class Seeded:
    """The rows :func:`seed` made, by table, and who owns what through them."""

    rows: dict[str, list[SeededRow]] = field(default_factory=dict)

    def of(self, table: object, owner: str | None) -> list[SeededRow]:
        """`owner`'s rows of `table` (a table, its name, or anything named by ``str``)."""
        return [row for row in self.all(table) if row.owner == owner and owner is not None]

    def all(self, table: object) -> list[SeededRow]:
        name = table.name if isinstance(table, sa.Table) else str(table)
        return self.rows.get(name, [])

    def owner_of(self, owned: Ownership, values: Row) -> str | None:
        """Whose a row with these values is, following its ownership to the top."""
        value = values.get(owned.column)
        if value is None:
            return None
        if owned.parent is None:
            return str(value)
        for parent in self.all(owned.parent.table):
            if parent.values[str(owned.parent_column)] == value:
                return self.owner_of(owned.parent, parent.values)
        return None

    def owner_values(self, owned: Ownership, owner: str) -> list[object]:
        """Every value of the ownership column that makes a row `owner`'s (none, for an
        owner who owns no parent row)."""
        if owned.parent is None:
            return [owner]
        return [
            row.values[str(owned.parent_column)]
            for row in self.all(owned.parent.table)
            if self.owner_of(owned.parent, row.values) == owner
        ]

    def owner_value(self, owned: Ownership, owner: str, n: int = 0) -> object | None:
        """One value of the ownership column making a row `owner`'s (the `n`-th,
        cycling), or None when no value can."""
        values = self.owner_values(owned, owner)
        return values[n % len(values)] if values else None

    # --- shared rows -----------------------------------------------------------------------

    def shared_key(self, sharing: Sharing, table: str, values: Row) -> object | None:
        """The key of the shared row a row of `table` (the shared table, its membership
        table, or one owned through a shared row) is for; None when it is for none."""
        if table == sharing.table:
            return values.get(sharing.key)
        if table == sharing.members:
            return values.get(sharing.shared_column)
        owned = ownership(metadata.tables[table])
        value = values.get(owned.column) if owned is not None else None
        while owned is not None and owned.parent is not None and owned.parent.parent is not None:
            parent = next(
                (
                    row.values
                    for row in self.all(owned.parent.table)
                    if row.values[str(owned.parent_column)] == value
                ),
                None,
            )
            owned = owned.parent
            value = parent.get(owned.column) if parent is not None else None
        return value

    def shared_row(self, sharing: Sharing, key: object) -> Row | None:
        return next(
            (row.values for row in self.all(sharing.table) if row.values[sharing.key] == key),
            None,
        )

    def level(self, sharing: Sharing, key: object, user: object) -> object | None:
        """`user`'s level in the shared row `key`, or None when they are no member."""
        return next(
            (
                row.values[sharing.level_column]
                for row in self.all(sharing.members)
                if row.values[sharing.shared_column] == key
                and row.values[sharing.user_column] == user
            ),
            None,
        )

    def kind(self, sharing: Sharing, key: object, user: str | None) -> Kind:
        """Who `user` is to the shared row `key` (an outsider to one that does not
        exist)."""
        row = self.shared_row(sharing, key)
        if user is None or row is None:
            return "outsider"
        if row[sharing.owner] == user:
            return "owner"
        return sharing.kind_of_level(level_name(self.level(sharing, key, user)))

    def may(self, sharing: Sharing, user: str | None, key: object, access: ShareAccess) -> bool:
        """Whether `user` has `access` to the shared row `key`: its owner, or a member
        at a level the declaration lists for it."""
        row = self.shared_row(sharing, key)
        if user is None or row is None:
            return False
        if row[sharing.owner] == user:
            return True
        return level_name(self.level(sharing, key, user)) in sharing.levels_that(access)


def level_name(level: object) -> object:
    """A level as the declaration and PostgreSQL name it: an enum's member by its name
    (the label SQLAlchemy stores)."""
    return level.name if isinstance(level, enum.Enum) else level


# --- rows made to order -------------------------------------------------------------------


class NoRowFactoryError(LookupError):
    """A table for which rows can be made neither by a factory nor generically."""


@dataclass(frozen=True)
class RowRequest:
    """What a row factory is asked for: the `n`-th new row of `table` for `owner`
    (whose row it is, for a table owned by users; for any other table, the user whose
    rows its foreign keys point at first), given the rows `seeded` so far."""

    table: sa.Table
    owner: str
    n: int
    seeded: Seeded

    def generic(self) -> dict[str, object]:
        """The row :func:`generic_row` makes: a factory changes what it must."""
        return generic_row(self)


#: Values by column name for a new row, given what is asked (a factory may start from
#: ``request.generic()`` and change a column or two).
RowFactory = Callable[[RowRequest], dict[str, object]]

#: Tables whose rows are better made by hand than generically. A table missing here is
#: made generically (see :func:`generic_row`), or seeding says why it cannot be.
ROW_FACTORIES: Final[Mapping[str, RowFactory]] = {
    USER_TABLE: lambda request: {
        "id": request.owner,
        "name": f"User {request.owner}",
        "email": f"{request.owner}@example.com",
        "emailVerified": True,
    },
}

#: Numbers every generated value of a unique column, so no two rows made in one run
#: share one, whatever the keys it takes part in.
_serial = itertools.count(1)


def _is_required(table: sa.Table, column: sa.Column[Any]) -> bool:
    """Whether an INSERT must name `column`: NOT NULL, with no default of any kind."""
    return not (
        column.nullable
        or column.server_default is not None
        or column.default is not None
        or column.computed is not None
        or column.identity is not None
        or column is table.autoincrement_column
    )


def _storage_type(column: sa.Column[Any]) -> sa.types.TypeEngine[Any]:
    type_ = column.type
    if isinstance(type_, sa.types.TypeDecorator):  # a type of the project's own: what it stores
        return type_.impl_instance
    return type_


def _finite_values(column: sa.Column[Any]) -> list[object] | None:
    """Every value of a column of a finite type (a native or emulated enum, a boolean),
    in a fixed order; None for any other type."""
    type_ = _storage_type(column)
    if isinstance(type_, sa.Enum) and type_.enums:
        return list(type_.enums)
    if isinstance(type_, sa.Boolean):
        return [False, True]
    return None


def _generated_value(
    table: sa.Table, column: sa.Column[Any], owner: str, n: int, *, unique: bool
) -> object:
    """A made-up value of `column`'s type; one no other row holds when `unique`."""
    type_ = _storage_type(column)
    if isinstance(type_, sa.ARRAY):
        return [next(_serial)] if unique else []
    serial = next(_serial) if unique else 0
    try:
        python_type = type_.python_type
    except NotImplementedError:
        python_type = object
    length = getattr(type_, "length", None)

    def text() -> str:
        made = f"{n} {owner} {serial}" if unique else f"{n} {owner}"
        return made if not length or len(made) <= length else f"{serial:x}"[-length:]

    values: dict[type, Callable[[], object]] = {
        str: text,
        int: lambda: serial or n + 1,
        float: lambda: float(serial or n + 1),
        decimal.Decimal: lambda: decimal.Decimal(serial or n + 1),
        datetime: lambda: datetime.now(UTC) + timedelta(seconds=serial),
        date: lambda: datetime.now(UTC).date() + timedelta(days=serial),
        time: lambda: time(12, 0, serial % 60, serial // 60 % 1_000_000),
        timedelta: lambda: timedelta(minutes=serial or n + 1),
        uuid.UUID: uuid.uuid4,
        dict: lambda: {"n": serial} if unique else {},
        list: lambda: [serial] if unique else [],
        bytes: text().encode,
    }
    if python_type not in values:
        raise NoRowFactoryError(
            f"table {table.name!r}: no generic value for required column {column.name!r} of "
            f"type {column.type}; add a factory for {table.name!r} to ROW_FACTORIES in "
            "tests/support/rls_helpers.py"
        )
    return values[python_type]()


@dataclass(frozen=True)
class _Choices:
    """The values a column may take in a requested row when they are few: `preferred`,
    picked from by the row's number, and `every` one, preferred first, for a key that
    needs a combination no row holds yet."""

    preferred: list[object]
    every: list[object]


def _choices(request: RowRequest, column: sa.Column[Any]) -> _Choices | None:
    """A reference to a seeded row (the owner's first), the owner's id, an enum's labels
    (the first one preferred, so the others are values no row holds), a boolean (both,
    in turn); None for a column whose values are not few (any text, number, date...)."""
    table, owner, seeded = request.table, request.owner, request.seeded
    owned = ownership(table)
    if owned is not None and column.name == owned.column:
        values = list(seeded.owner_values(owned, owner))
        return _Choices(values, values)
    if column.foreign_keys:
        (key,) = column.foreign_keys
        rows = seeded.all(key.column.table)
        # The owner's own rows first (a reference to one of their projects), then the
        # rest (a member may be any user).
        own = [row.values[key.column.name] for row in rows if row.owner == owner]
        every = list(dict.fromkeys([*own, *(row.values[key.column.name] for row in rows)]))
        return _Choices(own or every, every)
    finite = _finite_values(column)
    if finite is None:
        return None
    if isinstance(_storage_type(column), sa.Boolean):
        return _Choices(finite, finite)
    return _Choices(finite[:1], finite)


def _filled_columns(table: sa.Table) -> list[sa.Column[Any]]:
    """The columns a generic row gives a value: those an INSERT must name, the
    ownership column, and every NOT NULL column of a key (whose default, such as
    ``now()``, could repeat within a transaction)."""
    owned = ownership(table)
    in_keys = {name for key in unique_keys(table) for name in key}
    return [
        column
        for column in table.columns
        if _is_required(table, column)
        or (owned is not None and column.name == owned.column)
        or (
            column.name in in_keys
            and not column.nullable
            and column.computed is None
            and column.identity is None
            and column is not table.autoincrement_column
        )
    ]


def generic_row(request: RowRequest) -> dict[str, object]:
    """A row of `request.table` for `request.owner`: the ownership column makes it
    theirs, and every other column that needs a value (NOT NULL, no default) gets one.
    A foreign key points at one of the owner's rows of the table it references (any
    row, when they have none). Every key and UNIQUE constraint of the table is kept: a
    key made of references, enums or booleans only (a link table's ``(project_id,
    user_id)``) takes a combination no seeded row holds, and a generated value in any
    key is one no other row holds. Fails with :class:`NoRowFactoryError` on a column it
    cannot fill (a reference to a table without rows, an unknown type)."""
    table, n = request.table, request.n
    filled = _filled_columns(table)
    names = {column.name for column in filled}
    keys = [key for key in unique_keys(table) if set(key) <= names]
    in_a_key = {name for key in keys for name in key}
    choices = {column.name: _choices(request, column) for column in filled}
    row: dict[str, object] = {}
    for column in filled:
        choice = choices[column.name]
        if choice is None:
            unique = column.name in in_a_key
            row[column.name] = _generated_value(table, column, request.owner, n, unique=unique)
        elif choice.preferred:
            row[column.name] = choice.preferred[n % len(choice.preferred)]
        else:
            references = [key.column.table.name for key in column.foreign_keys]
            raise NoRowFactoryError(
                f"table {table.name!r}: required column {column.name!r} has no value for a "
                f"row of {request.owner}'s"
                + (f" (no seeded row of {references[0]!r} to reference)" if references else "")
                + f"; add a factory for {table.name!r} to ROW_FACTORIES in "
                "tests/support/rls_helpers.py"
            )
    finite_keys = [key for key in keys if all(choices[c] is not None for c in key)]
    return _with_free_keys(request, row, finite_keys, choices)


#: How many combinations of a finite key's values are tried before giving up.
_COMBINATIONS_TRIED = 20_000


def _with_free_keys(
    request: RowRequest,
    row: dict[str, object],
    keys: list[tuple[str, ...]],
    choices: Mapping[str, _Choices | None],
) -> dict[str, object]:
    """`row`, its columns in `keys` (keys made of few-valued columns only) set to the
    `n`-th combination of their values that no seeded row of the table holds in any of
    those keys."""
    if not keys:
        return row
    columns = list(dict.fromkeys(name for key in keys for name in key))
    taken = [
        {tuple(existing.values[c] for c in key) for existing in request.seeded.all(request.table)}
        for key in keys
    ]
    every = [list(choice.every) if (choice := choices[c]) else [] for c in columns]
    free = []
    for combination in itertools.islice(itertools.product(*every), _COMBINATIONS_TRIED):
        values = dict(zip(columns, combination, strict=True))
        if all(
            tuple(values[c] for c in key) not in held for key, held in zip(keys, taken, strict=True)
        ):
            free.append(values)
    if not free:
        described = " and ".join(f"({', '.join(key)})" for key in keys)
        raise NoRowFactoryError(
            f"table {request.table.name!r}: every combination of values its key {described} "
            f"can take in a row for {request.owner} is taken; seed more rows of what it "
            "references (ROWS_PER_USER) or add a factory to ROW_FACTORIES in "
            "tests/support/rls_helpers.py"
        )
    return {**row, **free[request.n % len(free)]}


def new_row(table: sa.Table, owner: str, n: int, seeded: Seeded) -> dict[str, object]:
    """Values by column name for a new row of `table` for `owner` (see
    :class:`RowRequest`); for a table owned by users, a row that belongs to `owner`."""
    request = RowRequest(table, owner, n, seeded)
    factory = ROW_FACTORIES.get(table.name)
    shared = sharing_of(table)
    if factory is None and shared is not None and shared.members == table.name:
        factory = functools.partial(_new_membership, shared)
    row = generic_row(request) if factory is None else factory(request)
    unknown = set(row) - {column.name for column in table.columns}
    if unknown:
        raise NoRowFactoryError(f"ROW_FACTORIES[{table.name!r}] names no such column: {unknown}")
    owned = ownership(table)
    if owned is not None and seeded.owner_of(owned, row) != owner:
        raise NoRowFactoryError(
            f"ROW_FACTORIES[{table.name!r}] must make {owner}'s row: put a value in "
            f"{owned.column!r} that makes it theirs"
        )
    return row


def membership_row(
    request: RowRequest, sharing: Sharing, key: object, user: str, level: str
) -> dict[str, object]:
    """A row of the membership table making `user` a member of the shared row `key` at
    `level`, its other columns made as any row's."""
    return {
        **generic_row(request),
        sharing.shared_column: key,
        sharing.user_column: user,
        sharing.level_column: level,
    }


def _new_membership(sharing: Sharing, request: RowRequest) -> dict[str, object]:
    """A new membership in one of the owner's shared rows (the `n`-th, cycling; any
    shared row when they own none), for a user who is not yet a member of it nor owns
    it, at a declared level: a row whose writing only the policies decide."""
    shared = request.seeded.all(sharing.table)
    own = [row for row in shared if row.values[sharing.owner] == request.owner] or shared
    if not own:
        raise NoRowFactoryError(
            f"table {request.table.name!r}: no seeded row of {sharing.table!r} to be a member of"
        )
    (user_key,) = request.table.columns[sharing.user_column].foreign_keys
    users = [row.values[user_key.column.name] for row in request.seeded.all(user_key.column.table)]
    # The n-th row of the owner's, or the next that still has a user who is not in it.
    for shift in range(len(own)):
        target = own[(request.n + shift) % len(own)].values
        free = [
            str(user)
            for user in users
            if user != target[sharing.owner]
            and request.seeded.level(sharing, target[sharing.key], user) is None
        ]
        if free:
            break
    else:
        raise NoRowFactoryError(
            f"table {request.table.name!r}: every user is a member of every row of "
            f"{sharing.table!r} it may join already"
        )
    level = sharing.levels[request.n % len(sharing.levels)]
    user = free[request.n % len(free)]
    return membership_row(request, sharing, target[sharing.key], user, level)


def seeded_memberships(
    table: sa.Table, sharing: Sharing, users: Sequence[str], seeded: Seeded
) -> Iterator[dict[str, object]]:
    """Memberships of every shared row seeded, so that every kind of user exists: the
    other users of each row are each a member at one of the declared levels, or none,
    in turn (an owner's first row gives its first user the first level, the next row
    the second...), so that every level, and no membership at all, occurs several times,
    and every user is of several kinds to several rows."""
    states = [*sharing.levels, None]
    for i, shared in enumerate(seeded.all(sharing.table)):
        others = [user for user in users if user != shared.values[sharing.owner]]
        for j, user in enumerate(others):
            level = states[(i + j) % len(states)]
            if level is not None:
                request = RowRequest(table, user, i * len(users) + j, seeded)
                yield membership_row(request, sharing, shared.values[sharing.key], user, level)


def insert(table: sa.Table, row: Row) -> sa.Insert:
    """INSERT of `row`, without the RETURNING SQLAlchemy would add for a server-made key
    (RETURNING is subject to the SELECT policies too, and hides the row count)."""
    values = {table.columns[name]: value for name, value in row.items()}
    return sa.insert(table).values(values).inline()


def where_key(table: sa.Table, key: Mapping[str, object]) -> sa.ColumnElement[bool]:
    """The condition that picks the row whose primary key is `key`."""
    return sa.and_(*(table.columns[name] == value for name, value in key.items()))


def seeded_tables() -> list[sa.Table]:
    """Every table some declared role reaches, and every table their required foreign
    keys need rows of, in dependency order."""
    wanted = {name for role in ROLES for name in reachable_tables(role)} | {USER_TABLE}
    pending = list(wanted)
    while pending:
        table = metadata.tables[pending.pop()]
        for column in table.columns:
            if _is_required(table, column) or column.primary_key:
                for key in column.foreign_keys:
                    if key.column.table.name not in wanted:
                        wanted.add(key.column.table.name)
                        pending.append(key.column.table.name)
    return [table for table in metadata.sorted_tables if table.name in wanted]


def seed(
    connection: Connection, users: Sequence[str] = USERS, outsiders: Sequence[str] = (OUTSIDER,)
) -> Seeded:
    """As the connection's role (which bypasses RLS): `users` in the user table, then
    rows for each of them in every other table :func:`seeded_tables` lists, parents
    first; `outsiders` in the user table only; and a live and an expired session for
    everyone. A membership table gets memberships at every level instead
    (:func:`seeded_memberships`). Returns the rows."""
    seeded = Seeded()
    for table in seeded_tables():
        if table.name == SESSION_TABLE:
            continue
        owned = ownership(table)
        shared = sharing_of(table)
        if shared is not None and shared.members == table.name:
            for values in list(seeded_memberships(table, shared, users, seeded)):
                _store(connection, seeded, table, values, None)
            continue
        per_user = 1 if one_row_per_owner(table) else ROWS_PER_USER
        for user in users:
            for n in range(per_user):
                values = new_row(table, user, n, seeded)
                _store(connection, seeded, table, values, user if owned else None)
    for outsider in outsiders:
        values = new_row(metadata.tables[USER_TABLE], outsider, 0, seeded)
        _store(connection, seeded, metadata.tables[USER_TABLE], values, outsider)
    for session in _seed_sessions(connection, [*users, *outsiders]):
        _remember(seeded, metadata.tables[SESSION_TABLE], session, None)
    return seeded


def _store(
    connection: Connection, seeded: Seeded, table: sa.Table, values: Row, owner: str | None
) -> None:
    statement = insert(table, values).returning(*table.columns)
    try:
        with connection.begin_nested():
            stored = connection.execute(statement).one()._asdict()
    except DBAPIError as exc:
        reason = (str(exc.orig).strip().splitlines() or ["refused"])[0]
        raise NoRowFactoryError(
            f"table {table.name!r}: a generic row was refused ({reason}); add a factory for "
            f"{table.name!r} to ROW_FACTORIES in tests/support/rls_helpers.py"
        ) from None
    _remember(seeded, table, stored, owner)


def _remember(seeded: Seeded, table: sa.Table, stored: Row, owner: str | None) -> None:
    key = {column.name: stored[column.name] for column in table.primary_key.columns}
    row = SeededRow(owner, key, dict(stored))
    seeded.rows.setdefault(table.name, []).append(row)


def seed_sessions(connection: Connection, users: Sequence[str]) -> None:
    """A live and an expired Better Auth session for each of `users` (see
    :func:`live_token`, :func:`expired_token`)."""
    _seed_sessions(connection, users)


def _seed_sessions(connection: Connection, users: Sequence[str]) -> list[Row]:
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
    table = metadata.tables[SESSION_TABLE]
    stored = connection.execute(sa.insert(table).returning(*table.columns), sessions)
    return [row._asdict() for row in stored]


# --- acting as a role ---------------------------------------------------------------------


@functools.cache
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


def claim(connection: Connection, user_id: str | None) -> None:
    """Set the transaction's claimed user id (``app.user_id``) by hand, as any SQL may."""
    connection.execute(
        sa.text("SELECT set_config('app.user_id', :id, true)"), {"id": user_id or ""}
    )


def become(connection: Connection, actor: Actor, role: str) -> None:
    """Inside a transaction already acting as `role`: make it `actor`, binding the
    verified user's live session as the API does (a role that may not bind sessions,
    a trusted job's, only claims), then claiming by hand what the binding did not."""
    bound: str | None = None
    if actor.verified is not None and role in may_bind_sessions():
        bound = bind(connection, live_token(actor.verified))
        assert bound == actor.verified, f"{actor.verified!r}'s live session bound {bound!r}"
    if actor.claimed != bound:
        claim(connection, actor.claimed)


def set_role(connection: Connection, role: str) -> None:
    quoted = connection.dialect.identifier_preparer.quote(role)
    connection.exec_driver_sql(f"SET LOCAL ROLE {quoted}")


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
    transaction = connection.begin()
    try:
        set_role(connection, role)
        if user_id is not None and role in may_bind_sessions():
            bound = bind(connection, live_token(user_id) if user_id else "")
            assert bound == (user_id or None), f"{user_id!r}'s live session bound {bound!r}"
        elif user_id is not None:  # a trusted job's role: it says whom it acts for
            claim(connection, user_id)
        yield connection
    except BaseException:
        transaction.rollback()
        raise
    if commit:
        transaction.commit()
    else:
        transaction.rollback()


@contextmanager
def acting(connection: Connection, actor: Actor, *, role: str = APP_ROLE) -> Iterator[Connection]:
    """One transaction as `role` that is `actor` (:func:`become`), rolled back after."""
    with acting_as(connection, None, role=role):
        become(connection, actor, role)
        yield connection


def is_refused(error: DBAPIError) -> bool:
    """Whether PostgreSQL refused for lack of privilege or by a WITH CHECK policy."""
    return getattr(error.orig, "sqlstate", None) == INSUFFICIENT_PRIVILEGE


def attempt(connection: Connection, statement: sa.Executable) -> int | Refused:
    """Run a write in a savepoint, kept: the rows it affected, or :data:`REFUSED`.

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


def trial(connection: Connection, statement: sa.Executable) -> int | Refused:
    """Run a write in a savepoint and undo it: the rows it affected, or :data:`REFUSED`.
    Every trial of a test meets the rows as seeded."""
    savepoint = connection.begin_nested()
    try:
        result = connection.execute(statement, execution_options={"preserve_rowcount": True})
    except DBAPIError as error:
        savepoint.rollback()
        if is_refused(error):
            return REFUSED
        raise
    count = int(result.rowcount)
    savepoint.rollback()
    return count


def read(connection: Connection, statement: sa.Executable) -> list[tuple[Any, ...]] | Refused:
    """Run a query in a savepoint: its rows, or :data:`REFUSED`."""
    try:
        with connection.begin_nested():
            return [tuple(row) for row in connection.execute(statement)]
    except DBAPIError as error:
        if is_refused(error):
            return REFUSED
        raise


#: What one statement did to one row: changed it (1), not (0), or was refused.
Outcome = int | Refused


@contextmanager
def as_the_owner(connection: Connection, role: str) -> Iterator[None]:
    """Inside :func:`acting_as`'s transaction, the test's own role (the database's
    owner, which bypasses row security) for a while, then `role` again; the binding,
    transaction-local, stays."""
    connection.exec_driver_sql("RESET ROLE")
    try:
        yield
    finally:
        set_role(connection, role)


def absent_value(column: sa.Column[Any], held: Sequence[object]) -> object | None:
    """A value of `column`'s type that no row holds, or None when its few values are
    all held (an enum or a boolean whose every value some row holds)."""
    type_ = column.type
    if isinstance(type_, sa.types.TypeDecorator):
        type_ = type_.impl_instance
    candidates: list[object]
    if isinstance(type_, sa.Enum):
        candidates = list(type_.enums)
    elif isinstance(type_, sa.Boolean):
        candidates = [False, True]
    else:
        sample = next((value for value in held if value is not None), None)
        if isinstance(sample, str):
            candidates = [f"{sample} (nobody's)", f"nobody's {uuid.uuid4()}"]
        elif isinstance(sample, bool):
            candidates = [not sample]
        elif isinstance(sample, int | float | decimal.Decimal):
            number: Any = sample
            candidates = [-abs(number) - 1_000, -abs(number) - 2_000]
        elif isinstance(sample, uuid.UUID):
            candidates = [uuid.uuid4()]
        elif isinstance(sample, datetime | date):
            candidates = [sample + timedelta(days=36_500)]
        else:
            return None
    texts = {repr(value) for value in held}
    return next((value for value in candidates if repr(value) not in texts), None)
