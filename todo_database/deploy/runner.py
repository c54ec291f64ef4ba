"""The safe-deploy guarantees of every schema-changing run (upgrade, downgrade, stamp).

* One deployer at a time: a lock on a table in a schema only the migration role can
  see (:data:`LOCK_TABLE`), held by a transaction of a dedicated connection, waited for
  within a bound while saying who holds it. No other role can take it: any role may
  take any advisory lock, and an injection in the API holding the old key stopped
  every deploy.
* Bounded locks: ``lock_timeout`` and ``statement_timeout`` on the migration session;
  a revision that cannot get its lock is retried with backoff, then fails naming the
  backend that blocked it.
* Atomic steps: each revision in its own transaction; a failure names the revision and
  the statement and leaves the database at the last good revision.
* Preflight: several heads, a database at a revision this repository does not know,
  a downgrade past the floor, all stop before anything is touched.
* Clean failures: a lost connection, a server restart, SIGINT or SIGTERM end a run in
  one line naming the revision, the statement and where the database stands.
* Locks that die with their holder: both deploy sessions keep TCP keepalives on both
  ends, so the server ends a vanished deployer's sessions, and its lock, within about
  a minute; they name themselves, so a waiting deployer can say who holds the lock.

Settings come from ``alembic.ini`` (``[alembic]`` section) and may be overridden per
run with ``-x name=value``.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, ModuleType
from typing import NoReturn

import psycopg
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import event, pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from todo_database.catalog.schemas import relation_exists, schema_owner
from todo_database.catalog.session import may_i_set
from todo_database.deploy.database import DatabaseError, create_engine, parse_url, redact
from todo_database.online.forms import READ_MARK, committed_mark

log = logging.getLogger("migrations")

#: Where deployers take turns: a table in a schema of the migration role's own, which
#: no other role may so much as look up, so no other role can lock it. Made by the first
#: deploy of a database; autogenerate compares the default schema alone, so it never
#: shows in a revision.
LOCK_SCHEMA = "todo_migrations"
LOCK_TABLE = f"{LOCK_SCHEMA}.deploy_lock"
#: Conflicts with itself, and with nothing else a deploy takes on that table.
LOCK_MODE = "SHARE UPDATE EXCLUSIVE"
_MAKE_LOCK_TABLE = f"""DO $lock$
BEGIN
    CREATE SCHEMA IF NOT EXISTS {LOCK_SCHEMA};
    COMMENT ON SCHEMA {LOCK_SCHEMA} IS
        'The deploy lock of todo_database/deploy/runner.py: only the migration role may reach it';
    CREATE TABLE IF NOT EXISTS {LOCK_TABLE} ();
EXCEPTION WHEN unique_violation OR duplicate_object OR duplicate_table OR duplicate_schema THEN
    NULL;  -- another deployer made it meanwhile
