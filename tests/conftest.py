"""Fixtures: every test gets databases of its own, on a real PostgreSQL server, as
production reaches it.

The server is an embedded one of the run's own (:mod:`tests.support.run_server`: the
developer's PostgreSQL 18 on a fresh data directory in memory, deleted at the end)
unless ``TEST_DATABASE_URL`` names an admin URL of another.
Every database a test creates is named ``todo_test_*`` and dropped afterwards; no
other database is ever dropped.

Production migrates as Neon's owner role, which is no superuser, so the tests do too:
given a superuser, the run makes a Neon-shaped owner of its own
(:mod:`tests.support.neon_owner`, ``todo_test_owner_<run>``) and :func:`admin_url` is that
owner's; every database is created, migrated and seeded by it. The few tests that
need a superuser ask for :func:`superuser_url` and say why in a ``superuser`` mark.
Given a URL that is no superuser's (Neon's owner itself), the run uses it as it is
and skips those few, saying so. At the end, the run deletes its own server; on a server
it was given, it drops its owner and the roles its migrations created, unless something
on the server still uses them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import textwrap
import time
import uuid
from argparse import Namespace
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import pool
from sqlalchemy.engine import URL, Engine

from models.security import ROLES
from tests.support import neon_owner, run_server
from todo_database.deploy import database

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATABASE_PREFIX = "todo_test_"

NewDatabase = Callable[..., URL]

# Every migration a test runs is handed its connection. Should one ever fall back to
# the resolver, it must fail loudly, not migrate the developer's own database.
os.environ["DATABASE_URL"] = "postgresql://tests-pass-their-own-connection@127.0.0.1:9/none"


def make_alembic_config(engine: Engine | None = None) -> Config:
    """The project's alembic.ini, bound to `engine` when one is given."""
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    if engine is not None:
        config.attributes["connection"] = engine
    return config


#: The project's revisions, and its head revision.
SCRIPT = ScriptDirectory.from_config(make_alembic_config())
HEAD = str(SCRIPT.get_current_head())


def write_revision(
    directory: Path, upgrade: str, downgrade: str = "pass", *, down_revision: str | None = HEAD
) -> str:
    """A test-only revision after `down_revision` in `directory` (bodies are unindented
    Python); returns its id. The file is ``<id>_test_only.py``."""
    revision = "ffff" + uuid.uuid4().hex[:8]
    (directory / f"{revision}_test_only.py").write_text(
        f'''"""test only"""
import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None


def upgrade() -> None:
{textwrap.indent(upgrade, "    ")}


def downgrade() -> None:
{textwrap.indent(downgrade, "    ")}
'''
    )
    return revision


def config_with_versions(engine: Engine, directory: Path, *x_arguments: str) -> Config:
    """The project's config bound to `engine`, plus the test-only revisions in
    `directory` and ``-x`` settings."""
    config = make_alembic_config(engine)
    locations = [str(PROJECT_ROOT / "migrations" / "versions"), str(directory)]
    config.set_main_option("version_locations", os.pathsep.join(locations))
    config.cmd_opts = Namespace(x=list(x_arguments))
    return config


def new_engine(url: URL) -> Engine:
    return database.create_engine(url, poolclass=pool.NullPool)


def upgrade(url: URL, revision: str = "head") -> None:
    engine = new_engine(url)
    try:
        command.upgrade(make_alembic_config(engine), revision)
    finally:
        engine.dispose()


#: Where the controlling process tells its workers (pytest-xdist) who the run's owner is.
_OWNER_VARIABLE = "TODO_TEST_OWNER"
#: Roles the tests' migrations create besides the declared ones (the evolution stories').
STORY_ROLES: tuple[str, ...] = ("todo_evolution_reader",)
#: The run's server, owner, and the roles that existed before it (controller only).
_RUN_KEY = pytest.StashKey[tuple[URL, neon_owner.NeonOwner, set[str]]]()


