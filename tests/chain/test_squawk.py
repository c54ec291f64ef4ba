"""squawk lints each revision's offline SQL; a violation fails unless acknowledged.
And a revision whose SQL destroys data (a table or column dropped, rows truncated or
deleted) fails until its ``destructive_acknowledged`` says why: ``make revision``
writes it empty for its author to fill.

A revision acknowledges a rule in a module-level ``squawk_acknowledged`` mapping of
rule name to reason, and the rules against destroying data by its
``destructive_acknowledged`` reason; rules about the choice of a column type are
advisory (``todo_database/lint.py``). The rule configuration is ``.squawk.toml``; the
invocation is shared with the schema review.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import cast

import pytest
from alembic.script import Script

from tests.conftest import SCRIPT
from tests.support import offline_sql
from todo_database import lint


@pytest.mark.parametrize("revision", list(SCRIPT.walk_revisions()), ids=lambda r: r.revision)
def test_revision_passes_squawk(revision: Script, tmp_path: Path) -> None:
    for rule, reason in lint.acknowledged(revision.module).items():
        assert reason.strip(), f"{revision.revision} acknowledges {rule} without a reason"
    sql = offline_sql.of(revision)
    losses = lint.data_losses(sql)
    assert not losses or lint.destructive_reason(revision.module), (
        f"{revision.revision} destroys data on upgrade ({lint.describe_losses(losses)}) "
        f"without saying why: fill its {lint.DESTRUCTIVE_ACKNOWLEDGED}"
    )
    sql_file = tmp_path / f"{revision.revision}.sql"
    sql_file.write_text(sql)
    problems = [
        finding.describe() for finding in lint.unacknowledged(revision, lint.squawk(sql_file))
    ]
    assert not problems, f"squawk on {revision.revision}:\n" + "\n".join(problems)


def test_squawk_catches_a_blocking_index_build(tmp_path: Path) -> None:
    sql_file = tmp_path / "blocking.sql"
    sql_file.write_text(
        "SET lock_timeout = '2s';\nBEGIN;\nCREATE INDEX todo_title_idx ON todo (title);\nCOMMIT;\n"
    )
    rules = {finding.rule for finding in lint.squawk(sql_file)}
    assert "require-concurrent-index-creation" in rules


def test_type_advice_is_advisory_and_a_drop_is_answered_by_its_reason() -> None:
    findings = lint.squawk_sql(
        "SET lock_timeout = '2s';\nSET statement_timeout = '15min';\nBEGIN;\n"
        "ALTER TABLE todo ADD COLUMN rank integer;\n"
        "ALTER TABLE todo DROP COLUMN description;\nCOMMIT;\n"
    )
    assert {"prefer-bigint-over-int", "ban-drop-column"} <= {f.rule for f in findings}
    module = ModuleType("revision")
    revision = cast(Script, SimpleNamespace(module=module))
    assert {f.rule for f in lint.unacknowledged(revision, findings)} == {"ban-drop-column"}
    module.destructive_acknowledged = "description was never shown"  # type: ignore[attr-defined]
    assert lint.unacknowledged(revision, findings) == []
