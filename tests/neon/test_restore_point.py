"""A restore point before a deploy destroys data on Neon (todo_database/neon/restore_point.py).

A throwaway copy of the repository (tests/support/evolution.py) migrates, through the plain
``alembic`` command line, a database that the Neon stand-in (tests/support/neon_standin.py)
serves as its default branch ``main``, over that branch's Neon URL: its endpoint's
host (``ep-...neon.tech``), which libpq's ``hostaddr`` takes to the test server. The
copy gets a table of its own with rows, then a revision that drops one of its columns.
``make revision`` says so and leaves its ``destructive_acknowledged`` empty for its
author; the restore point keys on what the revision does, not on that line, so the
revision meets each way such a deploy goes before anyone says why: offline SQL, no API
key, Neon failing, a restore point made (a real copy of the database in the stand-in,
holding the column) with a line saying the reason is missing; then, acknowledged,
restore points turned off, and a database that is not Neon's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from alembic.util import CommandError
from sqlalchemy.engine import URL

from tests.conftest import NewDatabase, ServerRoles, child_url
from tests.support.evolution import PLACEHOLDER, Project, Run, acknowledged
from tests.support.neon_standin import (
    API_KEY,
    DATABASE_PREFIX,
    FAKE_PASSWORD,
    PROJECT_ID,
    NeonStandin,
    StandinBranch,
)
from todo_database.neon import branches, restore_point

NOTE_MODULE = '''
"""Notes whose mood is about to go (tests/neon/test_restore_point.py)."""

from sqlmodel import Field, SQLModel

import models.base  # noqa: F401
from models.security import ROW_SECURITY, without_row_security


class RestoreNote(SQLModel, table=True):
    __tablename__ = "restore_note"
    __table_args__ = (
        {"info": {ROW_SECURITY: without_row_security("test: restore points only")}},
    )

    id: int | None = Field(default=None, primary_key=True)
    body: str
    mood: str | None = None
'''
ROWS = 2000
REASON = "test: nobody reads a note's mood"


@dataclass
class NeonProject:
    project: Project
    standin: NeonStandin
    #: The database behind the stand-in's main branch, on the test server.
    url: URL

    def rows(self, database: str | None = None) -> tuple[int, int] | None:
        """(notes, moods) in `database` (main's by default), None when mood is gone."""
        url = self.url.set(drivername="postgresql", database=database or self.url.database)
        with psycopg.connect(child_url(url)) as connection:
            has_mood = connection.execute(
                "SELECT 1 FROM information_schema.columns "
                "WHERE table_name = 'restore_note' AND column_name = 'mood'"
            ).fetchone()
            if not has_mood:
                return None
            row = connection.execute("SELECT count(*), count(mood) FROM restore_note").fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

    def version(self) -> str:
        with psycopg.connect(child_url(self.url.set(drivername="postgresql"))) as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            assert row is not None
            return str(row[0])


@pytest.fixture
def neon_project(
    tmp_path: Path,
    new_database: NewDatabase,
    head_template: str,
    test_server: ServerRoles,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[NeonProject]:
    """A copy of the repository migrating the stand-in's main branch through its Neon
    URL as the project's owner, the environment holding the stand-in's credentials."""
    url = new_database(template=head_template)
    with NeonStandin(
        test_server.owner, str(url.database), operator_url=test_server.superuser
    ) as standin:
        monkeypatch.setenv("NEON_API_KEY", API_KEY)
        monkeypatch.setenv("NEON_PROJECT_ID", PROJECT_ID)
        monkeypatch.setenv("NEON_API_HOST", standin.api_host)
        monkeypatch.setenv("NEON_RETRY_BASE_DELAY", "0.01")
        main = standin.branch_named("main")
        assert main is not None
        project = Project.copy(tmp_path / "project", standin.endpoint_uri(main))
        yield NeonProject(project, standin, url)


@dataclass(frozen=True)
class Destroying:
    """The revision that drops ``restore_note.mood``, and the one before it."""

    revision: str
    previous: str
    path: Path

    def described(self, reason: str | None = None) -> str:
        """How the deploy names it: ``revision <id> (<file>) destroys data (column
        restore_note.mood; "<why>")``."""
        said = f'; "{reason}"' if reason else ""
        return (
            f"revision {self.revision} ({self.path.name}) destroys data "
            f"(column restore_note.mood{said})"
        )

    def logged(self, reason: str | None = None) -> str:
        """As a log line starts with it."""
        return "R" + self.described(reason).removeprefix("r")


def notes_with_rows(np: NeonProject) -> None:
    """A table of the copy's own, through the Neon URL, then rows in it: nothing is
    destroyed, so Neon is not asked."""
    np.project.write("models/restore_note.py", NOTE_MODULE)
    np.project.append(
        "models/__init__.py", "from models.restore_note import RestoreNote  # noqa: E402, F401\n"
    )
    np.project.succeed(["revision", "--autogenerate", "-m", "restore notes"], ["upgrade", "head"])
    assert np.standin.requests == []
    with psycopg.connect(child_url(np.url.set(drivername="postgresql"))) as db:
        db.execute(
            "INSERT INTO restore_note (body, mood) "
            "SELECT 'note ' || n, 'mood ' || n FROM generate_series(1, %s) AS n",
            [ROWS],
        )


def mood_dropped(np: NeonProject) -> Destroying:
    """The column dropped from the model and the revision written: ``make revision``
    says in one line what it destroys, and writes the acknowledgement empty."""
    previous = np.version()
    np.project.replace("models/restore_note.py", "    mood: str | None = None\n", "")
    before = np.project.revision_files()
    (written,) = np.project.succeed(
        ["revision", "--autogenerate", "-m", "restore notes without mood"]
    )
    (path,) = np.project.revision_files() - before
    text = path.read_text()
    assert 'op.drop_column("restore_note", "mood")' in text
    assert PLACEHOLDER in text
    assert lines_with(written, "destroys data on upgrade") == [
        f"{path.name} destroys data on upgrade (column restore_note.mood): say why in its "
        "destructive_acknowledged (written empty); make test and make review fail until it does"
    ], written.stderr
    revision = re.search(r'^revision: str = "(\w+)"', text, re.M)
    assert revision is not None
    return Destroying(revision[1], previous, path)


def lines_with(run: Run, having: str) -> list[str]:
    """The log lines of `run` that hold `having`, without their level and logger."""
    return [line.split("] ", 1)[-1] for line in run.stderr.splitlines() if having in line]


def nothing_changed(np: NeonProject, dropping: Destroying) -> None:
    assert np.version() == dropping.previous
    assert np.rows() == (ROWS, ROWS)
    assert [branch.name for branch in np.standin.branches.values()] == ["main"]


@pytest.mark.superuser(
    "the stand-in copies a branch whose database a deploy is using by dump and restore, "
    "which gives objects back to their owners as only a superuser may (Neon copies "
    "storage, as no role of the project could)"
)
def test_a_revision_that_destroys_data_gets_a_restore_point_first(
    superuser_url: URL, neon_project: NeonProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    np, standin = neon_project, neon_project.standin
    main = standin.branch_named("main")
    assert main is not None
    notes_with_rows(np)
    dropping = mood_dropped(np)
    runs = [
        *offline_then_without_an_api_key(np, dropping, main, monkeypatch),
        neon_failing(np, dropping),
        made(np, dropping, main),
        *turned_off_and_elsewhere(np, dropping),
    ]
    for run in runs:
        assert API_KEY not in run.output, run
        assert FAKE_PASSWORD not in run.output, run
        assert "Traceback" not in run.output, run


def offline_then_without_an_api_key(
    np: NeonProject, dropping: Destroying, main: StandinBranch, monkeypatch: pytest.MonkeyPatch
) -> list[Run]:
    """Offline, a comment says what to do first; without an API key, the deploy stops
    before anything is touched, in one line saying how to make one by hand."""
    monkeypatch.delenv("NEON_API_KEY")
    offline, no_key = np.project.alembic(
        ["upgrade", f"{dropping.previous}:head", "--sql"], ["upgrade", "head"]
    )
    monkeypatch.setenv("NEON_API_KEY", API_KEY)
    assert offline.code == 0, offline
    comment = f"-- {dropping.described()}.\n"
    assert comment in offline.stdout, offline.stdout
    assert offline.stdout.index(comment) < offline.stdout.index("DROP COLUMN mood")
    assert f"neon-branch restore-point <branch> --revision {dropping.revision}" in offline.stdout

    (line,) = no_key.failed_lines()
    assert (
        f"{dropping.described()}, and no restore point was made: NEON_API_KEY is not set." in line
    )
    assert f"`neon-branch restore-point <the branch of {main.endpoint_id}>" in line, line
    assert "or a branch of it in the Neon console" in line, line
    assert "and rerun with -x restore_point=off; nothing was changed" in line, line
    assert np.standin.requests == []
    nothing_changed(np, dropping)
    return [offline, no_key]


def neon_failing(np: NeonProject, dropping: Destroying) -> Run:
    """Neon answers 503 until the retries are spent: one line, nothing changed."""
    np.standin.answer_error(10_000, 503, method="POST", path=r"/branches$")
    (failed,) = np.project.alembic(["-x", "restore_point_retry_for=0.3", "upgrade", "head"])
    np.standin.faults.clear()
    (line,) = failed.failed_lines()
    assert f"{dropping.described()}, and no restore point could be made: Neon: gave up on" in line
    assert "(-x restore_point_retry_for 0.3); last answer: 503" in line, line
    assert line.endswith("; nothing was changed"), line
    nothing_changed(np, dropping)
    np.standin.requests.clear()
    return failed


def made(np: NeonProject, dropping: Destroying, main: StandinBranch) -> Run:
    """The restore point: asked for with the right name, parent and expiry, made before
    the revision runs, holding the column's data; the output says how to restore, and
    that the revision does not say why it destroys data (it runs all the same)."""
    upgraded, _ = np.project.succeed(
        ["-x", "restore_point_expires_in=3d", "-x", "restore_point_retry_for=5", "upgrade", "head"],
        ["check"],
    )
    assert lines_with(upgraded, "without saying why") == [
        f"{dropping.logged()} without saying why (its destructive_acknowledged is missing or "
        "empty): it runs all the same; make test and make review fail until it says why"
    ], upgraded.stderr
    (creation,) = np.standin.requests_to("POST", r"/branches$")
    assert creation.body is not None
    assert "endpoints" not in creation.body, "a restore point needs no compute"
    spec = creation.body["branch"]
    name = spec["name"]
    assert re.fullmatch(rf"restore/{dropping.revision}-\d{{8}}T\d{{6}}Z", name), name
    assert (spec["parent_id"], spec["init_source"]) == (main.id, "parent-data")
    expires_at = datetime.strptime(spec["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires_at - (datetime.now(UTC) + timedelta(days=3))) < timedelta(minutes=1)

    point = np.standin.branch_named(name)
    assert point is not None
    said = upgraded.stderr
    announced = f"Restore point made: Neon branch {name} ({point.id}) holds main ({main.id})"
    assert announced in said, said
    assert said.index(announced) < said.index(f"Running upgrade {dropping.previous} -> ")
    assert f"then connect to `neon-branch url {name}`" in said
    rolled_back = f"neonctl branches restore main {name} --preserve-under-name main-before-restore"
    assert rolled_back in said
    assert f"POST /projects/{PROJECT_ID}/branches/{main.id}/restore" in said
    assert np.rows() is None
    assert np.rows(point.database) == (ROWS, ROWS)
    assert np.version() == dropping.revision
    return upgraded


def turned_off_and_elsewhere(np: NeonProject, dropping: Destroying) -> list[Run]:
    """Its author says why; then, turned off, and on a database that is not Neon's, no
    restore point is asked for; ``required`` there stops the deploy."""
    acknowledged(dropping.path, REASON)
    _, off = np.project.succeed(["downgrade", "-1"], ["-x", "restore_point=off", "upgrade", "head"])
    assert (
        f"{dropping.logged(REASON)}; no restore point is made (restore_point = off)" in off.stderr
    )
    assert "without saying why" not in off.stderr
    elsewhere = np.project.alembic(
        ["downgrade", "-1"],
        ["upgrade", "head"],
        ["downgrade", "-1"],
        ["-x", "restore_point=required", "upgrade", "head"],
        database_url=child_url(np.url),
    )
    assert [run.code for run in elsewhere[:3]] == [0, 0, 0], elsewhere
    assert "is not a Neon database: no restore point is made" in elsewhere[1].stderr
    (line,) = elsewhere[3].failed_lines()
    assert "restore_point = required and " in line, line
    assert "is not a Neon database, so no restore point can be made" in line, line
    assert len(np.standin.requests_to("POST", r"/branches$")) == 1
    return [off, *elsewhere]


@pytest.fixture
def standin(
    admin_url: URL, new_database: NewDatabase, monkeypatch: pytest.MonkeyPatch
) -> Iterator[NeonStandin]:
    with NeonStandin(admin_url, str(new_database().database)) as api:
        monkeypatch.setenv("NEON_API_KEY", API_KEY)
        monkeypatch.setenv("NEON_PROJECT_ID", PROJECT_ID)
        monkeypatch.setenv("NEON_API_HOST", api.api_host)
        monkeypatch.setenv("NEON_RETRY_BASE_DELAY", "0.01")
        yield api


def test_neon_branch_makes_a_restore_point_by_hand(
    standin: NeonStandin, capsys: pytest.CaptureFixture[str]
) -> None:
    """``neon-branch restore-point``: the same branch a deploy makes, not migrated."""
    code = branches.main(
        ["restore-point", "main", "--revision", "1a2b3c4d5e6f", "--expires-in", "1d"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    (creation,) = standin.requests_to("POST", r"/branches$")
    assert creation.body is not None
    name = creation.body["branch"]["name"]
    assert name.startswith("restore/1a2b3c4d5e6f-"), name
    assert "endpoints" not in creation.body
    point = standin.branch_named(name)
    assert point is not None
    assert point.database.startswith(DATABASE_PREFIX)
    assert out.startswith(f"Restore point made: Neon branch {name} ({point.id}) holds main")
    assert API_KEY not in out + err


@pytest.mark.parametrize(
    ("host", "endpoint"),
    [
        ("ep-cool-darkness-123456.eu-central-1.aws.neon.tech", "ep-cool-darkness-123456"),
        ("ep-cool-darkness-123456-pooler.eu-central-1.aws.neon.tech", "ep-cool-darkness-123456"),
        ("EP-Late-Glade-1.eastus2.azure.neon.tech", "ep-late-glade-1"),
        ("ep-cool-darkness-123456.internal.example.com", None),
        ("db.neon.tech", None),
        ("127.0.0.1", None),
        (None, None),
    ],
)
def test_a_neon_database_is_known_by_its_host(host: str | None, endpoint: str | None) -> None:
    assert restore_point.neon_endpoint(host) == endpoint


def test_a_bad_setting_is_one_line() -> None:
    from alembic.config import Config

    config = Config()
    with pytest.raises(CommandError, match=r"^restore_point = 'always': use one of auto, "):
        restore_point.Settings.from_config(config, {"restore_point": "always"})
    with pytest.raises(CommandError, match=r"invalid duration '2w'"):
        restore_point.Settings.from_config(config, {"restore_point_expires_in": "2w"})
    settings = restore_point.Settings.from_config(config, {"restore_point": "Required"})
    assert (settings.mode, settings.expires_in) == ("required", timedelta(days=7))
