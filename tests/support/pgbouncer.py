"""PgBouncer in transaction mode in front of the test server, as Neon's pooled endpoint is
in front of its compute.

The fixture :func:`pgbouncer_binary` finds the executable or skips, saying what to
install; :func:`running` starts one on a free local port with a configuration generated in
a directory of the test's, and stops it. A test module takes the fixture by naming it at
its top level: ``pgbouncer_binary = tests.support.pgbouncer.pgbouncer_binary``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

INSTALL_HINT = "pgbouncer not installed: apt-get install pgbouncer (Debian/Ubuntu)"
#: Where distributions put it, for a PATH without sbin (a non-root shell on Debian).
_KNOWN_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")
_START_TIMEOUT_S = 10.0
#: A value PgBouncer's connection strings take without quoting.
_PLAIN = re.compile(r"[A-Za-z0-9_./@:+-]+")


@dataclass(frozen=True)
class Binary:
    """An installed PgBouncer."""

    path: Path
    version: tuple[int, ...]

    @property
    def tracks_prepared_statements(self) -> bool:
        """Whether it can carry protocol-level prepared statements across server
        connections (``max_prepared_statements``, 1.21+; psycopg relies on 1.22's)."""
        return self.version >= (1, 22)

    @property
    def has_prepared_statement_setting(self) -> bool:
        return self.version >= (1, 21)


def find_binary() -> Binary | None:
    """The PgBouncer on PATH or in a distribution's usual place, if any."""
    found = shutil.which("pgbouncer") or next(
        (path for path in _KNOWN_PATHS if os.access(path, os.X_OK)), None
    )
    if found is None:
        return None
    output = subprocess.run(
        [found, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", output)
    if match is None:
        raise RuntimeError(f"{found} --version printed no PgBouncer version: {output!r}")
    return Binary(Path(found), tuple(int(part) for part in match.groups("0")))


@pytest.fixture(scope="session")
def pgbouncer_binary() -> Binary:
    """The installed PgBouncer; the test is skipped, saying what to install, without."""
    binary = find_binary()
    if binary is None:
        pytest.skip(INSTALL_HINT)
    return binary


@dataclass(frozen=True)
class Upstream:
    """One ``[databases]`` entry: where PgBouncer connects for it, and as whom."""

    host: str
    port: int
    database: str
    #: None: the user the client names.
    user: str | None
    password: str | None = None
    pool_size: int | None = None

    def with_pool_size(self, pool_size: int) -> Upstream:
        return replace(self, pool_size=pool_size)

    def entry(self) -> str:
        fields = {
            "host": self.host,
            "port": self.port,
            "dbname": self.database,
            "user": self.user,
            "password": self.password,
            "pool_size": self.pool_size,
        }
        parts = []
        for key, value in fields.items():
            if value is None:
                continue
            if not _PLAIN.fullmatch(str(value)):
                raise ValueError(f"PgBouncer entry {key} needs quoting; the tests never do")
            parts.append(f"{key}={value}")
        return " ".join(parts)


def upstream_of(url: URL, *, user: str | None, password: str | None) -> Upstream:
    """The server behind `url` (its host, a Unix socket directory in the query or in
    ``PGHOST``, as the embedded server has it), logged in to as `user` (None: as the
    client's user)."""
    host = url.host or url.query.get("host") or os.environ.get("PGHOST")
    if not isinstance(host, str) or not host or url.database is None:
        raise ValueError("the test server's URL names no host or socket directory")
    return Upstream(host, url.port or 5432, url.database, user, password)


@dataclass(frozen=True)
class PgBouncer:
    """A running PgBouncer, listening on 127.0.0.1:`port`."""

    binary: Binary
    port: int
    log: Path

    def url(self, alias: str, user: str = "api") -> URL:
        """A psycopg URL of database `alias` through the pooler (`user` is only a name:
        every entry logs in as its own user)."""
        return URL.create(
            "postgresql+psycopg", username=user, host="127.0.0.1", port=self.port, database=alias
        )


@contextmanager
def running(
    binary: Binary,
    directory: Path,
    databases: Mapping[str, Upstream],
    *,
    settings: Mapping[str, str | int] | None = None,
    auth_user: str | None = None,
) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode serving `databases` (alias: upstream) on a free
    port of 127.0.0.1, configured in `directory`; `settings` add to or override the
    ``[pgbouncer]`` section. Stopped when the block ends.

    Each entry logs in as its own user. Given `auth_user`, an entry without one logs in
    as whichever login role the client names, as Neon's pooler does: PgBouncer looks
    the role up as `auth_user` (``pg_roles``, which anyone may read) and trusts it, as
    the test servers trust local users."""
    extra: dict[str, str | int] = {}
    if auth_user is not None:
        users = directory / f"pgbouncer-users-{uuid.uuid4().hex[:8]}.txt"
        users.write_text(f'"{auth_user}" ""\n')
        extra = {
            "auth_type": "trust",
            "auth_file": str(users),
            "auth_user": auth_user,
            "auth_query": "SELECT rolname::text, NULL::text FROM pg_catalog.pg_roles "
            "WHERE rolname = $1 AND rolcanlogin",
        }
    for attempt in range(3):
        port = _free_port()
        config = directory / f"pgbouncer-{port}.ini"
        config.write_text(_configuration(binary, port, databases, {**extra, **(settings or {})}))
        log = directory / f"pgbouncer-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [str(binary.path), str(config)], stdout=output, stderr=subprocess.STDOUT
            )
        try:
            if _wait_until_listening(process, port):
                yield PgBouncer(binary, port, log)
                return
        finally:
            _stop(process)
        # Another process took the port between our probe and PgBouncer's bind.
        if "Address already in use" not in log.read_text() or attempt == 2:
            raise RuntimeError(f"pgbouncer did not start:\n{log.read_text()[-2000:]}")
    raise AssertionError("unreachable")


def _configuration(
    binary: Binary,
    port: int,
    databases: Mapping[str, Upstream],
    settings: Mapping[str, str | int],
) -> str:
    section: dict[str, str | int] = {
        "listen_addr": "127.0.0.1",
        "listen_port": port,
        # No Unix socket: its default directory (/tmp) is shared by every run.
        "unix_socket_dir": "",
        # Clients name no password; each entry logs in to the server as its own user.
        "auth_type": "any",
        "pool_mode": "transaction",
        "max_client_conn": 200,
        "default_pool_size": 4,
    }
    if binary.has_prepared_statement_setting:
        # A pooler that does not track prepared statements, as 1.18 is, unless a test
        # asks for one that does.
        section["max_prepared_statements"] = 0
    user = _unprivileged_user(databases)
    if user is not None:
        section["user"] = user
    section.update(settings)
    lines = ["[databases]"]
    lines += [f"{alias} = {upstream.entry()}" for alias, upstream in databases.items()]
    lines += ["", "[pgbouncer]"]
    lines += [f"{key} = {value}" for key, value in section.items()]
    return "\n".join(lines) + "\n"


def _unprivileged_user(databases: Mapping[str, Upstream]) -> str | None:
    """Whom PgBouncer runs as when started by root (it refuses to run as root): the owner
    of the server's socket directory, who can always reach the socket in it, else
    nobody."""
    if os.geteuid() != 0:
        return None
    for upstream in databases.values():
        if upstream.host.startswith("/"):
            return pwd.getpwuid(Path(upstream.host).stat().st_uid).pw_name
    return "nobody"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until_listening(process: subprocess.Popen[bytes], port: int) -> bool:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.02)
        else:
            return True
    return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
