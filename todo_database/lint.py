"""squawk, the PostgreSQL migration linter, over a revision's offline SQL.

One invocation for the test that gates every revision (``tests/chain/test_squawk.py``) and
for the schema review (``make review``): the revision's SQL is rendered by
``alembic upgrade <down>:<revision> --sql`` in a child process, exactly as a deploy
would run it, and squawk lints it with the rules in ``.squawk.toml``.

A revision that must break a rule acknowledges it, with a reason, in a module-level
``squawk_acknowledged`` mapping of rule name to reason. The rules that forbid
destroying data (``ban-drop-table``, ``ban-drop-column``...) are acknowledged by the
revision's ``destructive_acknowledged`` reason, the one the schema review asks for:
one reason for one decision. Advisory, shown by the review and failing nothing: the
rules that prefer one column type to another (``prefer-bigint-over-int``...), which say
nothing about what a deploy does to a live table, and ``ban-drop-constraint``: dropping
a CHECK or a foreign key loosens a rule the models no longer declare, loses no row, and
waits for its lock no longer than ``lock_timeout``; ``ban-drop-type``: PostgreSQL drops
a type only once no column uses it, so the data went with the column or table, whose
drop asks for the acknowledgement.

Renames: squawk's ``renaming-table``, ``renaming-column`` and ``renaming-object`` are
answered by the models' own declaration (``renamed_from``,
:mod:`todo_database.autogenerate.renames`), which the generated upgrade lists in its
docstring: a rename statement the list holds is acknowledged; any other rename needs
its ``squawk_acknowledged`` reason.

What a revision destroys (:func:`data_losses`) is read here too, from the SQL its
upgrade runs, for everyone who asks: ``make revision`` (which writes the
acknowledgement for its author to fill), the test that gates every revision, the
review, and the deploy's restore point (:func:`upgrade_losses`, rendered in process).
"""

from __future__ import annotations

import inspect
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import Script

from todo_database.deploy import cli as alembic_cli
from todo_database.deploy import runner
from todo_database.deploy.database import PROJECT_ROOT

#: squawk as installed next to this interpreter (squawk-cli), else the one on PATH.
SQUAWK = shutil.which("squawk", path=str(Path(sys.executable).parent)) or "squawk"

#: The module-level mapping in which a revision acknowledges a rule: ``{rule: reason}``.
ACKNOWLEDGED = "squawk_acknowledged"
#: The module-level string in which a revision acknowledges the data its upgrade drops.
DESTRUCTIVE_ACKNOWLEDGED = "destructive_acknowledged"
#: What ``make revision`` writes into a revision that destroys data, for its author to
#: fill: an empty reason, which the tests and the review refuse.
DESTRUCTIVE_PLACEHOLDER = f'{DESTRUCTIVE_ACKNOWLEDGED} = ""'

#: Rules against destroying data: acknowledged by :data:`DESTRUCTIVE_ACKNOWLEDGED`.
DESTROYING_RULES = frozenset(
    {"ban-drop-column", "ban-drop-table", "ban-drop-database", "ban-truncate-cascade"}
)
#: Rules about the choice of a column's type, or about loosening a rule or dropping a
#: type the models no longer declare, not about long locks or lost data: advisory.
ADVISORY_RULES = frozenset(
    {
        "ban-char-field",
        "ban-drop-constraint",
        "ban-drop-type",
        "prefer-bigint-over-int",
        "prefer-bigint-over-smallint",
        "prefer-identity",
        "prefer-text-field",
        "prefer-timestamp-tz",
    }
)


#: Rules against renaming a table, a column, an index, a constraint or a sequence: for
#: the renames the models declare, answered by that declaration (:func:`listed_renames`).
RENAMING_RULES = frozenset({"renaming-column", "renaming-object", "renaming-table"})
#: The first line of the docstring in which an upgrade lists the renames the models
#: declared (written by :mod:`todo_database.autogenerate.renames`), one
#: :meth:`Rename.listed` a line.
RENAMES_LISTED = "Renames declared in the models (renamed_from); the rows stay."
#: The reason shown for a rename the upgrade lists.
DECLARED_RENAME = "declared in the models (renamed_from), listed in the upgrade's docstring"


class LintError(Exception):
    """SQL that could not be rendered or linted, explained in one line."""


@dataclass(frozen=True)
class Finding:
    """One squawk violation: where, which rule, and what to do about it."""

    line: int
    rule: str
    message: str
    help: str = ""
    level: str = "Warning"
    #: The statement squawk points at (from its line to its semicolon).
    statement: str = ""

    def describe(self) -> str:
        return f"line {self.line}: {self.rule}: {self.message} ({self.help})"