END
$lock$"""
#: Tried now and then rather than waited for: a backend waiting in a lock's queue holds
#: the catalog snapshot it looked the table up with, and the holder's CREATE INDEX
#: CONCURRENTLY would wait for that snapshot, and so for the waiter (a deadlock no lock
#: manager sees). Between attempts the waiter is idle, holding nothing.
_TAKE_LOCK = f"LOCK TABLE {LOCK_TABLE} IN {LOCK_MODE} MODE NOWAIT"
#: A lock session waits idle in its transaction for as long as the deploy runs: none of
#: these may end it. transaction_timeout is PostgreSQL 17's.
_LOCK_SESSION_TIMEOUTS = (
    "idle_in_transaction_session_timeout",
    "statement_timeout",
    "transaction_timeout",
)

#: lock_not_available (lock_timeout, NOWAIT) and deadlock_detected: the revision's
#: transaction was rolled back having changed nothing, so it can simply run again.
_RETRYABLE = {"55P03", "40P01"}
#: How long a migration statement waits behind an autovacuum of its table before
#: PostgreSQL cancels the autovacuum (its ``deadlock_timeout``, 1 s by default): every
#: writer of the table queues behind the waiting statement meanwhile. Only a role
#: allowed to set it (a superuser, or one granted SET on it) can; Neon's owner role may
#: not, and keeps the default, which the run says in one line (research.md, "Column
#: changes online and op.backfill").
AUTOVACUUM_YIELDS_AFTER = "50ms"
_AUTOVACUUM_YIELDS = (
    "DO $yield$ BEGIN SET deadlock_timeout = '{after}'; "
    "EXCEPTION WHEN insufficient_privilege THEN RAISE NOTICE "
    "'deadlock_timeout stays at %, as % may not set it', "
    "current_setting('deadlock_timeout'), current_user; END $yield$"
)
_POOLER = re.compile(r"^(?P<endpoint>ep-[a-z0-9-]+?)-pooler(?P<rest>\..+)$")


@dataclass(frozen=True)
class Settings:
    """How patient a run is. Durations are PostgreSQL interval strings, or seconds."""

    lock_timeout: str = "2s"
    statement_timeout: str = "15min"
    lock_retries: int = 3
    retry_backoff_s: float = 1.0
    deploy_lock_wait_s: float = 300.0
    downgrade_floor: str | None = None
    #: TCP keepalives of both deploy sessions, on both ends: a peer silent for
    #: idle + interval x count seconds is given up on (research.md, Safe deploys).
    keepalives_idle_s: int = 20
    keepalives_interval_s: int = 10
    keepalives_count: int = 3
    #: ``-x debug=1``: a failure's traceback is printed before its one line.
    debug: bool = False

    @classmethod
    def from_config(cls, config: Config, x_arguments: dict[str, str]) -> Settings:
        def option(name: str) -> str | None:
            value = x_arguments.get(name) or config.get_main_option(name)
            return value.strip() if value else None

        defaults = cls()
        floor = option("downgrade_floor")
        return cls(
            lock_timeout=option("lock_timeout") or defaults.lock_timeout,
            statement_timeout=option("statement_timeout") or defaults.statement_timeout,
            lock_retries=int(option("lock_retries") or defaults.lock_retries),
            retry_backoff_s=float(option("retry_backoff") or defaults.retry_backoff_s),
            deploy_lock_wait_s=float(option("deploy_lock_wait") or defaults.deploy_lock_wait_s),
            downgrade_floor=None if floor in (None, "base") else floor,
            keepalives_idle_s=int(option("keepalives_idle") or defaults.keepalives_idle_s),
            keepalives_interval_s=int(
                option("keepalives_interval") or defaults.keepalives_interval_s
            ),
            keepalives_count=int(option("keepalives_count") or defaults.keepalives_count),
            debug=_flag(x_arguments["debug"] or "1" if "debug" in x_arguments else option("debug")),
        )

    def session_statements(self) -> list[str]:
        """What the migration session runs first, in offline SQL (which cannot know the
        role it will run as: a role that may not set ``deadlock_timeout`` is told so)."""
        return [
            *self._timeouts(),
            _AUTOVACUUM_YIELDS.format(after=AUTOVACUUM_YIELDS_AFTER),
        ]

    def apply_to_session(self, connection: Connection) -> None:
        """What the migration session runs first, online: the timeouts, and the quicker
        yield of an autovacuum when the role may set it, else one line saying it is
        left at PostgreSQL's default and why."""
        for statement in self._timeouts():
            connection.exec_driver_sql(statement)
        may_set, role, current = may_i_set(connection, "deadlock_timeout")
        if may_set:
            connection.exec_driver_sql(f"SET deadlock_timeout = '{AUTOVACUUM_YIELDS_AFTER}'")
        else:
            log.info(
                "deadlock_timeout stays at %s: %s may not set it (a superuser may, or a role "
                "granted SET ON PARAMETER deadlock_timeout), so an autovacuum in a revision's "
                "way is cancelled after %s instead of %s",
                current,
                role,
                current,
                AUTOVACUUM_YIELDS_AFTER,
            )

    def _timeouts(self) -> list[str]:
        return [
            f"SET lock_timeout = '{self.lock_timeout}'",
            f"SET statement_timeout = '{self.statement_timeout}'",
        ]

    @property
    def silence_allowed_s(self) -> int:
        """How long either end of a deploy session may go unheard before the other
        closes it: the last keepalive probe unanswered, or data unacknowledged."""
        return self.keepalives_idle_s + self.keepalives_interval_s * self.keepalives_count

    def libpq_keepalives(self) -> dict[str, int]:
        """libpq's side: the deployer stops waiting for a server that vanished."""
        parameters = {
            "keepalives": 1,
            "keepalives_idle": self.keepalives_idle_s,
            "keepalives_interval": self.keepalives_interval_s,
            "keepalives_count": self.keepalives_count,
        }
        if psycopg.pq.version() >= 120000:  # an older libpq refuses to connect with it
            parameters["tcp_user_timeout"] = self.silence_allowed_s * 1000
        return parameters

    def server_keepalive_statements(self, server_version: int) -> list[str]:
        """The server's side, which is what releases a vanished deployer's lock: its
        session ends, and a statement it runs is cancelled, once the deployer is
        unheard for :attr:`silence_allowed_s`. Without these the server's defaults
        (the kernel's: two hours of idleness) hold the lock that long. Ignored on a
        Unix socket, where a client cannot vanish without the kernel knowing."""
        statements = [
            f"SET tcp_keepalives_idle = {self.keepalives_idle_s}",
            f"SET tcp_keepalives_interval = {self.keepalives_interval_s}",
            f"SET tcp_keepalives_count = {self.keepalives_count}",
        ]
        if server_version >= 120000:
            # Keepalives are not sent while a reply waits to be acknowledged; this
            # bounds that wait too (the kernel's default retries for about 15 min).
            statements.append(f"SET tcp_user_timeout = {self.silence_allowed_s * 1000}")
        if server_version >= 140000:
            # A statement that runs for long only learns of a dead client by looking.
            check_every_s = max(1, self.keepalives_interval_s // 2)
            statements.append(f"SET client_connection_check_interval = '{check_every_s}s'")
        return statements


def _flag(value: str | None) -> bool:
    """``-x debug``, ``-x debug=1``, ``debug = true``... on; unset, ``0``, ``off``... off."""
    return (value or "0").strip().lower() not in ("0", "false", "no", "off")


def refuse_pooled_host(host: str | None) -> None:
    """Neon's pooled endpoint (PgBouncer, transaction mode) loses session state such as
    advisory locks and SET: migrations need the direct host."""
    if host and (match := _POOLER.match(host)):
        direct = match["endpoint"] + match["rest"]
        raise CommandError(
            f"{host} is Neon's pooled endpoint, which cannot hold a migration's session "
            f"(advisory lock, timeouts); use the direct host {direct}"
        )


def check_single_head(script: ScriptDirectory) -> None:
    heads = script.get_heads()
    if len(heads) > 1:
        raise CommandError(
            f"the revisions have {len(heads)} heads ({', '.join(sorted(heads))}); "
            "merge them with `alembic merge heads` before deploying; nothing was changed"
        )


def check_known_revisions(script: ScriptDirectory, current: tuple[str, ...]) -> None:
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            raise CommandError(
                f"the database is at revision {revision}, which this repository does not have "
                "(deployed from a newer branch?); nothing was changed"
            ) from None


def check_downgrade_floor(
    script: ScriptDirectory,
    current: tuple[str, ...],
    destination: str | None,
    floor: str | None,
) -> None:
    """A downgrade from `current` to `destination` may go down to `floor`, never below
    it (``None``: no floor). `destination` is anything ``alembic downgrade`` takes:
    a revision, ``base``, ``-1``, ``head-2``, ``<rev>+1``..."""
    if floor is None or not current:
        return
    try:
        undone = {
            revision.revision
            for revision in script.iterate_revisions(
                current, destination or "base", select_for_downgrade=True
            )
        }
    except RevisionError as exc:
        raise CommandError(f"downgrade to {destination}: {exc}; nothing was changed") from None
    if floor in undone:
        raise CommandError(
            f"downgrade to {destination or 'base'} goes past the oldest allowed revision "
            f"{floor} (downgrade_floor in alembic.ini; -x downgrade_floor=base lifts it); "
            "nothing was changed"
        )


def import_models() -> ModuleType:
    """The ``models`` package, or one line saying where it fails to import."""
    try:
        return importlib.import_module("models")
    except Exception as exc:  # noqa: BLE001  (a model module can raise anything)
        frames = [
            (Path(frame.f_code.co_filename), line)
            for frame, line in traceback.walk_tb(exc.__traceback__)
            if "models" in Path(frame.f_code.co_filename).parts
        ]
        where = f" ({frames[-1][0].name}, line {frames[-1][1]})" if frames else ""
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise CommandError(
            f"the models do not import{where}: {type(exc).__name__}: {reason}; nothing was changed"
        ) from None


def register_operations() -> None:
    """Register with Alembic every operation a revision may call (``op.create_policy``,
    ``op.lock_tables``, ``op.backfill``...), by importing the modules that declare them:
    after the models, which some of them read."""
    import todo_database.online.backfill
    import todo_database.online.columns
    import todo_database.online.forms
    import todo_database.online.unique
    import todo_database.operations.enums
    import todo_database.operations.functions
    import todo_database.operations.policies
    import todo_database.operations.privileges
    import todo_database.operations.renames
    import todo_database.operations.roles
    import todo_database.operations.row_security  # noqa: F401


def unimported_model_modules(package: ModuleType) -> list[str]:
    """The modules of the models package that its ``__init__`` does not import: their
    tables are invisible to autogenerate, which would then propose dropping them."""
    root = Path(str(package.__file__)).parent
    names = [
        ".".join((package.__name__, *path.relative_to(root).with_suffix("").parts))
        for path in sorted(root.rglob("*.py"))
        if path.name != "__init__.py"
    ]
    return [name for name in names if name not in sys.modules]


def check_models_imported(package: ModuleType) -> None:
    if missing := unimported_model_modules(package):
        raise CommandError(
            f"{package.__name__}/__init__.py does not import {', '.join(missing)}, so "
            "autogenerate cannot see the tables there: import them in it (and list them "
            "in __all__)"
        )


def load_revisions(script: ScriptDirectory) -> None:
    """Load every revision file now, so that one that does not import is one line
    naming it rather than a traceback from deep inside Alembic."""
    try:
        script.get_heads()
    except CommandError:
        raise
    except Exception as exc:  # noqa: BLE001  (a revision file can raise anything)
        locations = [script.versions, *(script.version_locations or ())]
        versions = [Path(location).resolve() for location in locations]
        files = [
            Path(frame.f_code.co_filename)
            for frame, _ in traceback.walk_tb(exc.__traceback__)
            if any(Path(frame.f_code.co_filename).resolve().parent == v for v in versions)
        ]
        where = f"revision file {files[-1].name}" if files else "a revision file"
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise CommandError(
            f"{where} does not import: {type(exc).__name__}: {reason}; fix it (or move it out "
            "of migrations/versions) and rerun; nothing was changed"
        ) from None


#: Every deploy session names itself ``todo-migrations [lock] <host>:<pid>``, so that a
#: waiting deployer recognises the holder's two sessions and the deployer behind them.
_MIGRATION_SESSION = "todo-migrations"
_LOCK_SESSION = "todo-migrations lock"
_WATCH_SESSION = "todo-migrations watch"
#: Marks the lock watch's own polling, which is never the holder's activity.
_WATCH_MARK = "/* todo-migrations lock watch */"

_SESSION_COLUMNS = """
    a.pid, coalesce(a.application_name, ''), a.state, coalesce(a.query, ''),
    CASE WHEN a.client_port = -1 THEN 'local socket'
         WHEN a.client_addr IS NOT NULL THEN host(a.client_addr) || ':' || a.client_port
    END,
    to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
    to_char(a.state_change AT TIME ZONE 'UTC', 'HH24:MI:SS'),
    extract(epoch FROM clock_timestamp() - a.state_change)::float8
"""
_HOLDERS = f"""
    SELECT {_SESSION_COLUMNS}
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'relation' AND l.granted AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.relation = to_regclass(%(table)s)
"""
_NAMED = f"""
    SELECT {_SESSION_COLUMNS}
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.application_name = %(name)s
"""
_BLOCKERS = f"""{_WATCH_MARK}
    SELECT {_SESSION_COLUMNS}
    FROM unnest(pg_blocking_pids(%(pid)s)) AS b(pid) JOIN pg_stat_activity a ON a.pid = b.pid
"""


@dataclass(frozen=True)
class Session:
    """A backend as pg_stat_activity shows it (``None``: not visible to this role)."""

    pid: int
    application: str
    state: str | None
    query: str
    client: str | None
    connected: str | None
    state_since: str | None
    state_for_s: float | None

    @property
    def is_lock_session(self) -> bool:
        return self.application.startswith(_LOCK_SESSION + " ")

    def describe(self) -> str:
        """Which backend, from where, since when, and what it is doing."""
        parts = [f"pid {self.pid} ({self.application or 'no application_name'})"]
        if self.client:
            parts.append(f"from {self.client}")
        if self.connected:
            parts.append(f"connected {self.connected} UTC")
        return f"{', '.join(parts)}, {self.activity()}"

    def activity(self) -> str:
        """Its state and since when, and its query, unless that is only the lock watch
        polling (all a lock session ever runs)."""
        if self.state is None or self.state_for_s is None:
            return "in a state this role may not see"
        text = f"{self.state} for {_duration(self.state_for_s)} (since {self.state_since} UTC)"
        query = " ".join(self.query.split())
        if self.is_lock_session or not query or _WATCH_MARK in query:
            return text
        query = _without_password_literals(query)
        if len(query) > 160:
            query = query[:157] + "..."
        return f"{text}: {query}" if self.state == "active" else f"{text}, last query: {query}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60} s"


def _sessions(connection: Connection, statement: str, **params: object) -> list[Session]:
    return [Session(*row) for row in connection.exec_driver_sql(statement, params)]


def _describe_holders(lock_connection: Connection) -> tuple[str, list[int]]:
    """Who holds the deploy lock (and their pids), and, when it is a deployer's lock
    session, what that deployer's migration session is doing."""
    described = []
    holders = _sessions(lock_connection, _HOLDERS, table=LOCK_TABLE)
    for holder in holders:
        text = holder.describe()
        if holder.is_lock_session:
            deployer = holder.application.removeprefix(_LOCK_SESSION + " ")
            name = f"{_MIGRATION_SESSION} {deployer}"
            for sibling in _sessions(lock_connection, _NAMED, name=name):
                text += f"; its migration session pid {sibling.pid} is {sibling.activity()}"
        described.append(text)
    return "; ".join(described), [holder.pid for holder in holders]


def _deployer() -> str:
    """This deployer, as its sessions name it (application_name keeps 63 bytes)."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}"


def _name_session(connection: Connection, name: str, settings: Settings) -> None:
    """Name a deploy session and have the server give up on it once its deployer is
    unheard for a while (a lock that outlives its holder stops every deploy)."""
    server_version = connection.exec_driver_sql(
        "SELECT set_config('application_name', %(name)s, false), "
        "current_setting('server_version_num')::int",
        {"name": name},
    ).one()[1]
    for statement in settings.server_keepalive_statements(int(server_version)):
        connection.exec_driver_sql(statement)
    if connection.in_transaction():
        connection.commit()


#: What a run was doing when something ended it outside a revision.
_stage: ContextVar[str] = ContextVar("stage")
_AFTER_THE_REVISIONS_BEGAN = "after its revisions began"


@contextmanager
def deploy_lock(connection: Connection, settings: Settings) -> Iterator[LockWatch]:
    """Hold the deploy lock for the duration, on a session of its own beside the
    migration session `connection`; yields a watch on the migration session."""
    deployer = _deployer()
    _name_session(connection, f"{_MIGRATION_SESSION} {deployer}", settings)
    # From the moment its sessions open: a watcher sees the lock session before it asks.
    _stage.set("while waiting for the migration lock")
    with connection.engine.connect() as opened, connection.engine.connect() as watching:
        lock_connection = opened.execution_options(isolation_level="AUTOCOMMIT")
        _name_session(lock_connection, f"{_LOCK_SESSION} {deployer}", settings)
        # The lock session's transaction runs no statement while the revisions run: one
        # that held a snapshot would make a CREATE INDEX CONCURRENTLY wait for it, and so
        # for the end of the deploy. The watch polls on a session of its own.
        watch_connection = watching.execution_options(isolation_level="AUTOCOMMIT")
        _name_session(watch_connection, f"{_WATCH_SESSION} {deployer}", settings)
        _wait_for_the_lock(lock_connection, settings)
        _stage.set("after taking the migration lock, before any revision ran")
        log.info("Holding the migration lock")
        watch = LockWatch(watch_connection)
        failed = True
        try:
            yield watch
            failed = False
        finally:
            watch.stop()
            if watch.polling_failed is not None:
                watch_connection.invalidate()
            _release(lock_connection, watch, quiet=failed)


def _wait_for_the_lock(lock_connection: Connection, settings: Settings) -> None:
    """Take the deploy lock: a transaction of `lock_connection` (autocommit until now)
    that holds :data:`LOCK_TABLE` until :func:`_release` ends it."""
    _make_lock_table(lock_connection)
    for name in _LOCK_SESSION_TIMEOUTS:
        lock_connection.exec_driver_sql(
            "SELECT set_config(name, '0', false) FROM pg_settings WHERE name = %(name)s",
            {"name": name},
        )
    started = time.monotonic()
    announced: float | None = None
    while not _try_lock(lock_connection):
        waited = time.monotonic() - started
        if waited >= settings.deploy_lock_wait_s:
            who, pids = _describe_holders(lock_connection)
            end_it = f"SELECT pg_terminate_backend({pids[0] if pids else '<pid>'})"
            raise CommandError(
                f"another deploy held the migration lock for {waited:.0f} s "
                f"({who or 'a session that just ended'}); gave up, nothing was changed (if "
                f"that deployer is gone, `{end_it}` ends its session now; the server ends it "
                f"by itself about {settings.silence_allowed_s} s after it was last heard from)"
            )
        if announced is None or waited - announced >= 5:
            who = _describe_holders(lock_connection)[0] or "a session that just ended"
            log.info("Waiting for the migration lock (%.0f s so far), held by %s", waited, who)
            announced = waited
        time.sleep(0.2)


def _make_lock_table(lock_connection: Connection) -> None:
    """The deploy lock's table, made by the first deploy of a database (a role that may
    not reach a table another role made is told whose it is)."""
    # From the catalog: to_regclass() needs USAGE on a schema another role made.
    exists = relation_exists(lock_connection, LOCK_SCHEMA, LOCK_TABLE.split(".")[1])
    try:
        if not exists:
            lock_connection.exec_driver_sql(_MAKE_LOCK_TABLE)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "42501":  # insufficient_privilege
            raise
        _refuse_the_lock(lock_connection)


def _refuse_the_lock(lock_connection: Connection) -> NoReturn:
    """The deploy lock is another role's, or cannot be made: one line saying whose and
    what to do."""
    owner, role = schema_owner(lock_connection, LOCK_SCHEMA)
    if owner is None:
        raise CommandError(
            f"the deploy lock's schema {LOCK_SCHEMA} does not exist yet, and this role may "
            "not create schemas in the database: run the migrations as the database's owner "
            "(on Neon, the project's owner role, neondb_owner); nothing was changed"
        )
    raise CommandError(
        f"the deploy lock ({LOCK_TABLE}) is {owner}'s, which no other role may reach: run "
        f"the migrations as {owner} (on Neon, the project's owner role), or, as {owner}, "
        f"`GRANT USAGE ON SCHEMA {LOCK_SCHEMA} TO {role}; GRANT UPDATE ON {LOCK_TABLE} TO "
        f"{role}`; nothing was changed"
    )


def _try_lock(lock_connection: Connection) -> bool:
    """Whether the lock was had: a transaction holding it is left open."""
    lock_connection.exec_driver_sql("BEGIN")
    try:
        lock_connection.exec_driver_sql(_TAKE_LOCK)
    except DBAPIError as exc:
        lock_connection.exec_driver_sql("ROLLBACK")
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate == "55P03":  # lock_not_available
            return False
        if sqlstate == "42501":  # insufficient_privilege
            _refuse_the_lock(lock_connection)
        raise
    return True


def _release(lock_connection: Connection, watch: LockWatch, *, quiet: bool) -> None:
    """Release the deploy lock, ending the transaction that holds it; a lock whose
    session has ended has gone with it."""
    try:
        if not lock_connection.invalidated:
            lock_connection.exec_driver_sql("ROLLBACK")
            return
    except DBAPIError as exc:
        watch.lost = exc
        # Gone with its server session: closing it must not try the ROLLBACK again.
        lock_connection.invalidate()
    if not quiet:
        reason = _first_line(watch.lost.orig if isinstance(watch.lost, DBAPIError) else watch.lost)
        log.warning(
            "The migration lock's session ended during the run (%s), and the lock with it: "
            "another deploy could have started meanwhile",
            reason,
        )


class LockWatch:
    """Remembers who last blocked the migration session, so that a lock timeout can
    name the backend it waited for. Polls on a session of its own (the watch session)."""

    interval_s = 0.1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_blockers: list[Session] = []
        #: Why the lock session ended, if it did (found when the lock is released).
        self.lost: BaseException | None = None
        #: Why the watch stopped polling, if its own session ended.
        self.polling_failed: BaseException | None = None

    def watch(self, migration_connection: Connection) -> None:
        self._pid = migration_connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        migration_connection.commit()
        self._thread = threading.Thread(target=self._poll, name="lock-watch", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                blockers = _sessions(self._connection, _BLOCKERS, pid=self._pid)
            except DBAPIError as exc:
                self.polling_failed = exc
                return
            if blockers:
                self.last_blockers = blockers

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM during a run. A KeyboardInterrupt, as Ctrl-C is, so that
    psycopg cancels the running statement before the run says where it stopped."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def _signal_name(exc: KeyboardInterrupt) -> str:
    return exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Interrupted` in the main thread for the duration.
    SIGTERM would otherwise end the process without a word; a signal the deployer's
    parent chose to ignore (``nohup``, a background job) stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not signal.SIG_IGN and handler is not None:
            previous[signum] = handler
            signal.signal(signum, interrupt)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def failures_in_one_line(settings: Settings, *, deploying: bool) -> Iterator[None]:
    """Whatever ends a run (a lost connection, a server restart, SIGINT, SIGTERM) ends
    it in one line. A revision's failure is explained by :func:`run_with_retries`;
    this explains the rest, which comes before any revision ran. A read-only command
    keeps the traceback of its own bugs; a deploy shows none unless ``-x debug=1``."""
    stage = _stage.set("before any revision ran")
    with _interruptible():
        try:
            yield
        except CommandError as exc:
            if (said := _redacted(str(exc))) != str(exc):
                raise CommandError(said) from None
            raise
        except KeyboardInterrupt as exc:
            _show_traceback(exc, settings)
            raise CommandError(
                _redacted(f"interrupted ({_signal_name(exc)}){_where(deploying)}")
            ) from None
        except DBAPIError as exc:
            _show_traceback(exc, settings)
            raise CommandError(_redacted(f"{_database_error(exc)}{_where(deploying)}")) from None
        except Exception as exc:
            if not deploying:
                raise
            _show_traceback(exc, settings)
            raise CommandError(
                _redacted(
                    f"{type(exc).__name__}: {_first_line(exc)}{_where(deploying)} "
                    "(-x debug=1 shows the traceback)"
                )
            ) from None
        finally:
            _stage.reset(stage)


def _where(deploying: bool) -> str:
    """Where the run was and what that means for the database."""
    if not deploying:
        return "; nothing was changed"
    if _stage.get() == _AFTER_THE_REVISIONS_BEGAN:  # a second failure, while cleaning up
        return f" {_AFTER_THE_REVISIONS_BEGAN}; run `alembic current` to see where it stands"
    return f" {_stage.get()}; nothing was changed"


def _redacted(message: str) -> str:
    """`message` without any secret of ``DATABASE_URL`` (a driver's error can quote one)."""
    try:
        url = parse_url(os.environ.get("DATABASE_URL", ""))
    except DatabaseError:
        return message
    return redact(message, url)


def _show_traceback(exc: BaseException, settings: Settings) -> None:
    if settings.debug:
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()


def _first_line(exc: BaseException | None) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _database_error(exc: DBAPIError) -> str:
    """The driver's error in one line, with PostgreSQL's DETAIL (which names the
    duplicated key, the object in the way...) without the rows' values, and saying so
    when the connection went with it."""
    error = _first_line(exc.orig)
    detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None)
    if detail:
        error += f" (DETAIL: {without_values(detail)})"
    if exc.connection_invalidated:
        error += " (the connection was lost)"
    return error


