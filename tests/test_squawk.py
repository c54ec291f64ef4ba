"""squawk lints each revision's offline SQL; a violation fails unless acknowledged.

A revision acknowledges a rule in a module-level ``squawk_acknowledged`` mapping of
rule name to reason. The rule configuration is ``.squawk.toml``; the invocation is
shared with the schema review (``migrations/lint.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import Script

from migrations import lint
from tests.conftest import SCRIPT


@pytest.mark.parametrize("revision", list(SCRIPT.walk_revisions()), ids=lambda r: r.revision)
def test_revision_passes_squawk(revision: Script, tmp_path: Path) -> None:
    for rule, reason in lint.acknowledged(revision.module).items():
        assert reason.strip(), f"{revision.revision} acknowledges {rule} without a reason"
    sql_file = tmp_path / f"{revision.revision}.sql"
    sql_file.write_text(lint.offline_sql(revision))
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
