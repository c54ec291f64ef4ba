"""The verified identity, as the ``rls`` benchmark exercises it.

Better Auth's sessions to bind (ten per user, each with a random token, one in five
expired), a transaction bound as the todo API binds it (``SET LOCAL ROLE todo_app;
SELECT public.bind_session(<token>)``), what the identity costs one statement, and the
InitPlans of a plan under the policies. Every name comes from ``models.security``: the
functions, the role and the very expressions the policies use.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from models.security import APP_ROLE, BIND_SESSION, CLAIMED_USER_ID, IDENTITY, VERIFIED_USER_ID
from tests.benchmarks.common import BenchError, ratio, timed

Connection = psycopg.Connection[tuple[Any, ...]]

SESSIONS_PER_USER = 10
#: One session in five has expired (two of each user's ten): the lookup must tell them
#: from live ones by their expiry, as the unique token alone does not.
EXPIRED_EVERY = 5
#: ``schema.name`` of the function the API calls first in each transaction.
BIND = f"{BIND_SESSION.schema}.{BIND_SESSION.name}"
#: The verified user id, as every policy reads it (an InitPlan: once per statement).
VERIFIED = IDENTITY.user_id
#: The user id the transaction claims, as every policy reads it too.
CLAIMED = IDENTITY.claimed_user_id or CLAIMED_USER_ID
#: Runs of one statement in each PL/pgSQL loop timing the identity.
IDENTITY_RUNS = 2_000


def session_statement(users: int) -> str:
    """Fill ``session``: `users` x :data:`SESSIONS_PER_USER` sessions of users
    ``user-1``..., unique random tokens (as long as Better Auth's), some expired."""
    # Session n is the (n / users)-th of user n % users + 1, so every user gets the same
    # share of expired ones whatever the number of users.
    return f"""INSERT INTO session (id, token, "userId", "expiresAt", "createdAt", "updatedAt")
        SELECT 'session-' || n, replace(gen_random_uuid()::text, '-', ''),
               'user-' || (n % {users} + 1),
               now() + CASE WHEN n / {users} % {EXPIRED_EVERY} = 0 THEN -1 ELSE 1 END
                       * make_interval(days => n % 30 + 1),
               now(), now()
        FROM generate_series(0, {users * SESSIONS_PER_USER - 1}) AS n"""


def live_tokens(connection: Connection) -> dict[str, str]:
    """One live session's token per user (read as the admin, whom RLS does not bind)."""
    rows = connection.execute(
        """SELECT DISTINCT ON ("userId") "userId", token FROM session
           WHERE "expiresAt" > now() ORDER BY "userId", token"""
    ).fetchall()
    return {str(user): str(token) for user, token in rows}


def expired_token(connection: Connection) -> str:
    row = connection.execute(
        'SELECT token FROM session WHERE "expiresAt" <= now() LIMIT 1'
    ).fetchone()
    if row is None:
        raise BenchError("no expired session was seeded")
    return str(row[0])


def bind(connection: Connection, token: str) -> str | None:
    """``SELECT public.bind_session(<token>)``: the user bound, or None (nobody)."""
    row = connection.execute(sql.SQL("SELECT {}(%s)").format(sql.SQL(BIND)), [token]).fetchone()
    return None if row is None or row[0] is None else str(row[0])


@contextmanager
def bound(connection: Connection, token: str, *, role: str | None = APP_ROLE) -> Iterator[None]:
    """A transaction bound to `token`'s session as the API binds it: `role` (by default
    the API's; None: stay the admin, whom RLS does not apply to), then
    ``bind_session``. Rolled back at the end."""
    with connection.transaction(force_rollback=True):
        if role is not None:
            connection.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        if bind(connection, token) is None:
            raise BenchError(f"{BIND}() bound nothing for a live session's token")
        yield


def seconds_per_run(connection: Connection, statement: str, runs: int) -> float:
    """Seconds per run of the PL/pgSQL `statement`, run once to warm up and then `runs`
    times in a row inside the server, its plans cached as a prepared statement's would
    be. `statement` may assign to ``v`` (text) and loop over ``r`` (record)."""
    block = f"""DO $$
DECLARE
    started timestamptz;
    r record;
    v text;
BEGIN
    {statement}
    started := clock_timestamp();
    FOR i IN 1..{runs} LOOP
        {statement}
    END LOOP;
    RAISE NOTICE '%', extract(epoch FROM clock_timestamp() - started) / {runs};
END
$$"""
    said: list[float] = []

    def hear(diagnostic: psycopg.errors.Diagnostic) -> None:
        said.append(float(diagnostic.message_primary or "nan"))

    connection.add_notice_handler(hear)
    try:
        connection.execute(block)
    finally:
        connection.remove_notice_handler(hear)
    if not said:
        raise BenchError("the PL/pgSQL loop reported nothing")
    return said[-1]


def _literal(connection: Connection, value: str) -> str:
    return sql.Literal(value).as_string(connection)


@dataclass
class IdentityCost:
    """Paired samples of one statement per run, for one user each: the identity the
    policies read, the claimed id alone, a constant in the same shape, and
    ``bind_session``; then the client round trip of ``bind_session`` and of a bare
    ``SELECT`` of the token."""

    verified: list[float] = field(default_factory=list)
    claimed: list[float] = field(default_factory=list)
    constant: list[float] = field(default_factory=list)
    bind: list[float] = field(default_factory=list)
    bind_round_trip: list[float] = field(default_factory=list)
    select_round_trip: list[float] = field(default_factory=list)

    def sample(self, connection: Connection, user: str, token: str, rng: random.Random) -> None:
        """One sample of each, in random order, each in a transaction bound to `token`
        as the API's role."""
        user_literal, token_literal = _literal(connection, user), _literal(connection, token)
        statements = [
            (self.verified, f"SELECT {VERIFIED} INTO v;"),
            (self.claimed, f"SELECT {CLAIMED} INTO v;"),
            (self.constant, f"SELECT (SELECT {user_literal}::text) INTO v;"),
            (self.bind, f"SELECT (SELECT {BIND}({token_literal})) INTO v;"),
        ]
        rng.shuffle(statements)
        for figures, statement in statements:
            with bound(connection, token):
                figures.append(seconds_per_run(connection, statement, IDENTITY_RUNS))
        with bound(connection, token):
            bind_sql = sql.SQL("SELECT {}(%s)").format(sql.SQL(BIND))
            self.bind_round_trip.append(
                timed(lambda: connection.execute(bind_sql, [token]).fetchone())
            )
            self.select_round_trip.append(
                timed(lambda: connection.execute("SELECT %s::text", [token]).fetchone())
            )

    def per_statement(self, figures: Sequence[float]) -> float:
        """Median of what `figures` cost above the constant, paired by sample."""
        return statistics.median(a - b for a, b in zip(figures, self.constant, strict=True))

    def bind_ratio(self) -> float:
        return ratio(
            statistics.median(self.bind_round_trip), statistics.median(self.select_round_trip)
        )


# --- the plan under the policies ------------------------------------------------------


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def initplan_references(node: dict[str, Any]) -> list[str]:
    """How other nodes name an InitPlan's result: ``(InitPlan 1)`` from PostgreSQL 17
    on (``(InitPlan 1).col1``), ``$0`` before (its name says ``returns $0``)."""
    name = str(node.get("Subplan Name", ""))
    older = re.findall(r"\$\d+", name)
    return older or [f"({name})"]


@dataclass(frozen=True)
class IdentityShape:
    """What the identity must be in a plan (``EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON)``):
    the verified id an InitPlan run once, compared with the claimed id in a One-Time
    Filter above the scan of `relation`, so a transaction bound to nobody scans
    nothing."""

    verified_initplan: bool
    evaluated_once: bool
    one_time_filter: bool

    @classmethod
    def of(cls, plan: dict[str, Any], relation: str) -> IdentityShape:
        every = list(nodes(plan))
        verified = [
            node
            for node in every
            if node.get("Parent Relationship") == "InitPlan"
            and any(f"{VERIFIED_USER_ID.name}(" in str(out) for out in node.get("Output", []))
        ]
        references = [ref for node in verified for ref in initplan_references(node)]
        guarding = [
            node
            for node in every
            if any(ref in str(node.get("One-Time Filter", "")) for ref in references)
            and any(child.get("Relation Name") == relation for child in nodes(node))
        ]
        return cls(
            verified_initplan=len(verified) == 1,
            evaluated_once=bool(verified) and all(n.get("Actual Loops") == 1 for n in verified),
            one_time_filter=bool(guarding),
        )
