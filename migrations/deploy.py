"""The safe-deploy guarantees of every schema-changing run (upgrade, downgrade, stamp).

* One deployer at a time: a session-level advisory lock, taken on a dedicated
  autocommit connection that never sits idle in a transaction, waited for within a
  bound while saying who holds it.
* Bounded locks: ``lock_timeout`` and ``statement_timeout`` on the migration session;
  a revision that cannot get its lock is retried with backoff, then fails naming the
  backend that blocked it.
* Atomic steps: each revision in its own transaction; a failure names the revision and
  the statement and leaves the database at the last good revision.
* Preflight: several heads, a database at a revision this repository does not know,
  a downgrade past the floor, all stop before anything is touched.

Settings come from ``alembic.ini`` (``[alembic]`` section) and may be overridden per
run with ``-x name=value``.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

log = logging.getLogger("migrations")

#: The advisory lock key: the same for every deployer of this schema, per database.
#: Below 2**31, so pg_locks shows it as objid with classid 0.
LOCK_KEY = zlib.crc32(b"todo-database:migrations") & 0x7FFFFFFF

#: lock_not_available (lock_timeout, NOWAIT) and deadlock_detected: the revision's
#: transaction was rolled back having changed nothing, so it can simply run again.
_RETRYABLE = {"55P03", "40P01"}
_POOLER = re.compile(r"^(?P<endpoint>ep-[a-z0-9-]+?)-pooler(?P<rest>\..+)$")


@dataclass(frozen=True)
class Settings:
    """How patient a run is. Durations are PostgreSQL interval strings."""

    lock_timeout: str = "2s"
    statement_timeout: str = "15min"
    lock_retries: int = 3
    retry_backoff_s: float = 1.0
    deploy_lock_wait_s: float = 300.0
    downgrade_floor: str | None = None

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
        )

    def session_statements(self) -> list[str]:
        """What the migration session runs first, online and in offline SQL alike."""
        return [
            f"SET lock_timeout = '{self.lock_timeout}'",
            f"SET statement_timeout = '{self.statement_timeout}'",
        ]


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


@dataclass
class Blocker:
    pid: int
    application: str
    query: str

    def describe(self) -> str:
        query = " ".join(self.query.split())
        if len(query) > 160:
            query = query[:157] + "..."
        return f"pid {self.pid} ({self.application or 'no application_name'}): {query}"


_HOLDERS = """
    SELECT a.pid, a.application_name, a.query
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.database = (
        SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid = 0 AND l.objid = %(key)s::bigint::oid AND l.objsubid = 1
"""
_BLOCKERS = """
    SELECT a.pid, a.application_name, a.query
    FROM unnest(pg_blocking_pids(%(pid)s)) AS b(pid) JOIN pg_stat_activity a ON a.pid = b.pid
"""


def _blockers(connection: Connection, statement: str, **params: object) -> list[Blocker]:
    return [Blocker(*row) for row in connection.exec_driver_sql(statement, params)]


@contextmanager
def deploy_lock(lock_connection: Connection, settings: Settings) -> Iterator[LockWatch]:
    """Hold the deploy lock for the duration; yields a watch on the migration session."""
    lock_connection = lock_connection.execution_options(isolation_level="AUTOCOMMIT")
    started = time.monotonic()
    announced = 0.0
    while not lock_connection.exec_driver_sql(
        "SELECT pg_try_advisory_lock(%(key)s)", {"key": LOCK_KEY}
    ).scalar():
        waited = time.monotonic() - started
        if waited >= settings.deploy_lock_wait_s:
            holders = _blockers(lock_connection, _HOLDERS, key=LOCK_KEY)
            who = "; ".join(h.describe() for h in holders) or "a session that just ended"
            raise CommandError(
                f"another deploy held the migration lock for {waited:.0f} s ({who}); "
                "gave up, nothing was changed"
            )
        if waited - announced >= 5 or announced == 0:
            holders = _blockers(lock_connection, _HOLDERS, key=LOCK_KEY)
            who = "; ".join(h.describe() for h in holders) or "unknown"
            log.info("Waiting for the migration lock (%.0f s so far), held by %s", waited, who)
            announced = waited or 0.001
        time.sleep(0.2)
    log.info("Holding the migration lock")
    watch = LockWatch(lock_connection)
    try:
        yield watch
    finally:
        watch.stop()
        lock_connection.exec_driver_sql("SELECT pg_advisory_unlock(%(key)s)", {"key": LOCK_KEY})


class LockWatch:
    """Remembers who last blocked the migration session, so that a lock timeout can
    name the backend it waited for. Polls on the (otherwise idle) lock connection."""

    interval_s = 0.1

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._pid: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_blockers: list[Blocker] = []

    def watch(self, migration_connection: Connection) -> None:
        self._pid = migration_connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        migration_connection.commit()
        self._thread = threading.Thread(target=self._poll, name="lock-watch", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                blockers = _blockers(self._connection, _BLOCKERS, pid=self._pid)
            except DBAPIError:
                return
            if blockers:
                self.last_blockers = blockers

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def run_with_retries(
    run: Callable[[], None],
    settings: Settings,
    watch: LockWatch | None,
    current_revisions: Callable[[], tuple[str, ...]],
) -> None:
    """Run the migrations; retry when a lock could not be had; explain any failure."""
    for attempt in range(settings.lock_retries + 1):
        try:
            run()
            return
        except DBAPIError as exc:
            lock_timed_out = getattr(exc.orig, "sqlstate", None) in _RETRYABLE
            if lock_timed_out and attempt < settings.lock_retries:
                delay = settings.retry_backoff_s * 2**attempt
                log.warning(
                    "Locks not had (lock_timeout %s; blocked by %s); retry %d/%d in %.1f s",
                    settings.lock_timeout,
                    _who(watch),
                    attempt + 1,
                    settings.lock_retries,
                    delay,
                )
                time.sleep(delay)
                continue
            raise _explain_failure(exc, watch, current_revisions(), lock_timed_out) from None
        except CommandError:
            raise
        except Exception as exc:  # noqa: BLE001  (a revision's own code can raise anything)
            raise _explain_code_failure(exc, current_revisions()) from None


def _explain_code_failure(exc: Exception, current: tuple[str, ...]) -> CommandError:
    """A revision whose Python raised (a bad argument, a name it lacks): which one,
    what it said, and where the database stands."""
    error = (str(exc).strip().splitlines() or [""])[0]
    return RevisionFailedError(
        _failing_revision(exc) or "a revision",
        f"{type(exc).__name__}: {error}",
        None,
        current,
        online=_in_online_step(exc),
    )


def _who(watch: LockWatch | None) -> str:
    if watch is None or not watch.last_blockers:
        return "an unknown backend"
    return "; ".join(blocker.describe() for blocker in watch.last_blockers)


def _failing_revision(exc: BaseException) -> str | None:
    """The revision whose code raised `exc`: the innermost revision module on its traceback."""
    found = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals
        if "revision" in module and "down_revision" in module and "upgrade" in module:
            found = f"{module['revision']} ({Path(frame.f_code.co_filename).name})"
    return found


def _explain_failure(
    exc: DBAPIError,
    watch: LockWatch | None,
    current: tuple[str, ...],
    lock_timed_out: bool,
) -> CommandError:
    error = (str(exc.orig).strip().splitlines() or ["unknown error"])[0]
    if lock_timed_out:
        error = f"{error}; blocked by {_who(watch)}"
    return RevisionFailedError(
        _failing_revision(exc) or "the version table update",
        error,
        str(exc.statement or ""),
        current,
        online=_in_online_step(exc),
    )


def _in_online_step(exc: BaseException) -> bool:
    """Whether `exc` was raised inside an autocommit block: after the revision's
    transaction had committed."""
    return any(
        frame.f_code.co_name == "autocommit_block"
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


class RevisionFailedError(CommandError):
    """A revision that failed: which, why, on which statement, and where the database
    stands, in one line."""

    def __init__(
        self,
        revision: str,
        error: str,
        statement: str | None,
        current: tuple[str, ...],
        *,
        online: bool,
    ) -> None:
        self.revision, self.error, self.online = revision, error, online
        self.statement = " ".join((statement or "").split())
        if len(self.statement) > 200:
            self.statement = self.statement[:197] + "..."
        self.at = ", ".join(current) or "base"
        super().__init__(self.describe())

    @property
    def cause(self) -> str:
        """What failed, without where the database stands."""
        step = " in its online steps" if self.online else ""
        statement = f" [statement: {self.statement}]" if self.statement else ""
        return f"revision {self.revision} failed{step}: {self.error}{statement}"

    def describe(self) -> str:
        if self.online:
            return (
                f"{self.cause}; its transaction had committed, so the database is at "
                f"{self.at} with that part applied and its online steps not all done: fix "
                "the cause and rerun (the revision runs again from its start)"
            )
        return (
            f"{self.cause}; the database is still at {self.at}: fix the cause and rerun to "
            "continue from there"
        )
