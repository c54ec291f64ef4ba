"""Online forms: how long application writes wait while each online schema change runs.

One row per online form of docs/online.md, each a change to ``todo`` made in
a throwaway copy of the repository (:class:`tests.support.evolution.Project`) and turned into
a revision by the plain ``alembic revision --autogenerate`` there (the data migration,
``op.backfill``, is the one written by hand: no model change says it):

1. NOT NULL with a server default on ``description``, which the fill leaves NULL (the
   backfill touches every row);
2. a CHECK on the existing table;
3. a UNIQUE constraint on existing columns;
4. a new NOT NULL column with a volatile default (``gen_random_uuid()``);
5. a type change PostgreSQL makes in place (``label varchar(40)`` to ``varchar(80)``;
   the column is added to the copy first, by a generated revision of its own);
6. a declared rename (``description`` to ``details``, ``renamed_from``);
7. ``op.backfill`` of every row, in a data migration written by hand;
8. a dropped column (``destructive_acknowledged``), run with ``-x restore_point=off``:
   on Neon the restore point is a branch made through the API before the first
   statement, which takes no lock in the database.

Every revision is generated against a small database at the base (the template before
it is filled) and kept aside; each case then starts from that base (the models put
back, the other revisions away). The template at the base gets 1,000,000 todos over
10,000 users (:func:`writer_stall.fill_template`); each run copies it, and 4 writers
insert and update todos while the real ``alembic upgrade head`` runs in the copy
(:func:`writer_stall.writers_during`), as ``stall`` does; then, on another copy, the
same writers with no migration for as long (the baseline: a longer window meets more
of what happens anyway, a checkpoint, an autovacuum). Meanwhile a thread samples
``pg_locks`` and ``pg_stat_activity`` every :data:`SAMPLE_S` seconds (the baseline
too, so that both sides pay for the sampling): the longest ``now() - waitstart`` of a
lock not granted to a client session that is not a writer (the writers connect as
``todo-bench``) is the upgrade's own longest lock wait. The writers' waits are
sampled too, with what blocked them, and the longest write is told with what the
migration and the writers were doing while it waited: what explains a miss.
After each upgrade the database must check clean (``alembic check`` in the copy) and
keep every todo, or the benchmark fails. Target, as for ``stall``: the longest write
at most 100 ms longer than with no migration (medians).
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import URL

from tests.benchmarks.common import (
    BenchError,
    Benchmark,
    Completed,
    Options,
    Server,
    Stats,
    Table,
    duration,
    progress,
)
from tests.benchmarks.writer_stall import (
    BASELINE_S,
    QUICK_TODOS,
    QUICK_USERS,
    TODOS,
    USERS,
    WRITERS,
    Writers,
    fill_template,
    median_of,
    stall_table,
    writers_during,
)
from todo_database import lint

if TYPE_CHECKING:
    from tests.support.evolution import Project

RUNS = 2
#: How often the lock waits are sampled during an upgrade.
SAMPLE_S = 0.01
TODO = "models/todo.py"
#: Where a new column of ``todo`` goes in the model (before this field).
_NEW_FIELD = "    updated_at: datetime | None = Field("
#: Where a new constraint of ``todo`` goes (before its row-security info).
_NEW_CONSTRAINT = '        {"info": {ROW_SECURITY:'
_DESCRIPTION = "max_length=DESCRIPTION_MAX_LENGTH, sa_type=Text)"
_LABEL = '    label: str | None = Field(default=None, sa_column=Column("label", String(40)))\n'
_DESTRUCTIVE = "benchmark: label was never shown to anyone"
#: What a revision calls to keep its place, not a step of its own.
_BOOKKEEPING = ("transaction_committed_before", "mark_transaction_committed", "get_context", "f")
_FILL_DESCRIPTIONS = """def upgrade() -> None:
    # Written by hand: a data migration, no model change says it.
    with op.get_context().autocommit_block():
        op.backfill("todo", {"description": "'moved'"}, where="description IS NULL", key=["id"])
