"""A throwaway copy of the repository, changed the way a user changes it and driven
through the plain ``alembic`` command line.

:class:`Project` copies what a schema change touches (``alembic.ini``, ``migrations/``
with its ``script.py.mako`` and hooks, ``models/``, ``pyproject.toml`` for ruff,
``.squawk.toml``) into a directory of its own, with a database of its own. Its
:meth:`Project.alembic` runs ``alembic`` commands in a child process started in the
copy, exactly as ``alembic`` runs them (``alembic.config.main``, the console script's
entry point), several in one process where the models stay the same, each process a
fork of a warm interpreter (:mod:`tests.support.alembic_batch`), to keep Python's start-up
out of the bill; :meth:`Project.cli` runs ``python -m alembic`` itself, a process of its
own (:mod:`tests.support.warm_start`). :func:`evolve`
is one model change taken through the whole cycle a reviewer asks for.
"""

from __future__ import annotations

import atexit
import compileall
import functools
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from tests.conftest import PROJECT_ROOT, child_url, new_engine
from tests.support import alembic_batch, warm_start
from todo_database import lint
from todo_database.autogenerate.revision import VERIFY_VARIABLE

#: What a schema change needs of the repository (and ``tests``, to run its own suite).
COPIED = ("alembic.ini", ".squawk.toml", "pyproject.toml", "migrations", "models", "todo_database")


@dataclass(frozen=True)
class Run:
    """One ``alembic`` command and what it did."""

    argv: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def failed_lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.startswith("FAILED:")]

    def __str__(self) -> str:
        return f"alembic {' '.join(self.argv)} (exit {self.code}):\n{self.output}"


def copy_files(root: Path, names: Sequence[str] = COPIED) -> None:
    """The repository's `names` (of :data:`COPIED` and ``tests``) copied into `root`,
    with bytecode that stays true to their source (:func:`_pristine`)."""
    root.mkdir(parents=True, exist_ok=True)
    pristine = _pristine()
    for name in names:
        source = pristine / name
        if source.is_dir():
            shutil.copytree(source, root / name)
        else:
            shutil.copy2(source, root / name)


@functools.cache
def _pristine() -> Path:
    """This process's copy of the repository, the template of every copy, with the
    bytecode of what the ``alembic`` children import compiled once and checked against
    its source's hash rather than its modification time: a child then compiles only
    the files its test rewrote (within a second, often at the same size, which a cache
    checked by modification time and size would serve stale). Compiling all of it in
    every child was a fifth of the evolution stories' time."""
    directory = tempfile.mkdtemp(prefix="todo-pristine-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    root = Path(directory) / "project"
    root.mkdir()
    ignore = shutil.ignore_patterns(
        "__pycache__", "*.pyc", "review.md", "node_modules", "benchmarks"
    )
    for name in (*COPIED, "tests"):
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=ignore)
            if name in COPIED:
                compileall.compile_dir(
                    root / name,
                    quiet=2,
                    invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
                )
        else:
            shutil.copy2(source, root / name)
    return root


class CommandFailedError(AssertionError):
    """An ``alembic`` command that was meant to succeed did not."""