def given_server() -> URL:
    """The server the run was given: ``TEST_DATABASE_URL``, else the run's own
    (started by the controlling process, :func:`pytest_sessionstart`)."""
    raw = os.environ.get("TEST_DATABASE_URL", "").strip() or os.environ.get(
        run_server.URL_VARIABLE, ""
    )
    if not raw:
        raise pytest.UsageError("the run's server was not started (pytest_sessionstart)")
    url = database.parse_url(raw)
    socket_directory = url.query.get("host")
    if url.host or not isinstance(socket_directory, str):
        return url
    # A server on a Unix socket (the embedded one) has its path, URL-encoded, put '%' in
    # every URL; pytest-alembic hands URLs through configparser, which rejects '%'.
    # libpq reads the socket directory from PGHOST instead, here and in every child.
    os.environ["PGHOST"] = socket_directory
    return url.difference_update_query(["host"])


def _is_superuser(url: URL) -> bool:
    with database.admin_connection(url) as connection:
        return neon_owner.is_superuser(connection)


def _is_controller(config: pytest.Config) -> bool:
    """The process that runs the session as a whole (not a pytest-xdist worker)."""
    return not hasattr(config, "workerinput")


def pytest_collection_finish(session: pytest.Session) -> None:
    """From here on no bytecode is written, by this process or its children. ``make
    test`` lets collection use Python's cache (rewriting the tests' asserts is most of
    it), but the tests write modules (revisions, a copy's models) and rewrite them within
    a second at the same size, which a cache checked by modification time and size
    would serve stale."""
    sys.dont_write_bytecode = True
    os.environ["PYTHONDONTWRITEBYTECODE"] = "1"


#: The run's scratch directory (controller only), where its own server runs.
_SCRATCH_KEY = pytest.StashKey[Path]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Before any worker starts: the run's scratch directory and, given no server, a
    server of its own (:mod:`tests.support.run_server`); the run's Neon-shaped owner,
    when given a superuser."""
    if not _is_controller(session.config) or session.config.option.collectonly:
        return
    scratch = run_server.scratch()
    if not os.environ.get("TEST_DATABASE_URL", "").strip():
        session.config.stash[_SCRATCH_KEY] = scratch
        run_server.start(scratch)
    server = given_server()
    if not _is_superuser(server):
        return
    run = uuid.uuid4().hex[:8]
    owner = neon_owner.make_owner(server, f"todo_test_owner_{run}", f"todo_test_neon_{run}")
    # Roles an earlier run or `make migrate` made are the owner's to manage, as on Neon,
    # where the owner's own migrations made them.
    neon_owner.let_manage(server, owner.name, [*ROLES, *STORY_ROLES])
    with database.admin_connection(server) as connection:
        existing = {str(name) for (name,) in connection.execute("SELECT rolname FROM pg_roles")}
    session.config.stash[_RUN_KEY] = (server, owner, existing)
    os.environ[_OWNER_VARIABLE] = f"{owner.name}:{owner.group}:{owner.password}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop and delete the run's own server, with everything on it; on a server it was
    given, drop the run's owner, then the roles its migrations made that nothing uses."""
    scratch = session.config.stash.get(_SCRATCH_KEY, None)
    if scratch is not None:
        run_server.stop(scratch)
    else:
        _drop_run_roles(session)


def _drop_run_roles(session: pytest.Session) -> None:
    found = session.config.stash.get(_RUN_KEY, None)
    if found is None:
        return
    server, owner, existing = found
    made = [role for role in (*ROLES, *STORY_ROLES) if role not in existing]
    try:
        neon_owner.drop_owner(server, owner)
        with database.admin_connection(server) as connection:
            for role in made:
                connection.execute(sql.SQL(_DROP_IF_UNUSED).format(role=sql.Literal(role)))
    except psycopg.Error as exc:  # a leftover is reported; the tests' outcome stands
        session.config.issue_config_time_warning(
            pytest.PytestWarning(f"the run's roles were not all dropped: {exc}"), stacklevel=1
        )