"""


def _imports(p: Project, *names: str) -> None:
    p.replace(TODO, "from sqlalchemy import ", f"from sqlalchemy import {', '.join(names)}, ")


def _add_label(p: Project) -> None:
    """The setup: a nullable ``label varchar(40)``, for the type change to widen."""
    _imports(p, "String")
    p.replace(TODO, _NEW_FIELD, _LABEL + _NEW_FIELD)


def _not_null(p: Project) -> None:
    p.replace(
        TODO,
        _DESCRIPTION,
        _DESCRIPTION[:-1] + ', nullable=False, sa_column_kwargs={"server_default": text("\'\'")})',
    )


def _check(p: Project) -> None:
    p.replace(
        TODO,
        _NEW_CONSTRAINT,
        '        CheckConstraint("char_length(title) < 1000", name="title_under_1000"),\n'
        + _NEW_CONSTRAINT,
    )


def _unique(p: Project) -> None:
    _imports(p, "UniqueConstraint")
    p.replace(
        TODO, _NEW_CONSTRAINT, '        UniqueConstraint("user_id", "id"),\n' + _NEW_CONSTRAINT
    )


def _volatile_default(p: Project) -> None:
    p.replace(
        TODO,
        _NEW_FIELD,
        '    public_id: uuid.UUID | None = Field(default=None, sa_column=Column("public_id", '
        'UUID(as_uuid=True), nullable=False, server_default=text("gen_random_uuid()")))\n'
        + _NEW_FIELD,
    )


def _widen(p: Project) -> None:
    p.replace(TODO, _LABEL, _LABEL.replace("String(40)", "String(80)"))


def _rename(p: Project) -> None:
    p.replace(
        TODO, "import models.base", "from models.base import renamed_from\nimport models.base"
    )
    p.replace(
        TODO,
        f"    description: str | None = Field(default=None, {_DESCRIPTION}",
        f"    details: str | None = Field(default=None, {_DESCRIPTION[:-1]}, "
        'sa_column_kwargs={"info": renamed_from("description")})',
    )
    p.replace(
        TODO,
        'char_length(description) <= {DESCRIPTION_MAX_LENGTH}", name="description_length"',
        'char_length(details) <= {DESCRIPTION_MAX_LENGTH}", name="details_length"',
    )


def _drop(p: Project) -> None:
    p.replace(TODO, _LABEL, "")


def _by_hand(text: str) -> str:
    """The data migration's body, in the file ``alembic revision -m`` wrote."""
    empty, imports = "def upgrade() -> None:\n    pass\n", "from collections.abc import Sequence\n"
    if empty not in text or imports not in text:
        raise BenchError("alembic revision -m no longer writes an empty upgrade()")
    if "from alembic import op" not in text:  # the ruff hook removed it, unused
        text = text.replace(imports, f"{imports}\nfrom alembic import op\n", 1)
    return text.replace(empty, _FILL_DESCRIPTIONS, 1)


def _acknowledged(text: str) -> str:
    """The empty ``destructive_acknowledged`` make revision wrote, filled as its author
    would."""
    if lint.DESTRUCTIVE_PLACEHOLDER not in text:
        raise BenchError("make revision no longer flags a dropped column as destroying data")
    filled = f"{lint.DESTRUCTIVE_ACKNOWLEDGED} = {json.dumps(_DESTRUCTIVE)}"
    return text.replace(lint.DESTRUCTIVE_PLACEHOLDER, filled, 1)


@dataclass(frozen=True)
class Case:
    """One online form: the model change (None: none, a data migration written by
    hand), the edit its author makes to the written revision, the upgrade's options."""

    title: str
    message: str
    change: Callable[[Project], None] | None
    edit: Callable[[str], str] | None = None
    options: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


