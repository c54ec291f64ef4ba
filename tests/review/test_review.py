"""``make review`` on a copy of the project in a git repository of its own.

The copy's first commit has no migrations, its second is the project as it is; a test
then changes the working tree as a pull request would and runs the review, as CI does,
in a child process against ``HEAD``. The throwaway databases are the review's own
(``todo_review_*``), on the test server, and must be gone when it ends.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.engine import URL

import models
from models.security import ROW_SECURITY
from tests.conftest import HEAD, SCRIPT, NewDatabase, child_url, new_engine, write_revision
from tests.support import alembic_batch, warm_start
from tests.support.evolution import PLACEHOLDER, copy_files
from todo_database.deploy import database
from todo_database.review import report as review
from todo_database.review.docs import Schema
from todo_database.review.report import ATTENTION, BLOCKING, Loss

#: What the review needs of the project: its Alembic set-up, models and squawk rules.

# A column, an index and a (restrictive) policy for todo_app, added after the models'
# own declarations, so the test does not depend on how models/todo.py is written; their
# names are the test's own, so they meet nothing a real schema change added.
MODEL_CHANGE = """

# --- tests/review/test_review.py: a column, an index and a policy ---
from sqlalchemy import Integer as _Integer  # noqa: E402

from models.security import Policy as _Policy, RowSecurity as _RowSecurity  # noqa: E402

Todo.__table__.append_column(Column("review_probe", _Integer, nullable=True))
Index("todo_user_id_review_probe_idx", Todo.__table__.c.user_id, Todo.__table__.c.review_probe)
Todo.__table__.info[ROW_SECURITY] = Todo.__table__.info[ROW_SECURITY] + _RowSecurity(
    policies=(
        _Policy("todo_app_review_probe", "SELECT", ("todo_app",), using="NOT completed",
                permissive=False),
    )
)
"""

DROPPING_REVISION = '''"""drop {table} {column}

Revision ID: {revision}
Revises: {down}
"""

from alembic import op

revision = "{revision}"
down_revision = "{down}"
branch_labels = None
depends_on = None

squawk_acknowledged = {{"ban-drop-column": "test: the rule is acknowledged, the data loss is not"}}
{acknowledgement}

def upgrade() -> None:
    op.drop_column("{table}", "{column}")


def downgrade() -> None:
    op.execute('ALTER TABLE "{table}" ADD COLUMN "{column}" {type}')
'''


@dataclass(frozen=True)
class Droppable:
    """A column a revision of the test drops: nullable, and in no key, index or policy
    (so dropping it needs nothing else), with the CHECKs that go with it."""

    table: str
    column: str
    type: str
    checks: int


def droppable_column() -> Droppable:
    """Such a column of an owned table in the models, whatever they are now: one with the
    most CHECKs of its own, so that their going is seen too."""
    dialect = PGDialect()  # type: ignore[no-untyped-call]
    found: list[Droppable] = []
    for table in models.metadata.tables.values():
        security = table.info.get(ROW_SECURITY)
        if not security or not security.policies:
            continue
        policies = " ".join(f"{p.using or ''} {p.with_check or ''}" for p in security.policies)
        taken = {c.name for index in table.indexes for c in index.columns}
        taken |= {fk.parent.name for fk in table.foreign_keys}
        for column in table.columns:
            named = re.compile(rf"\b{re.escape(column.name)}\b")
            if not column.nullable or column.primary_key or column.name in taken:
                continue
            if named.search(policies):
                continue
            checks = [
                c
                for c in table.constraints
                if isinstance(c, sa.CheckConstraint) and named.search(str(c.sqltext))
            ]
            typed = column.type.compile(dialect=dialect)
            found.append(Droppable(table.name, column.name, typed, len(checks)))
    if found:
        return max(found, key=lambda d: (d.checks, d.table, d.column))
    pytest.skip("no owned table has a nullable column outside keys, indexes and policies")


def git(root: Path, *args: str) -> str:
    identity = ["-c", "user.name=review test", "-c", "user.email=review@test.invalid"]
    command = ["git", *identity, "-c", "commit.gpgsign=false", *args]
    return subprocess.run(command, cwd=root, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's copy: a commit without migrations, then a commit of the project."""
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "--quiet")
    (root / "README.md").write_text("before the schema\n")
    git(root, "add", "README.md")
    git(root, "commit", "--quiet", "-m", "no migrations yet")
    copy_files(root)
    (root / ".gitignore").write_text("__pycache__/\n")
    git(root, "add", "--all")
    git(root, "commit", "--quiet", "-m", "the project")
    return root