class Project:
    """A copy of the repository in `root`, migrating the database at `database_url`."""

    def __init__(self, root: Path, database_url: str) -> None:
        self.root = root
        self.database_url = database_url
        self.versions = root / "migrations" / "versions"

    @classmethod
    def copy(cls, root: Path, database_url: str) -> Project:
        copy_files(root, (*COPIED, "tests"))
        return cls(root, database_url)

    # --- changing files, as a person does -----------------------------------------------

    def read(self, path: str) -> str:
        return (self.root / path).read_text()

    def write(self, path: str, text: str) -> None:
        (self.root / path).write_text(text)

    def append(self, path: str, text: str) -> None:
        self.write(path, self.read(path) + text)

    def replace(self, path: str, old: str, new: str) -> None:
        text = self.read(path)
        assert old in text, f"{path} no longer holds {old!r}: the scenario needs updating"
        self.write(path, text.replace(old, new, 1))

    def models(self) -> dict[Path, str]:
        """Every file of ``models/``, to put back with :meth:`restore_models`."""
        return {path: path.read_text() for path in (self.root / "models").rglob("*.py")}

    def restore_models(self, files: dict[Path, str]) -> None:
        for path in (self.root / "models").rglob("*.py"):
            if path not in files:
                path.unlink()
        for path, text in files.items():
            path.write_text(text)

    def revision_files(self) -> set[Path]:
        return set(self.versions.glob("*.py"))

    def checked_without(self, revision: Path, previous: dict[Path, str]) -> None:
        """Downgraded past `revision`, the database checks clean against the `previous`
        models with the revision set aside; then, both put back, it upgrades to head and
        checks clean again."""
        changed = self.models()
        aside = revision.with_suffix(".aside")
        revision.rename(aside)
        self.restore_models(previous)
        try:
            self.succeed(["check"])
        finally:
            aside.rename(revision)
            self.restore_models(changed)
        self.succeed(["upgrade", "head"], ["check"])

    # --- running alembic -----------------------------------------------------------------

    def environment(
        self, database_url: str | None, *, verify_on_a_database: bool = False
    ) -> dict[str, str]:
        """This process's environment for a child in the copy: its database, and no
        other. A written revision is run on a throwaway database only when asked: the
        cycle of :func:`evolve` runs it on the copy's own."""
        environment = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DATABASE_URL", "TEST_DATABASE_URL", "PYTHONPATH", VERIFY_VARIABLE)
        }
        environment["DATABASE_URL"] = database_url or self.database_url
        # The copy's sources are rewritten within the same second, often at the same size:
        # a bytecode cache, checked by modification time and size, could serve the old text.
        environment["PYTHONDONTWRITEBYTECODE"] = "1"
        if not verify_on_a_database:
            environment[VERIFY_VARIABLE] = "offline"
        return environment

    def alembic(
        self,
        *commands: Sequence[str],
        database_url: str | None = None,
        verify_on_a_database: bool = False,
    ) -> list[Run]:
        """Run each of `commands` (``alembic`` arguments), in order, in one fresh child
        process started in the copy (:mod:`tests.support.alembic_batch`), stopping at the first
        that fails."""
        environment = self.environment(database_url, verify_on_a_database=verify_on_a_database)
        results = alembic_batch.run(str(self.root), environment, commands)
        runs = [
            Run(tuple(argv), code, stdout, stderr)
            for argv, (code, stdout, stderr) in zip(commands, results, strict=False)
        ]
        if len(runs) < len(commands) and (not runs or runs[-1].code == 0):
            raise CommandFailedError(f"the alembic child died after {len(runs)} commands")
        return runs

    def succeed(self, *commands: Sequence[str], database_url: str | None = None) -> list[Run]:
        """:meth:`alembic`, every command required to succeed."""
        runs = self.alembic(*commands, database_url=database_url)
        for run in runs:
            if run.code != 0:
                raise CommandFailedError(str(run))
        return runs

    def pytest(self, admin_url: URL, *arguments: str) -> subprocess.CompletedProcess[str]:
        """The copy's own tests (`arguments`: files, options) on the test server, as
        ``make test`` runs them there, with pytest-alembic's own tests left out."""
        environment = self.environment(None)
        environment["TEST_DATABASE_URL"] = child_url(admin_url)
        return subprocess.run(
            [
                *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
                *("-o", "addopts=-ra", *arguments),
            ],
            cwd=self.root,
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def cli(
        self, *arguments: str, database_url: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``python -m alembic <arguments>``, a process of its own, as CI runs it (started
        warm: :mod:`tests.support.warm_start`)."""
        return warm_start.run(
            [sys.executable, "-m", "alembic", *arguments],
            cwd=self.root,
            env=self.environment(database_url),
        )


def with_users(root: Path, url: URL, *users: str) -> Project:
    """A copy of the repository in `root` migrating `url` (a database at head, as an
    admin URL), with a verified user of each id in `users` to own rows: changes to live
    tables meet rows."""
    engine = new_engine(url)
    try:
        with engine.begin() as connection:
            for user in users:
                connection.exec_driver_sql(
                    """INSERT INTO "user" (id, name, email, "emailVerified")
                       VALUES (%(id)s, initcap(%(id)s), %(id)s || '@example.com', true)""",
                    {"id": user},
                )
    finally:
        engine.dispose()
    return Project.copy(root, child_url(url))


def registered(module: str, *names: str) -> str:
    """The line of ``models/__init__.py`` that registers `names` of ``models/<module>.py``."""
    return f"from models.{module} import {', '.join(names)}  # noqa: E402, F401\n"


#: What ``make revision`` writes into a revision that destroys data, for its author.
PLACEHOLDER = lint.DESTRUCTIVE_PLACEHOLDER


def acknowledged(path: Path, reason: str) -> None:
    """The revision at `path` says why it destroys data, as its author does: in the
    empty ``destructive_acknowledged`` that ``make revision`` wrote for it."""
    text = path.read_text()
    assert text.count(PLACEHOLDER) == 1, f"{path.name} was not flagged as destroying data"
    path.write_text(text.replace(PLACEHOLDER, f"destructive_acknowledged = {json.dumps(reason)}"))


def evolve(
    project: Project,
    message: str,
    change: Callable[[Project], None],
    *,
    acknowledge: str | None = None,
    squawk: dict[str, str] | None = None,
    said: list[Run] | None = None,
) -> str:
    """One model change through the cycle a reviewer asks for, with the plain CLI:
    ``revision --autogenerate``, ``upgrade head``, ``check``, ``downgrade -1``, ``check``
    against the previous models (the new revision set aside), ``upgrade head`` and
    ``check`` again. `acknowledge`, when given, fills the new revision's empty
    ``destructive_acknowledged`` (which must be there: the revision destroys data), and
    `squawk` is written as its ``squawk_acknowledged``, as its author would. Returns the
    revision's text; `said`, when given, gets the run of ``revision --autogenerate``."""
    previous = project.models()
    before = project.revision_files()
    change(project)
    generate = ["revision", "--autogenerate", "-m", message]
    cycle: list[Sequence[str]] = [["upgrade", "head"], ["check"], ["downgrade", "-1"]]
    edited = acknowledge is not None or squawk is not None
    # In one child when its author edits nothing in between: each child costs the
    # imports of the models and the machinery again.
    generated, *_ = project.succeed(generate, *([] if edited else cycle))
    if said is not None:
        said.append(generated)
    written = project.revision_files() - before
    assert len(written) == 1, f"{message!r} wrote {len(written)} revisions: {generated}"
    (path,) = written
    if acknowledge is not None:
        acknowledged(path, acknowledge)
    if squawk is not None:
        ours = f"squawk_acknowledged = {json.dumps(squawk)}\n\n\ndef upgrade()"
        path.write_text(path.read_text().replace("def upgrade()", ours, 1))
    if edited:
        project.succeed(*cycle)
    project.checked_without(path, previous)
    return path.read_text()


#: In the copy: squawk's findings on every revision the test wrote that the revision
#: neither answers nor may leave (advisory), as JSON. Each revision's SQL is rendered
#: as ``alembic upgrade <down>:<revision> --sql`` renders it, in this one process.
_SQUAWK = """
import io, json, sys
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from todo_database import lint
script = ScriptDirectory.from_config(Config("alembic.ini"))
open_findings = {}
for revision in script.walk_revisions():
    if revision.revision in sys.argv[1:]:
        config = Config("alembic.ini", output_buffer=io.StringIO(), stdout=io.StringIO())
        config.attributes["configure_logging"] = False
        command.upgrade(config, f"{lint.start_of(revision)}:{revision.revision}", sql=True)
        sql = config.output_buffer.getvalue()
        left = lint.unacknowledged(revision, lint.squawk_sql(sql, name=revision.revision))
        if left:
            open_findings[revision.revision] = [f.describe() for f in left]
print(json.dumps(open_findings))
"""


def calls(text: str, name: str) -> list[str]:
    """The ``op.<name>(...)`` calls in a revision's text, one string each, up to the
    closing parenthesis (the SQL in a revision's strings holds its parentheses in pairs)."""
    found = []
    for match in re.finditer(rf"\bop\.{name}\(", text):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            if depth == 0:
                break
        found.append(text[match.start() : end + 1])
    return found


def upgrade_part(revision: str) -> str:
    return revision.split("def upgrade()", 1)[1].split("def downgrade()", 1)[0]


def downgrade_part(revision: str) -> str:
    return revision.split("def downgrade()", 1)[1]


def linted_as_generated(project: Project, revisions: list[str]) -> None:
    """The generated revisions pass ruff as written, with the project's configuration,
    and squawk leaves nothing unanswered in them."""
    for arguments in (
        ["-m", "ruff", "check", "migrations/versions"],
        ["-m", "ruff", "format", "--check", "migrations/versions"],
    ):
        result = subprocess.run(
            [sys.executable, *arguments],
            cwd=project.root,
            env=project.environment(None),
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    squawked = warm_start.run(
        [sys.executable, "-c", _SQUAWK, *revisions],
        cwd=project.root,
        env=project.environment(None),
    )
    assert squawked.returncode == 0, squawked.stdout + squawked.stderr
    assert json.loads(squawked.stdout) == {}, squawked.stdout


def revision_id(text: str) -> str:
    match = re.search(r'^revision: str = "(\w+)"', text, re.M)
    assert match, text
    return match.group(1)


#: The copy's own derived test modules, run unchanged.
DERIVED = (
    "tests/isolation/test_isolation.py",
    "tests/isolation/test_isolation_properties.py",
    "tests/isolation/test_catalog_lint.py",
    "tests/isolation/test_query_plans.py",
)


def failed_tests(output: str) -> list[str]:
    return sorted(set(re.findall(r"^FAILED (\S+)", output, re.M)))