CASES = (
    Case("NOT NULL with a server default (every row NULL)", "todo description required", _not_null),
    Case("CHECK on the existing table", "todo title under 1000", _check),
    Case("UNIQUE on existing columns (user_id, id)", "todo user_id id unique", _unique),
    Case(
        "new NOT NULL column, volatile default gen_random_uuid()",
        "todo public id",
        _volatile_default,
    ),
    Case("type change in place, varchar(40) to varchar(80)", "todo label wider", _widen),
    Case("declared rename, description to details", "todo description renamed", _rename),
    Case(
        "op.backfill of every row, a data migration by hand",
        "todo descriptions filled",
        None,
        _by_hand,
    ),
    Case(
        "dropped column (destructive_acknowledged), -x restore_point=off",
        "todo label dropped",
        _drop,
        _acknowledged,
        ("-x", "restore_point=off"),
        (
            "run with -x restore_point=off: on Neon the restore point is a branch made "
            "through the API before the first statement, which takes no lock in the database",
        ),
    ),
)


@dataclass(frozen=True)
class Written:
    """A case's revision as written, and the models it goes with."""

    case: Case
    models: dict[Path, str]
    path: Path
    text: str

    @contextmanager
    def in_place(self, project: Project, base: dict[Path, str]) -> Iterator[None]:
        """The copy with this case's models and revision, put back to `base` after."""
        project.restore_models(self.models)
        self.path.write_text(self.text)
        try:
            yield
        finally:
            self.path.unlink()
            project.restore_models(base)

    def steps(self) -> str:
        """What its upgrade calls, in order: in its transaction, then after it commits
        (in its ``autocommit_block()``)."""
        upgrade = self.text.split("def upgrade()", 1)[1].split("def downgrade()", 1)[0]
        parts = upgrade.split("autocommit_block():", 1)
        said = []
        for where, part in zip(("in its transaction", "after it commits"), parts, strict=False):
            calls = [c for c in re.findall(r"\bop\.(\w+)\(", part) if c not in _BOOKKEEPING]
            if calls:
                said.append(f"{where}: {', '.join(calls)}")
        return "; ".join(said)


def _generate(project: Project, case: Case) -> Written:
    """`case`'s revision, written in the copy at the base (against its database), then
    set aside with the models it goes with; the copy is left at the base."""
    base, before = project.models(), project.revision_files()
    if case.change is not None:
        case.change(project)
    models = project.models()
    arguments = ["revision", "-m", case.message]
    if case.change is not None:
        arguments.insert(1, "--autogenerate")
    ran = project.cli(*arguments)
    written = project.revision_files() - before
    project.restore_models(base)
    if ran.returncode != 0 or len(written) != 1:
        for path in written:
            path.unlink()
        output = (ran.stdout + ran.stderr).strip()
        raise BenchError(f"alembic {' '.join(arguments)} exited {ran.returncode}: {output}")
    (path,) = written
    text = path.read_text()
    path.unlink()
    return Written(case, models, path, case.edit(text) if case.edit else text)


@dataclass(frozen=True)
class Wait:
    """A lock wait seen: how long, and on what."""

    seconds: float = 0.0
    what: str = ""


#: Every client session of the database but this one: whether it is a writer, what it
#: runs (or ran last, and its state), what it waits for (an event; a lock, how long), and
#: what holds that lock.
_SAMPLE = """
WITH waiting AS MATERIALIZED (
    SELECT pid, extract(epoch FROM now() - waitstart)::float8 AS seconds,
           concat_ws(' ', locktype, mode, 'on ' || relation::regclass::text) AS lock
    FROM pg_locks WHERE NOT granted AND waitstart IS NOT NULL
)
SELECT a.application_name = %(writers)s,
       a.application_name || ': ' || left(regexp_replace(a.query, '[[:space:]]+', ' ', 'g'), 160)
       || CASE WHEN a.state <> 'active' THEN ' (' || a.state || ')' ELSE '' END,
       a.state = 'idle',
       a.wait_event_type || ' ' || a.wait_event,
       w.seconds, w.lock,
       CASE WHEN w.pid IS NOT NULL THEN
           (SELECT string_agg(
                coalesce(nullif(b.application_name, ''), b.backend_type) || ': '
                || left(regexp_replace(b.query, '[[:space:]]+', ' ', 'g'), 160), ' | ')
            FROM pg_stat_activity b WHERE b.pid = ANY (pg_blocking_pids(a.pid)))
       END
FROM pg_stat_activity a LEFT JOIN waiting w ON w.pid = a.pid
WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
  AND a.backend_type = 'client backend'
"""


