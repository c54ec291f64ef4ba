"""squawk, the PostgreSQL migration linter, over a revision's offline SQL.

One invocation for the test that gates every revision (``tests/test_squawk.py``) and
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
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from alembic.script import Script

from migrations import alembic_cli
from migrations.database import PROJECT_ROOT

#: squawk as installed next to this interpreter (squawk-cli), else the one on PATH.
SQUAWK = shutil.which("squawk", path=str(Path(sys.executable).parent)) or "squawk"

#: The module-level mapping in which a revision acknowledges a rule: ``{rule: reason}``.
ACKNOWLEDGED = "squawk_acknowledged"
#: The module-level string in which a revision acknowledges the data its upgrade drops.
DESTRUCTIVE_ACKNOWLEDGED = "destructive_acknowledged"

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

    def describe(self) -> str:
        return f"line {self.line}: {self.rule}: {self.message} ({self.help})"


def start_of(revision: Script) -> str:
    """What `revision` upgrades from: its down revision, or ``base`` for the first."""
    down = revision.down_revision
    if down is None:
        return "base"
    if not isinstance(down, str):
        raise LintError(f"{revision.revision} merges {len(down)} revisions: no single start")
    return down


def offline_sql(revision: Script, root: Path = PROJECT_ROOT, *, downgrade: bool = False) -> str:
    """The SQL `revision` runs (``--sql``), rendered by `root`'s own Alembic set-up."""
    start = start_of(revision)
    span = f"{revision.revision}:{start}" if downgrade else f"{start}:{revision.revision}"
    verb = "downgrade" if downgrade else "upgrade"
    result = alembic_cli.run([verb, span, "--sql"], cwd=root)
    if result.returncode != 0:
        reason = alembic_cli.failure_reason(result)
        raise LintError(f"alembic {verb} {span} --sql failed: {reason}")
    return result.stdout


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
    return [
        Finding(
            line=int(violation["line"]),
            rule=str(violation["rule_name"]),
            message=str(violation["message"]),
            help=str(violation.get("help") or ""),
            level=str(violation.get("level") or "Warning"),
        )
        for violation in json.loads(result.stdout)
    ]


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
    """Why `module` (a revision) may destroy data, when it says so."""
    reason = getattr(module, DESTRUCTIVE_ACKNOWLEDGED, None)
    return reason.strip() or None if isinstance(reason, str) else None


def reason_for(module: ModuleType, finding: Finding) -> str | None:
    """The reason `module` gives for `finding`, if it gives one."""
    if finding.rule in DESTROYING_RULES and (reason := destructive_reason(module)):
        return reason
    return acknowledged(module).get(finding.rule, "").strip() or None


def unacknowledged(revision: Script, findings: list[Finding]) -> list[Finding]:
    """The findings on `revision` that must be fixed or acknowledged: neither advisory
    nor given a (non-empty) reason."""
    return [
        finding
        for finding in findings
        if finding.rule not in ADVISORY_RULES and reason_for(revision.module, finding) is None
    ]
