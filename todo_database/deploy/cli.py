"""The real ``alembic`` command in a child process, as CI and people run it.

For runs that must not share this process: another checkout's set-up (the review's
base), offline SQL exactly as a deploy renders it, and ``env.py``'s logging set-up.
:func:`run_each` runs several commands in one child, each as the console script runs
it, for renders that need a process apart from this one but not one each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from todo_database.deploy.database import PROJECT_ROOT


def _environment(database_url: str | None, environment: Mapping[str, str] | None) -> dict[str, str]:
    """The child's environment: its DATABASE_URL is `database_url` (none at all when
    None, so offline rendering can never connect)."""
    child = dict(os.environ if environment is None else environment)
    child.pop("DATABASE_URL", None)
    if database_url is not None:
        child["DATABASE_URL"] = database_url
    return child


def run(
    arguments: Sequence[str],
    *,
    cwd: Path = PROJECT_ROOT,
    database_url: str | None = None,
    environment: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m alembic <arguments>`` in `cwd`, with `database_url` as DATABASE_URL."""
    return subprocess.run(
        [sys.executable, "-m", "alembic", *arguments],
        cwd=cwd,
        env=_environment(database_url, environment),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


#: The child of :func:`run_each`: each command in turn through the console script's
#: entry point, its output and status kept apart, as ``python -m alembic`` would give
#: them (an uncaught exception: its traceback and status 1).
_EACH = """
import contextlib, io, json, sys, traceback
from alembic.config import main
results = []
for arguments in json.load(sys.stdin):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv=arguments, prog="alembic")
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except Exception:
            traceback.print_exc()
            code = 1
    results.append([code, out.getvalue(), err.getvalue()])
json.dump(results, sys.stdout)
"""


def run_each(
    commands: Sequence[Sequence[str]],
    *,
    cwd: Path = PROJECT_ROOT,
    database_url: str | None = None,
    timeout: float = 300,
) -> list[subprocess.CompletedProcess[str]]:
    """Each of `commands` (``alembic`` arguments), in order, in one child process in
    `cwd`, as :func:`run` would run it alone: a Python start (~0.5 s of imports) for
    them all rather than for each. A child that dies gives every command its error."""
    child = subprocess.run(
        [sys.executable, "-c", _EACH],
        input=json.dumps([list(arguments) for arguments in commands]),
        cwd=cwd,
        env=_environment(database_url, None),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    try:
        results = json.loads(child.stdout) if child.returncode == 0 else None
    except json.JSONDecodeError:
        results = None
    if results is None:
        return [
            subprocess.CompletedProcess(
                ["alembic", *arguments], child.returncode or 1, "", child.stderr
            )
            for arguments in commands
        ]
    return [
        subprocess.CompletedProcess(["alembic", *arguments], code, stdout, stderr)
        for arguments, (code, stdout, stderr) in zip(commands, results, strict=True)
    ]


def failure_reason(result: subprocess.CompletedProcess[str]) -> str:
    """Why an ``alembic`` child failed: its ``FAILED:`` line, else its last words."""
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    failed = [line for line in lines if line.startswith("FAILED:")]
    if failed:
        return failed[-1].removeprefix("FAILED:").strip()
    said = [line for line in result.stderr.splitlines() if line.strip()]
    return said[-1].strip() if said else f"exit code {result.returncode}"