#: How PostgreSQL's DETAIL goes on after a key's values (``Key (a)=(1) is duplicated.``).
_AFTER_KEY_VALUES = (
    " is duplicated",
    " already exists",
    " is not present in table",
    " is still referenced from table",
    " conflicts with existing key",
)
_ROW_VALUES = re.compile(r"^Failing row contains \(.*\)(\.?)$", re.DOTALL)
#: Said where values were left out.
VALUES_LEFT_OUT = "…"


def without_values(detail: str) -> str:
    """PostgreSQL's DETAIL in one line, the values of rows it quotes left out: they are
    data (an e-mail address, a title), and a deploy's line reaches CI logs. The key's
    columns stay (they come from an index's definition), and so does the rest; ``-x
    debug=1`` prints the whole error."""
    detail = " ".join(detail.split())
    if _ROW_VALUES.match(detail):
        return _ROW_VALUES.sub(rf"Failing row contains ({VALUES_LEFT_OUT})\1", detail)
    if not detail.startswith("Key ("):
        return detail
    columns_end = _closing(detail, len("Key "))
    if columns_end is None or not detail.startswith("=(", columns_end + 1):
        return f"Key ({VALUES_LEFT_OUT})"
    key = detail[: columns_end + 1]
    for after in _AFTER_KEY_VALUES:
        at = detail.rfind(")" + after)
        if at > columns_end:
            rest = detail[at + 1 :]
            if after == " conflicts with existing key":
                rest = f"{after} ({VALUES_LEFT_OUT})"
            return f"{key}=({VALUES_LEFT_OUT}){rest}"
    return f"{key}=({VALUES_LEFT_OUT})"