@dataclass(frozen=True)
class Sample:
    """What the database did at `at` (``time.perf_counter()``): whether the migration
    had a session yet (any client session but the writers'), what they ran and waited
    for, and what writers waited for."""

    at: float
    connected: bool
    statements: tuple[str, ...]
    migration_waits: tuple[str, ...]
    writer_waits: tuple[str, ...]


def _counted(things: Iterable[str]) -> str:
    """``LWLock WALWrite: 14, IO WalSync: 5``, the most frequent first."""
    return ", ".join(f"{what}: {n}" for what, n in Counter(things).most_common()) or "none"


@dataclass
class Sampler:
    """Samples of `url` every :data:`SAMPLE_S` while :meth:`sampling`: the longest lock
    wait of the upgrade's own sessions (every one but the writers') and of the writers
    (with what blocked them), and what each was doing."""

    server: Server
    url: URL
    upgrade: Wait = field(default_factory=Wait)
    writers: Wait = field(default_factory=Wait)
    samples: list[Sample] = field(default_factory=list)
    started: float = 0.0
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self, writers: str) -> None:
        try:
            with self.server.connect(self.url) as connection:
                while not self._stop.wait(SAMPLE_S):
                    rows = connection.execute(_SAMPLE, {"writers": writers}).fetchall()
                    self._note(rows)
        except Exception as exc:  # noqa: BLE001  (reported, not hidden)
            self.errors.append(str(exc).splitlines()[0])

    def _note(self, rows: list[tuple[Any, ...]]) -> None:
        statements, migration_waits, writer_waits = [], [], []
        connected = False
        for writer, doing, idle, event, seconds, lock, blockers in rows:
            waits = f"{event} ({lock})" if lock else event
            wait = Wait(seconds or 0.0, f"{lock}{f' behind {blockers}' if blockers else ''}")
            if writer:
                writer_waits += [waits] if event and not idle else []
                if wait.seconds > self.writers.seconds:
                    self.writers = Wait(wait.seconds, f"{wait.what}: {doing}")
            else:
                connected = True
                statements += [] if idle else [doing]
                migration_waits += [waits] if event and not idle else []
                if wait.seconds > self.upgrade.seconds:
                    self.upgrade = Wait(wait.seconds, f"{wait.what}: {doing}")
        self.samples.append(
            Sample(
                time.perf_counter(),
                connected,
                tuple(statements),
                tuple(migration_waits),
                tuple(writer_waits),
            )
        )

    @contextmanager
    def sampling(self) -> Iterator[Sampler]:
        # The writers connect as every benchmark session does (Server.connect): the name
        # this session gets is theirs, and they must be there to be told apart.
        with self.server.connect(self.url) as connection:
            row = connection.execute(
                "SELECT current_setting('application_name'), count(*) FILTER (WHERE "
                "application_name = current_setting('application_name') "
                "AND pid <> pg_backend_pid()) FROM pg_stat_activity "
                "WHERE datname = current_database()"
            ).fetchone()
        if row is None or row[1] < WRITERS:
            raise BenchError(f"the {WRITERS} writers are not in pg_stat_activity: {row}")
        thread = threading.Thread(target=self._sample, args=(str(row[0]),))
        self.started = time.perf_counter()
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()
        if self.errors:
            raise BenchError(f"sampling pg_locks failed: {self.errors[0]}")

    def during(self, slowest: tuple[float, float, str]) -> str:
        """What the database did while the write `slowest` (:attr:`Writers.slowest`)
        waited, from the samples taken then."""
        seconds, started, what = slowest
        seen = [s for s in self.samples if started <= s.at <= started + seconds + SAMPLE_S]
        head = f"{what} of {duration(seconds)} at {started - self.started:+.2f} s of the upgrade"
        if not seen:
            return f"{head}, outside the upgrade's samples"
        statements = dict.fromkeys(st for sample in seen for st in sample.statements)
        if statements:
            migration = (
                f"the migration ran {' / '.join(statements)} (waiting for "
                f"{_counted(w for sample in seen for w in sample.migration_waits)})"
            )
        elif any(sample.connected for sample in seen):
            migration = "the migration's sessions were idle (its Python at work)"
        elif any(sample.connected for sample in self.samples if sample.at < started):
            migration = "the migration's sessions closed (alembic exiting)"
        else:
            migration = "no session of the migration yet (alembic starting)"
        return (
            f"{head}, {len(seen)} samples: {migration}; writers waited for "
            f"{_counted(w for sample in seen for w in sample.writer_waits)}"
        )