@dataclass(frozen=True, order=True)
class Rename:
    """One thing a statement renames: a ``table``, ``column``, ``constraint``, ``index``
    or ``sequence``; `table` is the table a column or constraint is on."""

    kind: str
    old: str
    new: str
    table: str | None = None

    def listed(self) -> str:
        """As an upgrade's docstring lists it: ``column task.name → title``."""
        on = f"{self.table}." if self.table else ""
        return f"{self.kind} {on}{self.old} → {self.new}"


_LISTED = re.compile(r"^(table|column|constraint|index|sequence) (?:(\S+)\.)?(\S+) → (\S+)$")

_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_NAME = rf"{_IDENTIFIER}(?:\s*\.\s*{_IDENTIFIER})?"
_ALTER = r"^\s*ALTER\s+{what}\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<name>" + _NAME + r")\s+RENAME\s+"
_RENAMES = (
    (
        "table",
        re.compile(_ALTER.format(what="TABLE") + rf"TO\s+(?P<new>{_IDENTIFIER})", re.I | re.M),
    ),
    (
        "constraint",
        re.compile(
            _ALTER.format(what="TABLE")
            + rf"CONSTRAINT\s+(?P<old>{_IDENTIFIER})\s+TO\s+(?P<new>{_IDENTIFIER})",
            re.I | re.M,
        ),
    ),
    (
        "column",
        re.compile(
            _ALTER.format(what="TABLE")
            + rf"(?:COLUMN\s+)?(?P<old>{_IDENTIFIER})\s+TO\s+(?P<new>{_IDENTIFIER})",
            re.I | re.M,
        ),
    ),
    (
        "index",
        re.compile(_ALTER.format(what="INDEX") + rf"TO\s+(?P<new>{_IDENTIFIER})", re.I | re.M),
    ),
    (
        "sequence",
        re.compile(_ALTER.format(what="SEQUENCE") + rf"TO\s+(?P<new>{_IDENTIFIER})", re.I | re.M),
    ),
)


def _unquoted(name: str) -> str:
    """``public."user"`` -> ``user``; unquoted names fold to lower case, as in SQL."""
    last: str = re.findall(_IDENTIFIER, name)[-1]
    return last[1:-1].replace('""', '"') if last.startswith('"') else last.lower()


def renames_in(sql: str) -> list[Rename]:
    """What `sql`'s statements rename, in order (comments skipped)."""
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    found: list[tuple[int, Rename]] = []
    for kind, pattern in _RENAMES:
        for match in pattern.finditer(sql):
            groups = match.groupdict()
            name, new = _unquoted(groups["name"]), _unquoted(groups["new"])
            if kind in ("column", "constraint"):
                if kind == "column" and groups["old"].upper() in ("CONSTRAINT", "COLUMN"):
                    continue
                found.append((match.start(), Rename(kind, _unquoted(groups["old"]), new, name)))
            else:
                found.append((match.start(), Rename(kind, name, new)))
    return [rename for _, rename in sorted(found)]


def listed_renames(module: ModuleType) -> set[Rename]:
    """The renames `module` (a revision) lists in its upgrade's docstring: those the
    models declared when it was written."""
    doc = inspect.getdoc(getattr(module, "upgrade", None)) or ""
    lines = doc.splitlines()
    if not lines or lines[0].strip() != RENAMES_LISTED:
        return set()
    found = set()
    for line in lines[1:]:
        if match := _LISTED.match(line.strip()):
            kind, table, old, new = match.groups()
            found.add(Rename(kind, old, new, table))
    return found


# --- what a revision destroys ---------------------------------------------------------

_DROP_TABLE = re.compile(r"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<names>[^;]+)", re.I | re.M)
_TRUNCATE = re.compile(r"^\s*TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?(?P<names>[^;]+)", re.I | re.M)
_DELETE = re.compile(rf"^\s*DELETE\s+FROM\s+(?:ONLY\s+)?(?P<table>{_NAME})", re.I | re.M)
_ALTER_TABLE = re.compile(
    rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{_NAME})\s+(?P<actions>[^;]+)",
    re.I | re.M,
)
_DROP_COLUMN = re.compile(
    rf"(?:^|,)\s*DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?(?P<column>{_IDENTIFIER})", re.I
)
_NAME_AT_START = re.compile(rf"\s*(?P<name>{_NAME})")


def _names(listing: str) -> list[str]:
    names = []
    for piece in listing.split(","):
        match = _NAME_AT_START.match(piece)
        if match:
            names.append(_unquoted(match["name"]))
    return names


