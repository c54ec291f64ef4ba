"""The real ``alembic`` command in a child process, as CI and people run it.

For runs that must not share this process: another checkout's set-up (the review's
base), offline SQL exactly as a deploy renders it, and ``env.py``'s logging set-up.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from todo_database.deploy.database import PROJECT_ROOT


def run(
    arguments: Sequence[str],
    *,
    cwd: Path = PROJECT_ROOT,
    database_url: str | None = None,
    environment: Mapping[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m alembic <arguments>`` in `cwd`; its DATABASE_URL is `database_url`
    (none at all when None, so offline rendering can never connect)."""
    child = dict(os.environ if environment is None else environment)
    child.pop("DATABASE_URL", None)
    if database_url is not None:
        child["DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "alembic", *arguments],
        cwd=cwd,
        env=child,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def failure_reason(result: subprocess.CompletedProcess[str]) -> str:
    """Why an ``alembic`` child failed: its ``FAILED:`` line, else its last words."""
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    failed = [line for line in lines if line.startswith("FAILED:")]
    if failed:
        return failed[-1].removeprefix("FAILED:").strip()
    said = [line for line in result.stderr.splitlines() if line.strip()]
    return said[-1].strip() if said else f"exit code {result.returncode}"