_DROP_IF_UNUSED = """
DO $drop$
DECLARE
    role text := {role};
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role) THEN
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_shdepend WHERE refobjid = role::regrole)
       AND NOT EXISTS (SELECT FROM pg_auth_members WHERE roleid = role::regrole) THEN
        EXECUTE format('DROP ROLE %I', role);
    END IF;
END
$drop$
"""


@dataclass(frozen=True)
class ServerRoles:
    """The server of this run: its superuser's URL (None when the run was given no
    superuser) and the URL of the role the tests act as, Neon's owner."""

    superuser: URL | None
    owner: URL


@pytest.fixture(scope="session")
def test_server() -> ServerRoles:
    server = given_server()
    named = os.environ.get(_OWNER_VARIABLE)
    if named:
        name, group, password = named.split(":", 2)
        owner = neon_owner.NeonOwner(name, group, password).url(server)
        return ServerRoles(superuser=server, owner=owner)
    if _is_superuser(server):
        raise pytest.UsageError("the run's Neon-shaped owner was not made (pytest_sessionstart)")
    return ServerRoles(superuser=None, owner=server)


@pytest.fixture(scope="session")
def admin_url(test_server: ServerRoles) -> URL:
    """The URL every test creates, migrates and seeds its databases as: Neon's owner."""
    url = test_server.owner
    # Throwaway databases of the tools (the revision check, docs, reviews) that the tests
    # start go to the test server too, never to a server of a copy's own.
    os.environ[database.REVIEW_URL_VARIABLE] = child_url(url)
    return url


@pytest.fixture
def superuser_url(test_server: ServerRoles, request: pytest.FixtureRequest) -> URL:
    """The server's superuser, for the few tests that need one: each says why in its
    ``@pytest.mark.superuser("why")``; skipped when the run was given no superuser."""
    mark = request.node.get_closest_marker("superuser")
    if mark is None or not mark.args:
        raise pytest.UsageError(
            f"{request.node.nodeid} uses superuser_url without @pytest.mark.superuser('why')"
        )
    if test_server.superuser is None:
        pytest.skip(f"needs a superuser ({mark.args[0]}); TEST_DATABASE_URL is not one")
    return test_server.superuser


def _drop(admin_url: URL, name: str) -> None:
    """Drop a test database once a superuser's sessions in it (a test that needs one)
    have ended: a client's disconnect ends its server process a moment later, and
    ``DROP DATABASE ... WITH (FORCE)`` as Neon's owner refuses to end a superuser's
    rather than wait. Anyone else's it ends."""
    with database.admin_connection(admin_url) as connection:
        for _ in range(100):
            left = connection.execute(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_roles r ON r.oid = a.usesysid"
                " WHERE a.datname = %s AND r.rolsuper",
                [name],
            ).fetchone()
            if not left or not left[0]:
                break
            time.sleep(0.05)
    database.drop_database(admin_url, name)


@pytest.fixture(scope="session")
def _databases(admin_url: URL) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for name in created:
        _drop(admin_url, name)


@pytest.fixture
def new_database(admin_url: URL, _databases: list[str]) -> Iterator[NewDatabase]:
    """Factory: ``new_database(template=None)`` creates a throwaway database."""
    mine: list[str] = []

    def create(*, template: str | None = None) -> URL:
        name = f"{DATABASE_PREFIX}{uuid.uuid4().hex[:12]}"
        _databases.append(name)
        mine.append(name)
        return database.create_database(admin_url, name, template=template)

    yield create
    for name in mine:
        _drop(admin_url, name)
        _databases.remove(name)


def database_copy(admin_url: URL, template: str, label: str) -> ContextManager[URL]:
    """A ``todo_test_`` copy of `template` for a whole module, dropped afterwards."""
    return database.throwaway_database(admin_url, DATABASE_PREFIX, label, template=template)