@dataclass(frozen=True, order=True)
class Loss:
    """Data a statement destroys: a table, a column, every row of a table (`truncate`)
    or some of them (`delete`)."""

    table: str
    column: str | None = None
    truncate: bool = False
    delete: bool = False

    def describe(self, name: Callable[[str], str] = str) -> str:
        """``column note.mood``, ``table note``...; `name` dresses a name (the review
        writes it as code)."""
        if self.truncate:
            return f"every row of table {name(self.table)} (TRUNCATE)"
        if self.delete:
            return f"rows of table {name(self.table)} (DELETE)"
        if self.column is None:
            return f"table {name(self.table)}"
        return f"column {name(f'{self.table}.{self.column}')}"


def describe_losses(losses: list[Loss]) -> str:
    """``column note.mood, table note_link``."""
    return ", ".join(loss.describe() for loss in losses)


def data_losses(sql: str) -> list[Loss]:
    """The tables and columns `sql` drops, the tables it empties and those it deletes
    rows from (Alembic's own ``alembic_version`` aside), read from the statements
    themselves (a statement starts a line, as rendered SQL has it)."""
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    losses: set[Loss] = set()
    for match in _DROP_TABLE.finditer(sql):
        losses.update(Loss(table) for table in _names(match["names"]))
    for match in _TRUNCATE.finditer(sql):
        losses.update(Loss(table, truncate=True) for table in _names(match["names"]))
    for match in _DELETE.finditer(sql):
        losses.add(Loss(_unquoted(match["table"]), delete=True))
    for match in _ALTER_TABLE.finditer(sql):
        table = _unquoted(match["table"])
        for drop in _DROP_COLUMN.finditer(match["actions"]):
            if drop["column"].upper() != "CONSTRAINT":
                losses.add(Loss(table, _unquoted(drop["column"])))
    return sorted(loss for loss in losses if loss.table != "alembic_version")


@dataclass(frozen=True)
class TypeChange:
    """``ALTER TABLE <table> ALTER COLUMN <column> TYPE <type> [USING <using>]``."""

    table: str
    column: str
    type: str
    using: str | None = None


_ALTER_COLUMN_TYPE = re.compile(
    rf"(?:^|,)\s*ALTER\s+(?:COLUMN\s+)?(?P<column>{_IDENTIFIER})\s+(?:SET\s+DATA\s+)?TYPE\s+",
    re.I,
)
_USING = re.compile(r"\s+USING\s+", re.I)


def _up_to_top_level_comma(text: str) -> str:
    depth, quoted = 0, False
    for index, character in enumerate(text):
        if character == "'":
            quoted = not quoted
        elif not quoted and character in "()":
            depth += 1 if character == "(" else -1
        elif not quoted and depth == 0 and character == ",":
            return text[:index]
    return text


def type_changes(sql: str) -> list[TypeChange]:
    """The column type changes `sql`'s statements make, in order."""
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    found = []
    for match in _ALTER_TABLE.finditer(sql):
        table, actions = _unquoted(match["table"]), match["actions"]
        for change in _ALTER_COLUMN_TYPE.finditer(actions):
            written = _up_to_top_level_comma(actions[change.end() :]).strip()
            type_, *using = _USING.split(written, maxsplit=1)
            column = _unquoted(change["column"])
            found.append(
                TypeChange(table, column, type_.strip(), using[0].strip() if using else None)
            )
    return found


def rendered_upgrade(module: ModuleType) -> str:
    """The SQL `module`'s (a revision's) ``upgrade()`` emits, rendered offline in this
    process as ``alembic upgrade --sql`` renders it (without the session settings,
    transactions and version-table updates around it): a few milliseconds, where the
    command costs a Python start."""
    # The project's operations (op.lock_tables, op.create_policy...), as env.py has them.
    runner.register_operations()

    output = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql",
        # As env.py renders offline: for psql, a % stays one.
        dialect_opts={"paramstyle": "named"},
        opts={"as_sql": True, "output_buffer": output, "literal_binds": True},
    )
    with Operations.context(context):
        module.upgrade()
    return output.getvalue()


def upgrade_losses(module: ModuleType) -> list[Loss]:
    """What `module`'s (a revision's) upgrade destroys, read from its SQL."""
    return data_losses(rendered_upgrade(module))


def start_of(revision: Script) -> str:
    """What `revision` upgrades from: its down revision, or ``base`` for the first."""
    down = revision.down_revision
    if down is None:
        return "base"
    if not isinstance(down, str):
        raise LintError(f"{revision.revision} merges {len(down)} revisions: no single start")
    return down