def _closing(text: str, start: int) -> int | None:
    """The index of the parenthesis closing the one at `start`."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    return None


class _RunningStatement:
    """The statement the migration session is running, if any, for an interruption,
    which (unlike a driver error) does not carry it."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self.statement: str | None = None
        event.listen(connection, "before_cursor_execute", self._started)
        event.listen(connection, "after_cursor_execute", self._finished)

    def _started(self, *args: object) -> None:
        self.statement = str(args[2])

    def _finished(self, *_: object) -> None:
        self.statement = None

    def close(self) -> None:
        event.remove(self._connection, "before_cursor_execute", self._started)
        event.remove(self._connection, "after_cursor_execute", self._finished)


def run_with_retries(
    run: Callable[[], None],
    settings: Settings,
    watch: LockWatch | None,
    connection: Connection,
) -> None:
    """Run the migrations; retry when a lock could not be had; explain any failure,
    with where the database stands read back."""
    running = _RunningStatement(connection)
    _stage.set(_AFTER_THE_REVISIONS_BEGAN)
    try:
        _run_with_retries(run, settings, watch, connection, running)
    finally:
        running.close()


def _run_with_retries(
    run: Callable[[], None],
    settings: Settings,
    watch: LockWatch | None,
    connection: Connection,
    running: _RunningStatement,
) -> None:
    for attempt in range(settings.lock_retries + 1):
        try:
            run()
            return
        except DBAPIError as exc:
            lock_timed_out = getattr(exc.orig, "sqlstate", None) in _RETRYABLE
            if not lock_timed_out or attempt == settings.lock_retries:
                _show_traceback(exc, settings)
                error = _database_error(exc)
                if lock_timed_out:
                    error = f"{error}; blocked by {_who(watch)}"
                statement = exc.statement or ("COMMIT" if _in_commit(exc) else None)
                raise _failure(exc, error, statement, connection) from None
            timed_out = exc
        except CommandError:
            raise
        except KeyboardInterrupt as exc:
            _show_traceback(exc, settings)
            raise _failure(
                exc, None, running.statement, connection, interrupted=_signal_name(exc)
            ) from None
        except Exception as exc:  # noqa: BLE001  (a revision's own code can raise anything)
            _show_traceback(exc, settings)
            error = f"{type(exc).__name__}: {_first_line(exc)}"
            raise _failure(exc, error, None, connection) from None

        delay = settings.retry_backoff_s * 2**attempt
        # From here the attempt is over: an interrupt while its blocker is named is one
        # while waiting to retry too.
        try:
            log.warning(
                "Locks not had (lock_timeout %s; blocked by %s); retry %d/%d in %.1f s",
                settings.lock_timeout,
                _who(watch),
                attempt + 1,
                settings.lock_retries,
                delay,
            )
            time.sleep(delay)
        except KeyboardInterrupt as exc:
            interrupted = _signal_name(exc)
            raise _failure(
                timed_out,
                None,
                timed_out.statement,
                connection,
                interrupted=interrupted,
                retrying=True,
            ) from None