def run_review(
    root: Path, admin_url: URL, base: str = "HEAD", *, blocking: bool = False
) -> tuple[str, str]:
    """`python -m todo_database.review.report` in `root`, as `make review` runs it (a
    process of its own, started warm): (report, stderr).
    It writes its report either way, and exits 1 when the report holds a `blocking`
    warning (then CI fails), 0 otherwise."""
    environment = {**os.environ, database.REVIEW_URL_VARIABLE: child_url(admin_url)}
    output = root / "review.md"
    result = warm_start.run(
        [
            sys.executable,
            "-m",
            "todo_database.review.report",
            "--base",
            base,
            "--output",
            str(output),
        ],
        cwd=root,
        env=environment,
        timeout=120,
    )
    assert result.returncode == (1 if blocking else 0), result.stderr
    assert output.read_text() == result.stdout
    failed = [line for line in result.stderr.splitlines() if line.startswith("review: ")]
    failed = [line for line in failed if "blocking warning" in line]
    assert len(failed) == (1 if blocking else 0), result.stderr
    return result.stdout, result.stderr


def assert_dropped(admin_url: URL, stderr: str) -> None:
    created = re.findall(r"created throwaway database (todo_review_\w+)", stderr)
    assert created
    engine = new_engine(admin_url)
    try:
        with engine.connect() as connection:
            left = connection.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
                {"names": created},
            ).all()
    finally:
        engine.dispose()
    assert not left, f"the review left {left} behind"


def test_review_of_a_new_column_index_and_policy(
    project: Path, admin_url: URL, new_database: NewDatabase, head_template: str
) -> None:
    with (project / "models" / "todo.py").open("a") as models_file:
        models_file.write(MODEL_CHANGE)
    at_head = new_database(template=head_template)
    versions = project / "migrations" / "versions"
    before = set(versions.glob("*.py"))
    generating = alembic_batch.alembic(
        ["revision", "--autogenerate", "-m", "todo review probe"],
        root=str(project),
        database_url=child_url(at_head),
    )
    assert generating.returncode == 0, generating.stderr
    (generated,) = set(versions.glob("*.py")) - before
    revision = generated.name.split("-", 1)[1].split("_", 1)[0]

    report, stderr = run_review(project, admin_url)

    assert report.startswith(review.MARKER)
    assert f"#### `{revision}` todo review probe" in report
    assert "ALTER TABLE todo ADD COLUMN review_probe INTEGER" in report
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS todo_user_id_review_probe_idx" in report
    assert "CREATE POLICY todo_app_review_probe ON todo AS RESTRICTIVE FOR SELECT" in report
    summary = next(line for line in report.splitlines() if "revision" in line and " · " in line)
    assert summary.startswith("**1 revision added**")
    for counted in ("tables: 1 changed", "columns: 1 added", "indexes: 1 added"):
        assert counted in summary
    assert "policies: 1 added" in summary
    assert "grants: none" in summary
    assert "lint: " in summary
    # The matrix marks the one cell the policy changes, and only that one.
    (select_row,) = [
        row for row in report.splitlines() if row.startswith("| `todo` | `todo_app` | SELECT |")
    ]
    assert "AND restrictive `(NOT completed)` (todo_app_review_probe)" in select_row
    assert "✏️ changed; was: granted; USING" in select_row
    assert report.count("✏️ changed") == 1
    assert "```mermaid\nerDiagram\n" in report
    assert '"user" ||--o{ "todo" : "owns"' in report
    assert "integer review_probe" in report
    # Additive: nothing lost on upgrade; the downgrade drops the new column, and says so.
    assert "destroys data on upgrade" not in report
    assert f"Downgrading `{revision}` drops column `todo.review_probe`" in report
    assert "review: migrating both" in stderr
    assert_dropped(admin_url, stderr)