#: A revision's SQL as rendered, or why it could not be.
Rendered = str | LintError


def offline_sql(
    revisions: Sequence[Script], root: Path = PROJECT_ROOT
) -> list[tuple[Rendered, Rendered]]:
    """The SQL each of `revisions` runs (``--sql``), upgrading and downgrading, rendered
    by `root`'s own Alembic set-up, every span in one child process."""
    spans: list[tuple[str, str] | LintError] = []
    for revision in revisions:
        try:
            start = start_of(revision)
        except LintError as exc:
            spans.append(exc)
        else:
            spans.append((f"{start}:{revision.revision}", f"{revision.revision}:{start}"))
    commands = [
        [verb, span, "--sql"]
        for pair in spans
        if not isinstance(pair, LintError)
        for verb, span in zip(("upgrade", "downgrade"), pair, strict=True)
    ]
    results = iter(alembic_cli.run_each(commands, cwd=root) if commands else ())
    return [
        (pair, pair)
        if isinstance(pair, LintError)
        else (_sql_or_error(next(results)), _sql_or_error(next(results)))
        for pair in spans
    ]


def _sql_or_error(result: subprocess.CompletedProcess[str]) -> Rendered:
    if result.returncode == 0:
        return result.stdout
    verb, span, _ = result.args[1:]
    reason = alembic_cli.failure_reason(result)
    return LintError(f"alembic {verb} {span} --sql failed: {reason}")


def squawk(sql_file: Path, root: Path = PROJECT_ROOT) -> list[Finding]:
    """squawk's findings on `sql_file`, with the configuration in `root`/.squawk.toml."""
    result = subprocess.run(
        [SQUAWK, "--reporter", "json", str(sql_file)],
        cwd=root,  # where .squawk.toml is
        capture_output=True,
        text=True,
        check=False,
    )
    if not result.stdout.strip():
        raise LintError(f"squawk gave no report: {result.stderr.strip() or 'no output'}")
    lines = sql_file.read_text().splitlines()
    return [
        Finding(
            line=int(violation["line"]),
            rule=str(violation["rule_name"]),
            message=str(violation["message"]),
            help=str(violation.get("help") or ""),
            level=str(violation.get("level") or "Warning"),
            statement=_statement_at(lines, int(violation["line"])),
        )
        for violation in json.loads(result.stdout)
    ]


def _statement_at(lines: list[str], line: int) -> str:
    """The statement that starts at `line` (squawk counts from 0), up to its semicolon."""
    taken = []
    for text in lines[line:]:
        taken.append(text)
        if ";" in text:
            break
    return "\n".join(taken)


def squawk_sql(sql: str, root: Path = PROJECT_ROOT, *, name: str = "revision") -> list[Finding]:
    """squawk's findings on `sql` (written to a temporary file named after `name`)."""
    with tempfile.TemporaryDirectory(prefix="todo-squawk-") as directory:
        sql_file = Path(directory) / f"{name}.sql"
        sql_file.write_text(sql)
        return squawk(sql_file, root)


def acknowledged(module: ModuleType) -> dict[str, str]:
    """The rules `module` (a revision) acknowledges, with their reasons as written."""
    mapping = getattr(module, ACKNOWLEDGED, {})
    if not isinstance(mapping, Mapping):
        return {}
    return {str(rule): str(reason) for rule, reason in mapping.items()}


def destructive_reason(module: ModuleType) -> str | None:
    """Why `module` (a revision) may destroy data, when it says so: the placeholder
    ``make revision`` writes (an empty string) says nothing."""
    reason = getattr(module, DESTRUCTIVE_ACKNOWLEDGED, None)
    return reason.strip() or None if isinstance(reason, str) else None


def reason_for(module: ModuleType, finding: Finding) -> str | None:
    """The reason `module` gives for `finding`, if it gives one."""
    if finding.rule in DESTROYING_RULES and (reason := destructive_reason(module)):
        return reason
    if finding.rule in RENAMING_RULES:
        renamed = set(renames_in(finding.statement))
        if renamed and renamed <= listed_renames(module):
            return DECLARED_RENAME
    return acknowledged(module).get(finding.rule, "").strip() or None


def unacknowledged(revision: Script, findings: list[Finding]) -> list[Finding]:
    """The findings on `revision` that must be fixed or acknowledged: neither advisory
    nor given a (non-empty) reason."""
    return [
        finding
        for finding in findings
        if finding.rule not in ADVISORY_RULES and reason_for(revision.module, finding) is None
    ]