def _failure(
    exc: BaseException,
    error: str | None,
    statement: str | None,
    connection: Connection,
    *,
    interrupted: str | None = None,
    retrying: bool = False,
) -> RevisionFailedError:
    revision = _running_revision(exc)
    current, mark = _read_back(connection)
    # The transaction of a revision with online steps marks itself committed: a mark
    # for the running revision says its failure came after the commit.
    online = mark is not None and revision is not None and revision.startswith(mark[1])
    return RevisionFailedError(
        revision,
        error or "",
        statement,
        current,
        online=online or _in_online_step(exc),
        marked=online,
        interrupted=interrupted,
        retrying=retrying,
    )


def _read_back(
    connection: Connection, patience_s: float = 5.0
) -> tuple[tuple[str, ...] | None, tuple[str, str] | None]:
    """Where the database stands, read on a session of its own (the migration session
    may be gone, or mid-rollback): its revisions, ``None`` when the server cannot be
    reached within `patience_s` (a restart usually takes a second or two), and the
    mark of a revision's transaction committed before its online steps, if any."""
    url = connection.engine.url
    quick = url.update_query_dict({"connect_timeout": str(max(1, int(patience_s / 2)))})
    engine = create_engine(quick, poolclass=pool.NullPool)
    deadline = time.monotonic() + patience_s
    try:
        while True:
            try:
                with engine.connect() as fresh, _quiet(_ALEMBIC_RUNTIME):
                    heads = tuple(MigrationContext.configure(fresh).get_current_heads())
                    mark = committed_mark(fresh.exec_driver_sql(READ_MARK).scalar())
                    return heads, mark
            except DBAPIError:
                if time.monotonic() >= deadline:
                    return None, None
                time.sleep(0.5)
            except KeyboardInterrupt:  # interrupted again: the person wants out now
                return None, None
    finally:
        engine.dispose()


