"""Fixtures: every test gets databases of its own, on a real PostgreSQL server.

The server is the embedded one (the developer's ``.pgdata`` cluster, never its
``todo`` database) unless ``TEST_DATABASE_URL`` names an admin URL of another.
Every database a test creates is named ``todo_test_*`` and dropped afterwards; no
other database is ever dropped.
"""

from __future__ import annotations

import os
import textwrap
import uuid
from argparse import Namespace
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import pool
from sqlalchemy.engine import URL, Engine

from migrations import database, schema_docs
from models.security import ROLES

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


@pytest.fixture(scope="session")
def admin_url() -> URL:
    raw = os.environ.get("TEST_DATABASE_URL", "").strip()
    if raw:
        url = database.parse_url(raw)
    else:
        url = database.embedded_url(database="postgres")
        # The embedded server listens on a Unix socket whose path, URL-encoded, puts '%'
        # in every URL; pytest-alembic hands URLs through configparser, which rejects '%'.
        # libpq reads the socket directory from PGHOST instead, here and in every child.
        os.environ["PGHOST"] = str(url.query["host"])
        url = url.difference_update_query(["host"])
    # Throwaway databases of the tools (the revision check, docs, reviews) that the tests
    # start go to the test server too, never to a server of a copy's own.
    os.environ[schema_docs.ADMIN_URL_VARIABLE] = child_url(url)
    return url


@pytest.fixture(scope="session")
def _databases(admin_url: URL) -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for name in created:
        database.drop_database(admin_url, name)


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
        database.drop_database(admin_url, name)
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

    Tests act as the application roles (``SET LOCAL ROLE todo_app``). A superuser may;
    an admin role that is not one (Neon's ``neondb_owner``, which bypasses RLS but is
    no superuser) is made a member of them first."""
    with database.admin_connection(admin_url) as connection:
        row = connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if row.fetchone() != (True,):
            for role in ROLES:
                connection.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
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