@dataclass
class Measured:
    """A case's figures over its runs, and the samples of each upgrade."""

    baseline: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    windows: list[float] = field(default_factory=list)
    samplers: list[Sampler] = field(default_factory=list)
    slowest: list[tuple[float, float, str]] = field(default_factory=list)
    todos: list[int] = field(default_factory=list)
    said: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Live:
    """What every run shares: the server, the copy at the base, the filled template and
    the ids of some of its todos, for the writers to update."""

    server: Server
    project: Project
    template: URL
    users: int
    todos: int
    ids: list[str]

    def measure(self, written: Written, runs: int) -> Measured:
        measured = Measured()
        for index in range(runs):
            progress(f"online: {written.case.title}, run {index + 1}/{runs}")
            started = time.perf_counter()
            with self.server.throwaway("online", template=str(self.template.database)) as url:
                self._once(written, url, measured)
            progress(
                f"  {time.perf_counter() - started:.0f} s; longest write "
                f"{duration(measured.baseline[-1])} alone, {duration(measured.during[-1])} "
                f"during the upgrade; its longest lock wait "
                f"{duration(measured.samplers[-1].upgrade.seconds)}"
            )
        return measured

    def _writers(self, url: URL, during: Callable[[], object]) -> tuple[Writers, float]:
        return writers_during(self.server, url, self.users, self.ids, during)

    def _once(self, written: Written, url: URL, measured: Measured) -> None:
        """One run on `url`: the upgrade with its lock waits, then the check and the
        count; then the baseline, on another copy of the template, for as long as the
        upgrade took (a longer window meets more of what happens anyway: a checkpoint,
        an autovacuum). The baseline is sampled too, so that both sides pay for the
        sampling alike."""
        server, root = self.server, self.project.root
        sampler = Sampler(server, url)
        ran: list[Completed] = []
        command = [*written.case.options, "upgrade", "head"]

        def upgrade() -> None:
            with sampler.sampling():
                ran.append(server.alembic(command, url, cwd=root))

        writers, window = self._writers(url, upgrade)
        measured.during.append(max(writers.latencies))
        measured.slowest.append(writers.slowest)
        measured.windows.append(window)
        measured.samplers.append(sampler)
        measured.said = [
            line.strip()
            for line in (ran[0].stdout + ran[0].stderr).splitlines()
            if "restore point" in line.lower() or line.startswith("WARNING")
        ]
        checked = server.alembic(["check"], url, check=False, cwd=root)
        if checked.returncode != 0:
            raise BenchError(
                f"{written.case.title}: alembic check after the upgrade: {checked.tail(10)}\n"
                f"{written.path.name}:\n{written.text}"
            )
        with server.connect(url) as connection:
            row = connection.execute("SELECT count(*) FROM todo").fetchone()
        count = int(row[0]) if row else 0
        if count < self.todos:
            raise BenchError(f"{written.case.title}: {count:,} todos left of {self.todos:,}")
        measured.todos.append(count)

        with server.throwaway("online_quiet", template=str(self.template.database)) as quiet:
            idle = Sampler(server, quiet)

            def nothing() -> None:
                with idle.sampling():
                    time.sleep(max(BASELINE_S, window))

            measured.baseline.append(max(self._writers(quiet, nothing)[0].latencies))