#: Announces the context it configures, which a read-back need not.
_ALEMBIC_RUNTIME = logging.getLogger("alembic.runtime.migration")


@contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _who(watch: LockWatch | None) -> str:
    if watch is None or not watch.last_blockers:
        return "an unknown backend"
    return "; ".join(blocker.describe() for blocker in watch.last_blockers)


def _running_revision(exc: BaseException) -> str | None:
    """The revision being run when `exc` was raised: the step Alembic's loop was on (so
    also while it updates the version table or commits), else the innermost revision
    module on the traceback; ``, downgrade`` when it was being undone."""
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        step = frame.f_locals.get("step")
        script = getattr(step, "revision", None)
        if frame.f_code.co_name == "run_migrations" and script is not None:
            undoing = "" if getattr(step, "is_upgrade", True) else ", downgrade"
            return f"{script.revision} ({Path(str(script.path)).name}{undoing})"
        module = frame.f_globals
        if "revision" in module and "down_revision" in module and "upgrade" in module:
            undoing = ", downgrade" if frame.f_code.co_name == "downgrade" else ""
            found = f"{module['revision']} ({Path(frame.f_code.co_filename).name}{undoing})"
    return found


def _in_commit(exc: BaseException) -> bool:
    return any(
        frame.f_code.co_name == "_commit_impl" for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _in_online_step(exc: BaseException) -> bool:
    """Whether `exc` was raised inside an autocommit block: after the revision's
    transaction had committed."""
    return any(
        frame.f_code.co_name == "autocommit_block"
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


_PASSWORD_LITERAL = re.compile(r"(PASSWORD\s+)'(?:[^']|'')*'", re.IGNORECASE)


def _without_password_literals(statement: str) -> str:
    """`statement` with the password of a ``CREATE/ALTER ROLE ... PASSWORD '...'`` hidden."""
    return _PASSWORD_LITERAL.sub(r"\1'***'", statement)


class RevisionFailedError(CommandError):
    """A revision that failed: which, why, on which statement, and where the database
    stands, in one line. `current` is ``None`` when that could not be read back."""

    def __init__(
        self,
        revision: str | None,
        error: str,
        statement: str | None,
        current: tuple[str, ...] | None,
        *,
        online: bool,
        marked: bool = False,
        interrupted: str | None = None,
        retrying: bool = False,
    ) -> None:
        self.revision, self.error, self.online, self.marked = revision, error, online, marked
        self.interrupted, self.retrying = interrupted, retrying
        self.statement = _without_password_literals(" ".join((statement or "").split()))
        if len(self.statement) > 200:
            self.statement = self.statement[:197] + "..."
        self.at = None if current is None else ", ".join(current) or "base"
        super().__init__(self.describe())

    @property
    def cause(self) -> str:
        """What failed, without where the database stands."""
        what = f"revision {self.revision}" if self.revision else "the migration run"
        step = " in its online steps" if self.online else ""
        if self.interrupted:
            outcome = f"was interrupted ({self.interrupted}){step}"
            if self.retrying:
                outcome += " while waiting to retry it"
            elif not self.statement:
                outcome += " between statements" if self.revision else " between revisions"
        else:
            outcome = f"failed{step}: {self.error}"
        statement = f" [statement: {self.statement}]" if self.statement else ""
        return f"{what} {outcome}{statement}"

    def describe(self) -> str:
        then = "rerun" if self.interrupted else "fix the cause and rerun"
        if self.at is None:
            return (
                f"{self.cause}; where the database stands is unknown: the connection was "
                f"lost; run `alembic current`, then {then} to continue from there"
            )
        if self.online:
            rerun = (
                "it skips the committed transaction and runs the online steps again; to "
                "back out instead, `alembic stamp` the revision, then `alembic downgrade -1`"
                if self.marked
                else "the revision runs again from its start"
            )
            return (
                f"{self.cause}; its transaction had committed, so the database is at "
                f"{self.at} with that part applied and its online steps not all done: "
                f"{then} ({rerun})"
            )
        return f"{self.cause}; the database is still at {self.at}: {then} to continue from there"
