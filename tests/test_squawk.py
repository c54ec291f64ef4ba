"""squawk lints each revision's offline SQL; a violation fails unless acknowledged.

A revision acknowledges a rule in a module-level ``squawk_acknowledged`` mapping of
rule name to reason. The rule configuration is ``.squawk.toml``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.script import Script, ScriptDirectory

from tests.conftest import PROJECT_ROOT, make_alembic_config

SCRIPT = ScriptDirectory.from_config(make_alembic_config())
SQUAWK = shutil.which("squawk", path=str(Path(sys.executable).parent)) or "squawk"


def offline_sql(revision: Script) -> str:
    start = revision.down_revision or "base"
    assert isinstance(start, str), "the chain is linear"
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", f"{start}:{revision.revision}", "--sql"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def squawk(sql_file: Path) -> list[dict[str, object]]:
    result = subprocess.run(
        [SQUAWK, "--reporter", "json", str(sql_file)],
        cwd=PROJECT_ROOT,  # where .squawk.toml is
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    return list(json.loads(result.stdout))


def unacknowledged(revision: Script, violations: list[dict[str, object]]) -> list[str]:
    acknowledged: dict[str, str] = getattr(revision.module, "squawk_acknowledged", {})
    for rule, reason in acknowledged.items():
        assert reason.strip(), f"{revision.revision} acknowledges {rule} without a reason"
    return [
        f"line {v['line']}: {v['rule_name']}: {v['message']} ({v.get('help', '')})"
        for v in violations
        if v["rule_name"] not in acknowledged
    ]


@pytest.mark.parametrize("revision", list(SCRIPT.walk_revisions()), ids=lambda r: r.revision)
def test_revision_passes_squawk(revision: Script, tmp_path: Path) -> None:
    sql_file = tmp_path / f"{revision.revision}.sql"
    sql_file.write_text(offline_sql(revision))
    problems = unacknowledged(revision, squawk(sql_file))
    assert not problems, f"squawk on {revision.revision}:\n" + "\n".join(problems)


def test_squawk_catches_a_blocking_index_build(tmp_path: Path) -> None:
    sql_file = tmp_path / "blocking.sql"
    sql_file.write_text(
        "SET lock_timeout = '2s';\nBEGIN;\nCREATE INDEX todo_title_idx ON todo (title);\nCOMMIT;\n"
    )
    rules = {violation["rule_name"] for violation in squawk(sql_file)}
    assert "require-concurrent-index-creation" in rules