@pytest.fixture(scope="session")
def head_template(admin_url: URL, _databases: list[str]) -> str:
    """A database migrated to head once per run; tests copy it instead of migrating."""
    name = f"{DATABASE_PREFIX}head_{uuid.uuid4().hex[:8]}"
    _databases.append(name)
    upgrade(database.create_database(admin_url, name))
    return name


@pytest.fixture(scope="session", autouse=True)
def _roles_stay(admin_url: URL, head_template: str) -> str:
    """Built before any test runs, the head template keeps grants to the cluster-wide
    roles, so no test's downgrade (``drop_role_if_unused``) can drop them while another
    test process is migrating a database of its own.

    Tests act as the application roles (``SET LOCAL ROLE todo_app``): the owner, no
    superuser, is made a member of them first, as it may be of the roles it manages."""
    with database.admin_connection(admin_url) as connection:
        if not neon_owner.is_superuser(connection):
            for role in ROLES:
                # Another worker of this run may grant it at that very moment.
                with contextlib.suppress(psycopg.errors.UniqueViolation):
                    connection.execute(
                        sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role))
                    )
    return head_template


@pytest.fixture
def empty_url(new_database: NewDatabase) -> URL:
    return new_database()


@pytest.fixture
def head_url(new_database: NewDatabase, head_template: str) -> URL:
    """A fresh database at head (a copy of the session's migrated template)."""
    return new_database(template=head_template)


@pytest.fixture
def head_engine(head_url: URL) -> Iterator[Engine]:
    engine = new_engine(head_url)
    yield engine
    engine.dispose()


# pytest-alembic: each of its tests runs on its own empty database.
@pytest.fixture
def alembic_config() -> Config:
    return make_alembic_config()


@pytest.fixture
def alembic_engine(empty_url: URL) -> Iterator[Engine]:
    engine = new_engine(empty_url)
    yield engine
    engine.dispose()


def child_url(url: URL) -> str:
    """`url` for a child process: on the embedded server, with its socket directory."""
    if not url.host and "host" not in url.query and os.environ.get("PGHOST"):
        url = url.update_query_dict({"host": os.environ["PGHOST"]})
    return url.render_as_string(hide_password=False)


def scalar(engine: Engine, statement: str, **params: object) -> object:
    with engine.connect() as connection:
        return connection.execute(sa.text(statement), params).scalar()


#: Folders whose tests take a story through the command line for seconds each.
LONG_STORIES = ("stories", "review")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long stories of the fast tier first, a module at a time at the head of each
    worker's share. pytest-xdist's work stealing (``make test``) splits the collection
    into one run of tests per worker, in this order, and a worker that runs dry takes the
    last half of another's queue. Collected last, as their folders' names put them, the
    stories left the run waiting on one worker for the last of them (``make test``,
    median of three runs: 128 s, and 115 s with them first); all at the head of the
    first worker's share, the thieves split their modules and each built a module's
    fixture again (four builds of the sharing story's copy, ~4 s each). The slow tier
    keeps the order as collected, which measured faster there (72-80 s, against 90-154 s
    with its stories first): its stories run the derived tests in pytest processes of
    their own, and started together they took both cores from everything else."""
    tests = PROJECT_ROOT / "tests"

    def long_story(item: pytest.Item) -> bool:
        folder = item.path.relative_to(tests).parts[0] if item.path.is_relative_to(tests) else ""
        return folder in LONG_STORIES and item.get_closest_marker("slow") is None

    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    heads: list[list[pytest.Item]] = [[] for _ in range(workers)]
    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        if long_story(item):
            modules.setdefault(item.path, []).append(item)
    for index, module in enumerate(modules.values()):
        heads[index % workers].extend(module)
    rest = [item for item in items if not long_story(item)]
    ordered: list[pytest.Item] = []
    left = len(items)
    for worker, head in enumerate(heads):
        share = left // (workers - worker)  # as pytest-xdist's work stealing splits
        left -= share
        taken = max(0, share - len(head))
        ordered += head + rest[:taken]
        rest = rest[taken:]
    items[:] = ordered + rest