def _table(number: int, written: Written, measured: Measured, runs: int, todos: int) -> Table:
    case = written.case
    table = stall_table(
        f"6.{number} online forms: {case.title}, {todos:,} todos, {WRITERS} writers "
        f"({median_of(runs)})",
        baseline=Stats.of(measured.baseline),
        during=Stats.of(measured.during),
        windows=Stats.of(measured.windows),
    )
    waits = Stats.of([sampler.upgrade.seconds for sampler in measured.samplers])
    table.rows.append(
        (
            "upgrade's own longest lock wait",
            duration(waits.median),
            duration(waits.low),
            duration(waits.high),
        )
    )
    how = "autogenerated" if case.change is not None else "written by hand"
    table.notes.append(f"revision {how} ({case.message!r}), upgrade: {written.steps()}")
    table.notes += list(case.notes) + measured.said
    worst = max(measured.samplers, key=lambda sampler: sampler.upgrade.seconds)
    if worst.upgrade.what:
        table.notes.append(
            f"upgrade's longest lock wait: {duration(worst.upgrade.seconds)} {worst.upgrade.what}"
        )
    writer = max(measured.samplers, key=lambda sampler: sampler.writers.seconds)
    if writer.writers.what:
        table.notes.append(
            f"writers' longest lock wait: {duration(writer.writers.seconds)} {writer.writers.what}"
        )
    run = max(range(len(measured.during)), key=measured.during.__getitem__)
    table.notes.append(
        f"longest write during an upgrade (run {run + 1}): "
        + measured.samplers[run].during(measured.slowest[run])
    )
    table.notes.append(
        f"after each upgrade: alembic check clean, {min(measured.todos):,} todos or more"
    )
    return table


def _prepare(server: Server, project: Project, template: URL) -> list[Written]:
    """The copy and `template` at the base (with ``label``), and every case's revision
    written against it."""
    server.alembic(["upgrade", "head"], template, cwd=project.root)
    _add_label(project)
    progress("online: the base: todo.label, a revision of its own...")
    ran = project.cli("revision", "--autogenerate", "-m", "todo label")
    if ran.returncode != 0:
        raise BenchError(f"the base revision (todo.label): {ran.stdout}{ran.stderr}")
    server.alembic(["upgrade", "head"], template, cwd=project.root)
    written = []
    for case in CASES:
        progress(f"online: writing the revision: {case.title}...")
        written.append(_generate(project, case))
    return written


def run(server: Server, options: Options) -> list[Table]:
    # Imported here: tests.support.evolution's fixtures module points DATABASE_URL elsewhere.
    from tests.support.evolution import Project

    users, todos = (QUICK_USERS, QUICK_TODOS) if options.quick else (USERS, TODOS)
    runs = options.runs(RUNS)
    tables: list[Table] = []
    with (
        tempfile.TemporaryDirectory(prefix="todo-bench-online-") as directory,
        server.throwaway("online_template") as template,
    ):
        project = Project.copy(
            Path(directory) / "project", template.render_as_string(hide_password=False)
        )
        cases = _prepare(server, project, template)
        base = project.models()
        progress(f"online: filling {todos:,} todos over {users:,} users...")
        ids = fill_template(server, template, users, todos)
        live = Live(server, project, template, users, todos, ids)
        for number, written in enumerate(cases, start=1):
            with written.in_place(project, base):
                measured = live.measure(written, runs)
            tables.append(_table(number, written, measured, runs, todos))
    return tables


BENCHMARK = Benchmark(
    "online",
    "the longest write while each online form of a schema change runs on a live table",
    run,
)