def test_review_warns_of_a_destructive_revision_without_acknowledgement(
    project: Path, admin_url: URL
) -> None:
    """A revision that drops a column of the models (whichever one the models have to
    spare, :func:`droppable_column`) is a blocking warning, and the review fails, while
    its acknowledgement is the empty one ``make revision`` writes."""
    drop = droppable_column()
    dropping = project / "migrations" / "versions" / "dddd00000001_drop_a_column.py"
    where = f"{drop.table}.{drop.column}"
    revision = {"revision": "dddd00000001", "down": HEAD, **vars(drop)}
    dropping.write_text(DROPPING_REVISION.format(acknowledgement=PLACEHOLDER, **revision))

    report, stderr = run_review(project, admin_url, blocking=True)

    assert "columns: 1 dropped" in report
    if drop.checks:  # a CHECK on the column alone goes with it
        assert f"constraints: {drop.checks} dropped" in report
    warning = next(line for line in report.splitlines() if "destroys data on upgrade" in line)
    assert warning.startswith(f"- {BLOCKING} `dddd00000001` destroys data on upgrade")
    assert f"column `{where}`" in warning
    assert 'destructive_acknowledged = "' in warning
    assert f"🗑️ column `{where}` dropped" in report
    assert "✅ test: the rule is acknowledged, the data loss is not" in report
    assert_dropped(admin_url, stderr)

    # Acknowledged, the same revision is still pointed out, no longer blocking.
    dropping.write_text(
        DROPPING_REVISION.format(
            acknowledgement='destructive_acknowledged = "it was never shown to anyone"',
            **revision,
        )
    )
    script = ScriptDirectory.from_config(Config(str(project / "alembic.ini")))
    reviewed = review.RevisionReview(
        script.get_revision("dddd00000001"),
        dropping.name,
        upgrade_sql=f"ALTER TABLE {drop.table} DROP COLUMN {drop.column};",
    )
    (alert,) = review.revision_alerts(reviewed)
    assert alert.level == ATTENTION
    assert "Acknowledged: “it was never shown to anyone”" in alert.text


def test_a_base_without_migrations_has_no_revisions(project: Path) -> None:
    assert review.base_revisions(project, review.resolve_commit(project, "HEAD~1")) == {}
    at_head = review.base_revisions(project, review.resolve_commit(project, "HEAD"))
    assert HEAD in at_head
    assert review.heads(at_head) == [HEAD]


def test_an_unknown_base_is_one_line(project: Path) -> None:
    with pytest.raises(review.ReviewError, match="not a commit here"):
        review.resolve_commit(project, "origin/no-such-branch")


@pytest.mark.parametrize(
    ("sql", "losses"),
    [
        ("ALTER TABLE todo DROP COLUMN priority;", [Loss("todo", "priority")]),
        (
            'ALTER TABLE "user" DROP COLUMN IF EXISTS "emailVerified";',
            [Loss("user", "emailVerified")],
        ),
        (
            "ALTER TABLE ONLY public.todo DROP priority, DROP COLUMN due_at;",
            [
                Loss("todo", "due_at"),
                Loss("todo", "priority"),
            ],
        ),
        ('DROP TABLE IF EXISTS todo, "user" CASCADE;', [Loss("todo"), Loss("user")]),
        ("TRUNCATE TABLE todo;", [Loss("todo", truncate=True)]),
        ("ALTER TABLE todo DROP CONSTRAINT todo_title_length_check;", []),
        ("ALTER TABLE todo ALTER COLUMN completed DROP DEFAULT, ALTER due_at DROP NOT NULL;", []),
        ("DROP INDEX CONCURRENTLY todo_user_id_priority_idx;\nDROP POLICY p ON todo;", []),
        ("-- DROP TABLE todo;\nDROP TABLE alembic_version;", []),
    ],
)
def test_data_losses_are_read_from_the_sql(sql: str, losses: list[Loss]) -> None:
    assert review.data_losses(sql) == losses


def test_revision_files_are_read_without_importing_them() -> None:
    text = 'revision: str = "abc"\ndown_revision: str | None = ("x", "y")\nimport nothing_such\n'
    parsed = review.parse_revision_file("v.py", text)
    assert parsed is not None
    assert (parsed.revision, parsed.down_revisions) == ("abc", ("x", "y"))
    assert review.parse_revision_file("v.py", "x = 1\n") is None


def test_an_edit_that_changes_nothing_run_is_told_apart() -> None:
    released = '"""doc"""\nrevision = "a"\n\ndef upgrade() -> None:\n    op.drop_table("t")\n'
    commented = released.replace('"""doc"""', '"""better doc"""\n# why') + (
        'squawk_acknowledged = {"rule": "reason"}\n'
    )
    assert review.runs_the_same(released, commented)
    assert not review.runs_the_same(released, released.replace('"t"', '"u"'))


#: What a revision that renders only online runs: offline, its upgrade raises, and its
#: downgrade fails as a command does.
CANNOT_RENDER_UP = """from alembic import context
if context.is_offline_mode():
    raise ValueError("the upgrade cannot render")"""
