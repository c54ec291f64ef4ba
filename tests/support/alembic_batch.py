"""``alembic`` commands in a warm child process.

Each batch runs in a process of its own, forked from a server interpreter that has
already imported Alembic, SQLAlchemy, SQLModel and psycopg: the batch then pays for
importing its own models and migrations and for its work, not for the half second
every Python start spends importing those libraries. The commands run as the
``alembic`` console script runs them (``alembic.config.main``), in the directory and
with the environment given, their output captured at the file descriptors.

The server imports nothing of this project, so each child imports the models and
migrations of the directory it runs in. (multiprocessing's own ``forkserver`` would
do, but every child it starts re-imports the parent's ``__main__``, and under pytest
that drags the repository's own models into the child.)
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence

#: (exit code, stdout, stderr) of one command.
Result = tuple[int, str, str]

_SERVER = r"""
import json, os, sys, tempfile, traceback
import alembic.autogenerate, alembic.command, alembic.config, psycopg, sqlalchemy, sqlmodel

# The children import sources the tests rewrite within the same second, often at the
# same size: a bytecode cache, checked by modification time and size, could serve the
# old text.
sys.dont_write_bytecode = True

def captured(fd, into):
    saved = os.dup(fd)
    os.dup2(into.fileno(), fd)
    return saved

def batch(request):
    os.chdir(request["root"])
    os.environ.clear()
    os.environ.update(request["environment"])
    sys.path.insert(0, request["root"])
    results = []
    for argv in request["commands"]:
        # At the descriptors: Alembic holds on to the sys.stdout it started with, and the
        # post-write hooks are processes of their own.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            saved = (captured(1, out), captured(2, err))
            try:
                alembic.config.main(argv=argv, prog="alembic")
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:
                traceback.print_exc()  # as the interpreter would, leaving with status 1
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, original in zip((1, 2), saved):
                    os.dup2(original, fd)
                    os.close(original)
            out.seek(0)
            err.seek(0)
            results.append((code, out.read().decode(), err.read().decode()))
        if code:
            break
    return results

# The answers go out on stdout; nothing else the server says may.
answers = sys.stdout
sys.stdout = sys.stderr
for line in sys.stdin:
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        sys.stdout = sys.__stdout__  # captured at the descriptor while a command runs
        os.close(read)
        with os.fdopen(write, "w") as pipe:
            pipe.write(json.dumps(batch(json.loads(line))))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        answer = pipe.read() or "[]"
    os.waitpid(child, 0)
    answers.write(answer + "\n")
    answers.flush()
"""

_lock = threading.Lock()
_server: subprocess.Popen[str] | None = None


def _started() -> subprocess.Popen[str]:
    global _server  # noqa: PLW0603  (one server per test process, started on first use)
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        atexit.register(_server.kill)
    return _server


def run(
    root: str, environment: Mapping[str, str], commands: Sequence[Sequence[str]]
) -> list[Result]:
    """Run `commands` (``alembic`` arguments each) in order in a fresh child started in
    `root` with exactly `environment`, until one fails. Fewer results than commands and
    no failure among them means the child died."""
    request = {
        "root": root,
        "environment": dict(environment),
        "commands": [list(c) for c in commands],
    }
    with _lock:
        server = _started()
        assert server.stdin is not None
        assert server.stdout is not None
        server.stdin.write(json.dumps(request) + "\n")
        server.stdin.flush()
        answer = server.stdout.readline()
    return [(int(code), str(out), str(err)) for code, out, err in json.loads(answer or "[]")]


def alembic(
    arguments: Sequence[str],
    *,
    root: str,
    database_url: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """One ``alembic`` command, as :func:`todo_database.deploy.cli.run` runs it (the same
    environment rules: `database_url` as ``DATABASE_URL``, else none), in a warm child."""
    child = {
        key: value
        for key, value in (os.environ if environment is None else environment).items()
        if key != "DATABASE_URL"
    }
    if database_url is not None:
        child["DATABASE_URL"] = database_url
    ((code, stdout, stderr),) = run(root, child, [list(arguments)]) or [(1, "", "child died")]
    return subprocess.CompletedProcess(["alembic", *arguments], code, stdout, stderr)
