"""Who may see and change which row, as the declarations say: the oracle the isolation
tests hold PostgreSQL to, derived per role and table.

An :class:`Access` is what one role may do to one table: the privileges its grants
give, and one :class:`Rule` per policy that applies to the role. A rule says which
rows its USING admits and which written rows its WITH CHECK accepts, for an
:class:`~tests.support.rls_helpers.Actor` (the user a transaction verified, the one it
claims). Statements are judged as PostgreSQL applies policies: permissive ones OR'ed,
restrictive ones AND'ed, no permissive one for the command: no row; the SELECT
policies also on the rows an UPDATE or DELETE reads, and on the rows an UPDATE that
reads writes; a missing privilege refuses the statement.

What a policy means is :func:`rule_for`'s to say, the one place a new kind of
declaration plugs in:

* :class:`Owned`, a policy that ``owned_by``, ``owned_through`` or
  ``readable_own_row`` derives: a row is admitted when it belongs to the user the
  policy's identity recognises, by the seeded rows' ownership (computed in Python,
  independently of the SQL the policy is written in);
* :class:`Shared`, a policy that ``shared_with``, ``member_of`` or ``owned_through`` a
  shared row derives: a row is admitted by who the user is to the shared row it is for
  (its owner, a member at a level the declaration lists for reading, writing or
  managing members, or nobody to it), read from the seeded rows of the shared table
  and of its membership table;
* :class:`EveryRow`, a policy of ``true`` (``full_access``);
* :class:`Evaluated`, any other policy: its declared SQL, evaluated by PostgreSQL as
  the role, for the actor, on a temporary twin of the table that holds the rows in
  question (the policy's subqueries read the real tables, under row security, as
  they do in any query). That proves the database does what the declarations say,
  not that they say what was meant: the properties of ``tests/isolation/test_isolation.py``
  (no identity reaches no owned row, a forged claim grants nothing, a signed-in user
  gains nothing by claiming another id, EXPLAIN ANALYZE counts nothing hidden) and
  the catalog lint hold any policy to that.

A declaration of a new kind gets a rule of its own here, whose predicate reads the
seeded rows as :class:`Owned` and :class:`Shared` do; until it does, its policies are
:class:`Evaluated`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from models import metadata
from models.security import (
    IDENTITY,
    ROLES,
    UNVERIFIED_CLAIM,
    VERIFIED_SESSION,
    Identity,
    Policy,
    RowSecurity,
    owner_is_current_user,
)
from tests.support.rls_helpers import (
    COMMANDS,
    REFUSED,
    Actor,
    Ownership,
    Refused,
    Row,
    Seeded,
    ShareAccess,
    Sharing,
    acts_as,
    become,
    level_name,
    ownership,
    reachable_tables,
    set_role,
    sharing_of,
)
from todo_database.declarations.row_security import declared, row_security

#: The identities a policy written by the one-liners may use.
KNOWN_IDENTITIES: tuple[Identity, ...] = tuple(
    dict.fromkeys((IDENTITY, VERIFIED_SESSION, UNVERIFIED_CLAIM))
)


def recognised(identity: Identity, actor: Actor) -> str | None:
    """The user `identity` takes `actor` for, or None: both ids must agree where it
    compares the verified and the claimed one; a verified identity alone takes the
    verified user, a claim alone the claimed one."""
    if identity.claimed_user_id is not None:
        return actor.verified if actor.verified == actor.claimed else None
    return actor.verified if identity.verified else actor.claimed


class Rule(Protocol):
    """What one policy does, as far as the oracle knows."""

    @property
    def policy(self) -> Policy:
        """The policy, as declared (resolved)."""
        ...

    def admits(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        """Whether the policy's USING lets `actor` reach each of `rows`."""
        ...

    def accepts(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        """Whether the policy's WITH CHECK (else its USING) lets `actor` write each of
        `rows`."""
        ...


@dataclass(frozen=True)
class World:
    """What the rules read: the seeded rows (who owns what) and PostgreSQL, to
    evaluate what only it can."""

    seeded: Seeded
    evaluator: Evaluator


@dataclass(frozen=True)
class Owned:
    """A policy that matches rows to their owner: a row is admitted, and may be written,
    when it belongs (by its ownership, through the seeded parent rows) to the user the
    policy's identity recognises."""

    policy: Policy
    ownership: Ownership
    identity: Identity

    def admits(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        user = recognised(self.identity, actor)
        owner_of = world.seeded.owner_of
        return [user is not None and owner_of(self.ownership, row) == user for row in rows]

    def accepts(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        return self.admits(world, actor, rows)

    def gates(self) -> bool:
        """Whether, for a transaction its identity does not recognise, PostgreSQL skips
        the scan altogether (a One-Time Filter): the identity compares two ids that
        disagree, or a table owned through a parent row checks the identity first."""
        return self.identity.claimed_user_id is not None or self.ownership.parent is not None


def session_user(identity: Identity, actor: Actor) -> str | None:
    """The user `identity`'s own id takes `actor` for, whatever else the transaction
    claims: who the sharing functions find rows for (the verified user alone, for a
    verified identity)."""
    return actor.verified if identity.verified else actor.claimed


@dataclass(frozen=True)
class SharedCondition:
    """One side (USING or WITH CHECK) of a policy of shared rows: the user must have
    `access` to the shared row a row is for (``"own"``: be its owner, by both ids, as
    ``owned_by`` compares them).

    `proven`: the user is the one the identity recognises, both ids agreeing, as a scan
    gated on the identity requires, or a parent row read under its own row security;
    otherwise the user the identity's own id names (:func:`session_user`), as the
    sharing functions find them. For a membership written: `not_self`, the member is
    not the user; `declared_level`, the level is one the declaration lists; `or_self`,
    or the membership is the user's own (a member may leave)."""

    access: ShareAccess | Literal["own"]
    proven: bool = True
    not_self: bool = False
    declared_level: bool = False
    or_self: bool = False

    def holds(self, world: World, sharing: Sharing, table: str, actor: Actor, row: Row) -> bool:
        seeded = world.seeded
        user = (
            recognised(sharing.identity, actor)
            if self.proven
            else session_user(sharing.identity, actor)
        )
        if user is None:
            return False
        if self.access == "own":
            return row.get(sharing.owner) == user
        member = row.get(sharing.user_column) if table == sharing.members else None
        if self.not_self and member == user:
            return False
        if self.declared_level and level_name(row.get(sharing.level_column)) not in sharing.levels:
            return False
        key = seeded.shared_key(sharing, table, row)
        return seeded.may(sharing, user, key, self.access) or (self.or_self and member == user)


#: What each policy the sharing declarations derive requires, by the table's part in the
#: sharing and the policy's command: (USING, WITH CHECK).
SHARED_CONDITIONS: dict[tuple[str, str], tuple[SharedCondition | None, SharedCondition | None]] = {
    # The shared table: read by its owner and members, changed by its owner and writers,
    # deleted by its owner, created by anyone for themselves.
    ("shared", "SELECT"): (SharedCondition("read"), None),
    ("shared", "INSERT"): (None, SharedCondition("own")),
    ("shared", "UPDATE"): (SharedCondition("write"), SharedCondition("write", proven=False)),
    ("shared", "DELETE"): (SharedCondition("own"), None),
    # Its members: seen by whoever reads the row; added, changed and removed by its owner
    # and managers, never their own membership, only at a declared level; left by any.
    ("members", "SELECT"): (SharedCondition("read"), None),
    ("members", "INSERT"): (
        None,
        SharedCondition("manage", proven=False, not_self=True, declared_level=True),
    ),
    ("members", "UPDATE"): (
        SharedCondition("manage"),
        SharedCondition("manage", proven=False, not_self=True, declared_level=True),
    ),
    ("members", "DELETE"): (SharedCondition("manage", or_self=True), None),
    # Rows owned through the shared row: read where it is read, written where written.
    ("through", "SELECT"): (SharedCondition("read"), None),
    ("through", "INSERT"): (None, SharedCondition("write", proven=False)),
    ("through", "UPDATE"): (SharedCondition("write"), SharedCondition("write", proven=False)),
    ("through", "DELETE"): (SharedCondition("write"), None),
}


@dataclass(frozen=True)
class Shared:
    """A policy of rows shared with members: what its USING admits and its WITH CHECK
    accepts is who the user is to the shared row each row is for, by the seeded
    memberships (:class:`SharedCondition`)."""

    policy: Policy
    sharing: Sharing
    table: str
    using: SharedCondition | None
    check: SharedCondition | None

    def admits(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        return self._judge(self.using or self.check, world, actor, rows)

    def accepts(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        return self._judge(self.check or self.using, world, actor, rows)

    def _judge(
        self, condition: SharedCondition | None, world: World, actor: Actor, rows: Sequence[Row]
    ) -> list[bool]:
        assert condition is not None
        return [condition.holds(world, self.sharing, self.table, actor, row) for row in rows]


def _shared_rule(table: sa.Table, policy: Policy, security: RowSecurity) -> Shared | None:
    """The rule of `policy` when the sharing declarations derived it, else None."""
    sharing = sharing_of(table)
    written = declared(table)
    if sharing is None or written is None or policy in written.policies:
        return None
    if sharing.role not in policy.roles or policy.command == "ALL":
        return None
    if security.sharing is not None:
        part = "shared"
    elif security.membership is not None:
        part = "members"
    else:
        part = "through"
    using, check = SHARED_CONDITIONS[(part, policy.command)]
    owned = ownership(table)
    deep = owned is not None and owned.parent is not None and owned.parent.parent is not None
    if part == "through" and deep and check is not None:
        # Two levels down or more, a written row is vetted through its parent, which
        # the check reads under the parent's own row security: gated on the identity.
        check = replace(check, proven=True)
    return Shared(policy, sharing, table.name, using, check)


@dataclass(frozen=True)
class EveryRow:
    """A policy of ``true``: every row, for anyone."""

    policy: Policy

    def admits(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        return [True] * len(rows)

    def accepts(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        return [True] * len(rows)


@dataclass(frozen=True)
class Evaluated:
    """A policy of any other kind: its declared USING and WITH CHECK evaluated by
    PostgreSQL (see :class:`Evaluator`)."""

    policy: Policy
    role: str
    table: sa.Table

    @property
    def using(self) -> str:
        return self.policy.using or "true"

    @property
    def check(self) -> str:
        return self.policy.with_check or self.policy.using or "true"

    def admits(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        return world.evaluator.evaluate(self.role, self.table, actor, self.using, rows)

    def accepts(self, world: World, actor: Actor, rows: Sequence[Row]) -> list[bool]:
        return world.evaluator.evaluate(self.role, self.table, actor, self.check, rows)


def _fingerprint(row: Row) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, repr(value)) for name, value in row.items()))


@dataclass
class Evaluator:
    """Evaluates declared policy expressions on given rows, as PostgreSQL would for a
    query of the role: in a transaction as `role`, that is the actor, reading a
    temporary twin of the table (its columns and defaults, no policy) that holds the
    rows, under the table's own name, which a temporary table takes first. The
    expressions' subqueries read the real tables, under their row security. Results are
    kept: each distinct row is evaluated once per role, actor and expression.

    Each evaluation takes a connection of its own (`engine` pools none): a session
    keeps its temporary schema once it made one, and a session that has one is no
    longer one the API's binding accepts."""

    engine: Engine
    #: Every expression evaluated together for a role and table, by (role, table).
    expressions: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _known: dict[tuple[str, str, Actor, str, tuple[tuple[str, str], ...]], bool] = field(
        default_factory=dict
    )

    def register(self, role: str, table: sa.Table, expressions: Iterable[str]) -> None:
        found = self.expressions.setdefault((role, table.name), [])
        found.extend(e for e in expressions if e not in found)

    def evaluate(
        self, role: str, table: sa.Table, actor: Actor, expression: str, rows: Sequence[Row]
    ) -> list[bool]:
        expressions = self.expressions.setdefault((role, table.name), [])
        if expression not in expressions:
            expressions.append(expression)
        keys = [(role, table.name, actor, expression, _fingerprint(row)) for row in rows]
        missing = list(
            {k[-1]: row for k, row in zip(keys, rows, strict=True) if k not in self._known}.values()
        )
        if missing:
            self._evaluate(role, table, actor, expressions, missing)
        return [self._known[key] for key in keys]

    def _evaluate(
        self,
        role: str,
        table: sa.Table,
        actor: Actor,
        expressions: Sequence[str],
        rows: Sequence[Row],
    ) -> None:
        with self.engine.connect() as connection, connection.begin():
            # The actor first: bind_session refuses a connection that holds temporary
            # objects (an earlier client's, to the API), and the twin is one.
            set_role(connection, role)
            become(connection, actor, role)
            connection.exec_driver_sql("RESET ROLE")
            twin = _twin(connection, table, rows)
            grantee = connection.dialect.identifier_preparer.quote(role)
            connection.exec_driver_sql(f"GRANT SELECT ON {twin} TO {grantee}")
            set_role(connection, role)
            columns = ", ".join(f"({expression})" for expression in expressions)
            name = connection.dialect.identifier_preparer.quote(table.name)
            found = connection.exec_driver_sql(
                f'SELECT "oracle row", {columns} FROM {name} ORDER BY 1'
            ).all()
            connection.rollback()
        for number, *results in found:
            row = rows[number]
            for expression, result in zip(expressions, results, strict=True):
                key = (role, table.name, actor, expression, _fingerprint(row))
                self._known[key] = bool(result)


def _twin(connection: Connection, table: sa.Table, rows: Sequence[Row]) -> str:
    """A temporary table named as `table`, with its columns and defaults and a column
    numbering `rows`, which it holds; dropped at the end of the transaction."""
    name = connection.dialect.identifier_preparer.quote(table.name)
    connection.exec_driver_sql(
        f"CREATE TEMP TABLE {name} (LIKE public.{name} INCLUDING DEFAULTS) ON COMMIT DROP"
    )
    connection.exec_driver_sql(f'ALTER TABLE pg_temp.{name} ADD COLUMN "oracle row" integer')
    twin = sa.Table(
        table.name,
        sa.MetaData(),
        *(sa.Column(column.name, column.type) for column in table.columns),
        sa.Column("oracle row", sa.Integer),
        schema="pg_temp",
    )
    for number, row in enumerate(rows):
        connection.execute(sa.insert(twin).values({**row, "oracle row": number}))
    return f"pg_temp.{name}"


def _owner_policy_identity(policy: Policy, column: str) -> Identity | None:
    """The identity `policy` compares `column` with, when it is exactly what
    ``owned_by`` or ``readable_own_row`` writes for it."""
    for identity in KNOWN_IDENTITIES:
        mine = owner_is_current_user(column, identity)
        expressions = [e for e in (policy.using, policy.with_check) if e is not None]
        if expressions and all(e == mine for e in expressions):
            return identity
    return None


def rule_for(table: sa.Table, role: str, policy: Policy) -> Rule:
    """What `policy` of `table` does for `role`: the one place that knows the kinds of
    declaration."""
    security, written = row_security(table), declared(table)
    assert security is not None
    assert written is not None
    expressions = [e for e in (policy.using, policy.with_check) if e is not None]
    if all(e.strip().lower() == "true" for e in expressions):
        return EveryRow(policy)
    shared = _shared_rule(table, policy, security)
    if shared is not None:
        return shared
    owned = ownership(table)
    if owned is not None and security.through is not None and policy not in written.policies:
        return Owned(policy, owned, security.through.identity)
    if owned is not None and owned.parent is None:
        identity = _owner_policy_identity(policy, owned.column)
        if identity is not None:
            return Owned(policy, owned, identity)
    return Evaluated(policy, role, table)


def applies(policy: Policy, command: str) -> bool:
    return policy.command in ("ALL", command)


@dataclass(frozen=True)
class Access:
    """What `role` may do to the rows of `table`, as declared; judged against a
    :class:`World` once :meth:`at` one."""

    role: str
    table: sa.Table
    security: RowSecurity
    rules: tuple[Rule, ...]
    world: World | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        return self.table.name

    def __str__(self) -> str:
        return self.name

    def at(self, world: World) -> Access:
        """This access, its rules reading `world`."""
        evaluated = [rule for rule in self.rules if isinstance(rule, Evaluated)]
        world.evaluator.register(
            self.role,
            self.table,
            itertools.chain.from_iterable((r.using, r.check) for r in evaluated),
        )
        return replace(self, world=world)

    @property
    def row_security(self) -> bool:
        return self.security.enabled

    @property
    def ownership(self) -> Ownership | None:
        """The table's ownership, when a policy for the role matches rows to owners."""
        owned = [rule for rule in self.rules if isinstance(rule, Owned)]
        return owned[0].ownership if owned else None

    @property
    def key(self) -> list[str]:
        return [column.name for column in self.table.primary_key.columns]

    # --- privileges -------------------------------------------------------------------

    def _granted(self, privilege: str) -> frozenset[str] | None:
        """The columns `privilege` is granted on (all of them for a table grant), or
        None when it is not granted at all."""
        roles = acts_as(self.role)
        columns: set[str] = set()
        granted = False
        for grant in self.security.grants:
            if grant.role in roles and privilege in grant.privileges:
                granted = True
                columns |= set(
                    self.table.columns.keys() if grant.columns is None else grant.columns
                )
        return frozenset(columns) if granted else None

    def may(self, privilege: str, columns: Iterable[str] = ()) -> bool:
        """Whether the role holds `privilege` on the table, on each of `columns`."""
        granted = self._granted(privilege)
        return granted is not None and set(columns) <= granted

    def readable_columns(self) -> list[sa.Column[Any]]:
        """The columns the role may read: all of them, or those its grants name."""
        granted = self._granted("SELECT") or frozenset()
        return [column for column in self.table.columns if column.name in granted]

    def updatable_columns(self) -> list[str]:
        """The columns the role may set (a generated column may be set by nobody)."""
        granted = self._granted("UPDATE") or frozenset()
        return [
            column.name
            for column in self.table.columns
            if column.name in granted and column.computed is None and column.identity is None
        ]

    @property
    def commands(self) -> frozenset[str]:
        """The row commands the role may run and find rows with: granted, and (under
        row security) named by a permissive policy."""
        return frozenset(
            command
            for command in COMMANDS
            if self._granted(command) is not None
            and (not self.row_security or self.permissive(command))
        )

    # --- policies ---------------------------------------------------------------------

    def permissive(self, command: str) -> list[Rule]:
        return [r for r in self.rules if applies(r.policy, command) and r.policy.permissive]

    def restrictive(self, command: str) -> list[Rule]:
        return [r for r in self.rules if applies(r.policy, command) and not r.policy.permissive]

    def only_acknowledged(self) -> Access:
        """This access with only its permissive policies that say ``claim_acknowledged``
        (the claim a trusted job's role may rest on), and all its restrictive ones."""
        rules = tuple(
            rule
            for rule in self.rules
            if not rule.policy.permissive or (rule.policy.claim_acknowledged or "").strip()
        )
        return replace(self, rules=rules)

    def _combined(
        self, command: str, actor: Actor, rows: Sequence[Row], *, check: bool
    ) -> list[bool]:
        if not self.row_security or not rows:
            return [True] * len(rows)
        world = self.world
        assert world is not None, "an access judges rows once it is at a world"
        permissive = self.permissive(command)
        if not permissive:
            return [False] * len(rows)

        def verdicts(rule: Rule) -> list[bool]:
            found = rule.accepts if check else rule.admits
            return found(world, actor, rows)

        admitted = [any(found) for found in zip(*map(verdicts, permissive), strict=True)]
        for rule in self.restrictive(command):
            admitted = [a and b for a, b in zip(admitted, verdicts(rule), strict=True)]
        return admitted

    def visible(self, actor: Actor, rows: Sequence[Row], command: str = "SELECT") -> list[bool]:
        """Whether `command`'s policies (USING) let `actor` reach each row."""
        return self._combined(command, actor, rows, check=False)

    def writable(self, actor: Actor, rows: Sequence[Row], command: str) -> list[bool]:
        """Whether `command`'s policies (WITH CHECK) let `actor` write each row."""
        return self._combined(command, actor, rows, check=True)

    # --- statements, as PostgreSQL judges them ---------------------------------------------

    def select(
        self, actor: Actor, rows: Sequence[Row], columns: Iterable[str]
    ) -> list[int] | Refused:
        """The indexes of the `rows` a SELECT of `columns` returns, or :data:`REFUSED`."""
        if not self.may("SELECT", columns):
            return REFUSED
        return [i for i, seen in enumerate(self.visible(actor, rows)) if seen]

    def update(
        self,
        actor: Actor,
        rows: Sequence[Row],
        changed: Sequence[Row],
        *,
        reads: Iterable[str],
        writes: Iterable[str],
    ) -> int | Refused:
        """An UPDATE that picks `rows` (those its WHERE matches; every row when it has
        none) and would make each into the corresponding row of `changed`, reading
        `reads` and setting `writes`: the rows it changes, or :data:`REFUSED`."""
        reads = set(reads)
        if not self.may("UPDATE", writes) or (reads and not self.may("SELECT", reads)):
            return REFUSED
        reached = self.visible(actor, rows, "UPDATE")
        if reads:
            reached = [a and b for a, b in zip(reached, self.visible(actor, rows), strict=True)]
        new = [row for row, hit in zip(changed, reached, strict=True) if hit]
        if not all(self.writable(actor, new, "UPDATE")):
            return REFUSED
        if reads and not all(self.visible(actor, new)):
            return REFUSED
        return len(new)

    def delete(self, actor: Actor, rows: Sequence[Row], *, reads: Iterable[str]) -> int | Refused:
        """A DELETE that picks `rows`, reading `reads`: the rows it deletes, or
        :data:`REFUSED`."""
        reads = set(reads)
        if not self.may("DELETE") or (reads and not self.may("SELECT", reads)):
            return REFUSED
        reached = self.visible(actor, rows, "DELETE")
        if reads:
            reached = [a and b for a, b in zip(reached, self.visible(actor, rows), strict=True)]
        return sum(reached)

    def insert(self, actor: Actor, row: Row) -> int | Refused:
        """An INSERT of `row` (no RETURNING): 1, or :data:`REFUSED`."""
        if not self.may("INSERT", row):
            return REFUSED
        return 1 if all(self.writable(actor, [row], "INSERT")) else REFUSED


def access(role: str, table: sa.Table) -> Access:
    """What the declarations let `role` do to `table`'s rows."""
    security = row_security(table)
    assert security is not None, f"{table.name!r} declares no row security"
    roles = acts_as(role)
    policies = [policy for policy in security.policies if roles & set(policy.roles)]
    return Access(role, table, security, tuple(rule_for(table, role, p) for p in policies))


def every_access() -> tuple[Access, ...]:
    """What each declared role may do to each table it reaches (a privilege or a policy
    names it), in dependency order."""
    return tuple(
        access(role, table)
        for role in ROLES
        for table in metadata.sorted_tables
        if table.name in reachable_tables(role)
    )


def touched(access: Access) -> str:
    """The column an UPDATE that changes nothing sets to itself: the ownership column,
    else any column the role may update, else the first (the UPDATE is refused)."""
    updatable = access.updatable_columns()
    owned = access.ownership
    if owned is not None and (owned.column in updatable or not updatable):
        return owned.column
    return updatable[0] if updatable else access.table.columns[0].name