CANNOT_RENDER_DOWN = """from alembic import context
from alembic.util import CommandError
if context.is_offline_mode():
    raise CommandError("the downgrade cannot render")"""


def test_each_revision_renders_apart_and_a_failure_says_why(tmp_path: Path) -> None:
    """The review renders every new revision in one ``alembic`` child: a revision that
    cannot render is reported in the words ``alembic ... --sql`` says it in, alone, and
    the others render as they would by themselves."""
    copy_files(tmp_path)
    versions = tmp_path / "migrations" / "versions"
    fine = write_revision(
        versions,
        'op.execute("CREATE TABLE render_fine (id integer)")',
        'op.execute("DROP TABLE render_fine")',
    )
    broken = write_revision(versions, CANNOT_RENDER_UP, CANNOT_RENDER_DOWN, down_revision=fine)
    after = write_revision(
        versions, 'op.execute("CREATE TABLE render_after (id integer)")', down_revision=broken
    )
    script = ScriptDirectory.from_config(Config(str(tmp_path / "alembic.ini")))

    reviewed = review.review_revisions(
        [script.get_revision(r) for r in (fine, broken, after)], tmp_path
    )

    rendered_fine, rendered_broken, rendered_after = reviewed
    assert "CREATE TABLE render_fine (id integer);" in rendered_fine.upgrade_sql
    assert "DROP TABLE render_fine;" in rendered_fine.downgrade_sql
    assert "CREATE TABLE render_after (id integer);" in rendered_after.upgrade_sql
    assert (rendered_fine.errors, rendered_after.errors) == ([], [])
    assert rendered_broken.errors == [
        f"alembic upgrade {fine}:{broken} --sql failed: ValueError: the upgrade cannot render",
        f"alembic downgrade {broken}:{fine} --sql failed: the downgrade cannot render",
    ]


def test_a_report_too_long_for_a_comment_leaves_the_sql_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reviewed = review.RevisionReview(
        SCRIPT.get_revision(HEAD), "x.py", upgrade_sql="SELECT 1;\n" * 50
    )
    report = review.Review(
        "main", "0" * 40, None, HEAD, [reviewed], [], [], Schema(), Schema(), owners={}
    )
    assert report.markdown().count("SELECT 1;") == 50
    monkeypatch.setattr(review, "COMMENT_LIMIT", 500)
    shortened = report.markdown()
    assert "SELECT 1;" not in shortened
    assert "SQL left out" in shortened


NARROWING_REVISIONS = {
    "rrrr00000001_review_notes.py": '''"""review notes"""

from alembic import op

revision = "rrrr00000001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE review_note (id bigint PRIMARY KEY, title varchar(40) NOT NULL)")
    op.execute("ALTER TABLE review_note ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE review_note FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute("DROP TABLE review_note")
''',
    "rrrr00000002_review_note_titles_widened.py": '''"""review note titles widened"""

import sqlalchemy as sa
from alembic import op

revision = "rrrr00000002"
down_revision = "rrrr00000001"
branch_labels = None
depends_on = None

squawk_acknowledged = {{"changing-column-type": "test: in place, PostgreSQL says"}}


def upgrade() -> None:
    op.alter_column("review_note", "title", type_=sa.String(80), existing_type=sa.String(40))


def downgrade() -> None:
    op.alter_column("review_note", "title", type_=sa.String(40), existing_type=sa.String(80))
''',
}


def test_review_warns_of_a_downgrade_that_narrows_a_type(project: Path, admin_url: URL) -> None:
    """A title widened from varchar(40) to varchar(80), in place; its downgrade narrows
    it back, which PostgreSQL (asked on the head database) does by rewriting the table,
    failing on a longer title: the review says so, without blocking."""
    versions = project / "migrations" / "versions"
    for name, text in NARROWING_REVISIONS.items():
        (versions / name).write_text(text.format(head=HEAD))

    report, stderr = run_review(project, admin_url)

    (warning,) = [line for line in report.splitlines() if "changes column" in line]
    assert warning == (
        f"- {ATTENTION} Downgrading `rrrr00000002` changes column `review_note.title` back to "
        "`VARCHAR(40)` (it is `character varying(80)` after the change), which rewrites the "
        "table and rebuilds its indexes under ACCESS EXCLUSIVE, and fails on any value written "
        "since that `VARCHAR(40)` cannot hold"
    )
    assert_dropped(admin_url, stderr)
