"""The API's side of the verified identity (session_binding), through a real PgBouncer in
transaction mode, as Neon's pooled endpoint is.

One database copied from head, a LOGIN role that is a member of ``todo_app`` (as the
API's is at deployment), users with live and expired Better Auth sessions, and PgBouncer
in front of it with fewer server connections than clients, so that transactions of
different users share server sessions as they do in production.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, select

import session_binding
from models import Todo, TodoCreate, metadata
from models.security import APP_ROLE
from session_binding import (
    BindingError,
    InvalidSessionError,
    NoIdentityError,
    acting_for,
    bind,
    bind_every_transaction,
    bound_user_id,
    guard,
)
from tests.conftest import database_copy, new_engine
from tests.support import pgbouncer
from tests.support.api_roles import create_login_role, drop_login_role
from tests.support.pgbouncer import Binary, PgBouncer, Upstream, running, upstream_of
from tests.support.rls_helpers import seed
from todo_database.deploy import database

#: The helper's fixture: the installed PgBouncer, or a skip saying what to install.
pgbouncer_binary = pgbouncer.pgbouncer_binary

USERS = tuple(f"api-user-{n:02d}" for n in range(12))
#: Clients (threads) against PgBouncer's server connections for the main alias.
THREADS = 32
SERVER_CONNECTIONS = 4
TRANSACTIONS_PER_THREAD = 12
#: psycopg prepares a statement on the server after this many executions per connection.
PREPARE_THRESHOLD = 5

#: Better Auth's sessions.
SESSIONS = metadata.tables["session"]

PROBE = sa.text(
    "SELECT pg_backend_pid() AS pid, public.verified_user_id() AS verified, "
    "current_setting('app.user_id', true) AS claimed"
)


@dataclass(frozen=True)
class ApiDatabase:
    """The copy the API's login role works on, and who is in it."""

    url: URL
    login_role: str
    password: str
    #: A live session token per user.
    tokens: dict[str, str]
    expired_token: str
    #: Each user's todo ids, as seeded.
    todos: dict[str, frozenset[uuid.UUID]]


@pytest.fixture(scope="module")
def api_database(admin_url: URL, head_template: str) -> Iterator[ApiDatabase]:
    role = f"todo_test_api_{uuid.uuid4().hex[:8]}"
    password = secrets.token_hex(16)
    with database.admin_connection(admin_url) as admin:
        create_login_role(admin, role, APP_ROLE, password)
    try:
        with database_copy(admin_url, head_template, "api") as url:
            yield _seeded(url, role, password)
    finally:
        # After the copy, whose drop ends the role's last sessions.
        with database.admin_connection(admin_url) as admin:
            drop_login_role(admin, role)


def _seeded(url: URL, role: str, password: str) -> ApiDatabase:
    engine = new_engine(url)
    now = datetime.now(UTC)
    tokens = {user: secrets.token_urlsafe(24) for user in USERS}
    expired_token = secrets.token_urlsafe(24)
    sessions = [
        {"token": token, "userId": user, "expiresAt": now + timedelta(days=1)}
        for user, token in tokens.items()
    ] + [{"token": expired_token, "userId": USERS[0], "expiresAt": now - timedelta(minutes=1)}]
    try:
        with engine.begin() as connection:
            seeded = seed(connection, USERS)
            connection.execute(
                sa.insert(SESSIONS),
                [{"id": uuid.uuid4().hex, "updatedAt": now, **row} for row in sessions],
            )
    finally:
        engine.dispose()
    todos = {
        user: frozenset(uuid.UUID(str(row.values["id"])) for row in seeded.of("todo", user))
        for user in USERS
    }
    return ApiDatabase(url, role, password, tokens, expired_token, todos)


@pytest.fixture(scope="module")
def pooler(
    pgbouncer_binary: Binary, api_database: ApiDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgBouncer]:
    """PgBouncer in front of the copy: ``todo`` with SERVER_CONNECTIONS server
    connections, ``todo_one`` with one (every transaction on the same server session),
    ``todo_two`` with two."""
    upstream = _upstream(api_database)
    databases = {
        "todo": upstream,
        "todo_one": upstream.with_pool_size(1),
        "todo_two": upstream.with_pool_size(2),
    }
    settings = {"default_pool_size": SERVER_CONNECTIONS}
    directory = _directory(tmp_path_factory)
    with running(pgbouncer_binary, directory, databases, settings=settings) as bouncer:
        yield bouncer


def _upstream(api: ApiDatabase) -> Upstream:
    return upstream_of(api.url, user=api.login_role, password=api.password)


def _directory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pgbouncer")


@pytest.fixture(scope="module")
def api_engine(pooler: PgBouncer, api_database: ApiDatabase) -> Iterator[Engine]:
    engine = session_binding.create_engine(
        pooler.url("todo", api_database.login_role),
        transaction_pooler=True,
        pool_size=THREADS,
        max_overflow=0,
    )
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def sessions(api_engine: Engine) -> sessionmaker[Session]:
    return bind_every_transaction(sessionmaker(api_engine, class_=Session))


@dataclass(frozen=True)
class Seen:
    """What one request saw."""

    user: str
    bound: str | None
    verified: str | None
    claimed: str
    pid: int
    todos: frozenset[uuid.UUID]
    owners: frozenset[str]


def one_request(sessions: sessionmaker[Session], user: str) -> Seen:
    """A request of the API: its todos, and whom the database thinks it acts for."""
    with sessions() as session, session.begin():
        bound = bound_user_id(session)
        todos = session.exec(select(Todo.id, Todo.user_id)).all()
        probe = session.connection().execute(PROBE).one()
        return Seen(
            user,
            bound,
            probe.verified,
            probe.claimed,
            probe.pid,
            frozenset(todo_id for todo_id, _ in todos if todo_id is not None),
            frozenset(owner for _, owner in todos),
        )


def assert_own(seen: Seen, api: ApiDatabase) -> None:
    assert (seen.bound, seen.verified, seen.claimed) == (seen.user, seen.user, seen.user)
    assert seen.owners <= {seen.user}
    assert seen.todos == api.todos[seen.user]


# --- many users at once -------------------------------------------------------------------


def test_concurrent_requests_of_many_users_each_see_only_their_own(
    sessions: sessionmaker[Session], api_database: ApiDatabase
) -> None:
    """32 threads, each acting for a different user in turn, through 4 server
    connections: every request is bound to its own user and sees exactly that user's
    todos, while server sessions pass from one user to another. Each client connection
    runs the same statements well past psycopg's prepare threshold."""
    start = threading.Barrier(THREADS)

    def client(thread: int) -> list[Seen]:
        start.wait()
        seen = []
        for n in range(TRANSACTIONS_PER_THREAD):
            user = USERS[(thread + n) % len(USERS)]
            with acting_for(api_database.tokens[user]):
                seen.append(one_request(sessions, user))
        return seen

    with ThreadPoolExecutor(THREADS) as pool:
        everything = [seen for batch in pool.map(client, range(THREADS)) for seen in batch]

    assert len(everything) == THREADS * TRANSACTIONS_PER_THREAD
    for seen in everything:
        assert_own(seen, api_database)
    users_by_server = defaultdict(set)
    for seen in everything:
        users_by_server[seen.pid].add(seen.user)
    assert len(users_by_server) <= SERVER_CONNECTIONS
    assert max(len(users) for users in users_by_server.values()) > 1


def test_asyncio_tasks_never_see_each_others_identity(
    sessions: sessionmaker[Session], api_database: ApiDatabase
) -> None:
    """Tasks on one event loop, each declaring its user and yielding to all the others
    before its database work runs in a worker thread (as Starlette runs a sync
    endpoint): each thread binds its own task's user."""

    async def request(user: str) -> Seen:
        with acting_for(api_database.tokens[user]):
            await asyncio.sleep(0)
            return await asyncio.to_thread(one_request, sessions, user)

    async def all_at_once() -> list[Seen]:
        return await asyncio.gather(*(request(user) for user in USERS * 4))

    for seen in asyncio.run(all_at_once()):
        assert_own(seen, api_database)


# --- failing closed -----------------------------------------------------------------------


def _executed(engine: Engine) -> list[str]:
    """The statements `engine` sends to the server from now on."""
    statements: list[str] = []

    def record(connection: Connection, cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine, "after_cursor_execute", record)
    return statements


@pytest.fixture
def quiet_engine(pooler: PgBouncer, api_database: ApiDatabase) -> Iterator[Engine]:
    """An engine of the API's own for one test, its statements countable."""
    engine = session_binding.create_engine(
        pooler.url("todo", api_database.login_role), transaction_pooler=True, poolclass=sa.NullPool
    )
    yield engine
    engine.dispose()


def test_a_transaction_without_identity_raises_before_any_statement(
    quiet_engine: Engine,
) -> None:
    executed = _executed(quiet_engine)
    quiet_sessions = bind_every_transaction(sessionmaker(quiet_engine, class_=Session))

    with quiet_sessions() as session, pytest.raises(NoIdentityError, match="acting_for"):
        session.exec(select(Todo))
    with quiet_engine.connect() as connection, pytest.raises(NoIdentityError):
        connection.execute(select(Todo))
    # A thread started by a request does not inherit its identity.
    failures: list[BaseException] = []

    def in_a_new_thread() -> None:
        try:
            with quiet_sessions() as session:
                session.exec(select(Todo))
        except NoIdentityError as error:
            failures.append(error)

    with acting_for("whoever"):
        worker = threading.Thread(target=in_a_new_thread)
        worker.start()
        worker.join()

    assert len(failures) == 1
    assert executed == []


@pytest.mark.parametrize("which", ["expired", "unknown", "empty"])
def test_a_dead_token_raises_and_the_transaction_stays_refused(
    which: str, quiet_engine: Engine, api_database: ApiDatabase
) -> None:
    token = {"expired": api_database.expired_token, "unknown": "no-such-token", "empty": ""}
    quiet_sessions = bind_every_transaction(sessionmaker(quiet_engine, class_=Session))
    executed = _executed(quiet_engine)

    with quiet_sessions() as session:
        with acting_for(token[which]), pytest.raises(InvalidSessionError):
            session.exec(select(Todo))
        # Caught and ignored, the failure still leaves nothing runnable in that transaction.
        with pytest.raises(NoIdentityError):
            session.exec(select(Todo))
        session.rollback()
        with acting_for(api_database.tokens[USERS[0]]):
            assert bound_user_id(session) == USERS[0]

    assert not any("todo" in statement for statement in executed)


def test_signing_out_ends_the_binding_at_the_next_transaction(
    quiet_engine: Engine, api_database: ApiDatabase
) -> None:
    """The token is verified per transaction, so a session deleted by Better Auth (sign
    out) stops working at the next one."""
    user = USERS[-1]
    token = secrets.token_urlsafe(24)
    now = datetime.now(UTC)
    row = {"id": uuid.uuid4().hex, "token": token, "userId": user, "updatedAt": now}
    admin = new_engine(api_database.url)
    try:
        with admin.begin() as connection:
            connection.execute(
                sa.insert(SESSIONS),
                [{**row, "expiresAt": now + timedelta(hours=1)}],
            )
        quiet_sessions = bind_every_transaction(sessionmaker(quiet_engine, class_=Session))
        with acting_for(token), quiet_sessions() as session:
            assert bound_user_id(session) == user
            session.commit()
            with admin.begin() as connection:
                connection.execute(sa.text("DELETE FROM session WHERE token = :t"), {"t": token})
            with pytest.raises(InvalidSessionError):
                session.exec(select(Todo))
    finally:
        admin.dispose()


# --- every transaction, again -------------------------------------------------------------


def test_commit_and_rollback_then_reuse_bind_again(
    quiet_engine: Engine, api_database: ApiDatabase
) -> None:
    quiet_sessions = bind_every_transaction(sessionmaker(quiet_engine, class_=Session))
    executed = _executed(quiet_engine)
    first_statements = _first_statements(quiet_engine, executed)
    alice, bob = USERS[1], USERS[2]
    transaction_start = sa.text("SELECT current_setting('app.session_bound')")

    with quiet_sessions() as session:
        with acting_for(api_database.tokens[alice]):
            first = session.scalar(transaction_start)
            session.commit()
            second = session.scalar(transaction_start)
            session.rollback()
            third = session.scalar(transaction_start)
            with session.begin_nested():  # a savepoint is not a new transaction
                assert bound_user_id(session) == alice
            session.commit()
        with acting_for(api_database.tokens[bob]):
            assert set(session.exec(select(Todo.user_id)).all()) == {bob}
            assert bound_user_id(session) == bob

    assert len({first, second, third}) == 3
    assert len(first_statements) == 4
    assert all("bind_session" in executed[at] for at in first_statements)
    assert sum("bind_session" in statement for statement in executed) == 4


def _first_statements(engine: Engine, executed: list[str]) -> list[int]:
    """Where in `executed` each transaction `engine` begins from now on starts."""
    starts: list[int] = []
    event.listen(engine, "begin", lambda connection: starts.append(len(executed)))
    return starts


def test_every_new_sessionmaker_binds_though_it_reuses_a_collected_ones_address(
    quiet_engine: Engine, api_database: ApiDatabase
) -> None:
    """An API that makes its sessionmakers as it goes (per request, per test) gets a
    binding from every one. SQLAlchemy's event registry remembers a class-level listener
    by ``id()`` of its target, after the target is gone: asked through
    ``event.contains``, a new sessionmaker at a collected one's address looked bound and
    never bound (within a few rounds of this loop, and now and then in the suite under
    load)."""
    user = USERS[2]
    addresses_collected: set[int] = set()
    reused = 0
    for _ in range(200):
        factory = bind_every_transaction(sessionmaker(quiet_engine, class_=Session))
        if id(factory) in addresses_collected:
            reused += 1
            with acting_for(api_database.tokens[user]), factory() as session:
                assert bound_user_id(session) == user
            if reused == 3:
                break
        addresses_collected.add(id(factory))
        del factory
        gc.collect()
    assert reused, "no sessionmaker took a collected one's address: the test proved nothing"


def test_a_core_connection_binds_per_transaction(
    quiet_engine: Engine, api_database: ApiDatabase
) -> None:
    user = USERS[3]
    with quiet_engine.connect() as connection:
        with connection.begin():
            assert bind(connection, api_database.tokens[user]) == user
            owners = set(connection.scalars(select(Todo.user_id)))
            assert owners == {user}
            assert bound_user_id(connection) == user
        # A new transaction (autobegun) has no binding until bind runs in it.
        with pytest.raises(NoIdentityError):
            connection.execute(select(Todo.id))
        connection.rollback()
        with connection.begin():
            assert bind(connection, None) is None
            assert connection.scalar(sa.select(sa.func.count()).select_from(Todo)) == 0
        with connection.begin(), pytest.raises(InvalidSessionError):
            bind(connection, api_database.expired_token)

    autocommit = quiet_engine.execution_options(isolation_level="AUTOCOMMIT")
    with autocommit.connect() as connection, pytest.raises(BindingError, match="autocommit"):
        bind(connection, api_database.tokens[user])


# --- what a pooled server session keeps -----------------------------------------------------


def test_session_level_settings_left_on_a_pooled_connection_grant_nothing(
    pooler: PgBouncer, api_database: ApiDatabase
) -> None:
    """A request sets app.user_id, app.session_token and app.session_bound at session
    level (``set_config(..., false)``) for a victim, with the victim's own live token; the
    next transactions on that same server session (``todo_one``: one server connection)
    find the settings there and are granted nothing by them."""
    attacker, victim, other = USERS[4], USERS[5], USERS[6]
    url = pooler.url("todo_one", api_database.login_role)
    api = session_binding.create_engine(url, transaction_pooler=True, poolclass=sa.NullPool)
    # A client of its own that never binds: what the settings alone would grant.
    unbound = sa.create_engine(
        url, poolclass=sa.NullPool, connect_args=dict(session_binding.POOLER_CONNECT_ARGS)
    )
    api_sessions = bind_every_transaction(sessionmaker(api, class_=Session))
    try:
        with acting_for(api_database.tokens[attacker]), api_sessions() as session:
            session.connection().execute(
                sa.text(
                    "SELECT set_config('app.user_id', :victim, false), "
                    "set_config('app.session_token', :token, false), "
                    "set_config('app.session_bound', "
                    "extract(epoch FROM now())::text, false)"
                ),
                {"victim": victim, "token": api_database.tokens[victim]},
            )
            injected_on = session.connection().execute(PROBE).one().pid
            session.commit()

        with unbound.connect() as connection:
            leftover = connection.execute(PROBE).one()
            assert (leftover.pid, leftover.claimed) == (injected_on, victim)
            assert leftover.verified is None
            assert connection.scalar(sa.select(sa.func.count()).select_from(Todo)) == 0
            assert list(connection.execute(sa.text('SELECT id FROM "user"'))) == []
            connection.rollback()

        with acting_for(None), api_sessions() as session:
            assert bound_user_id(session) is None
            assert session.exec(select(Todo)).all() == []
            assert session.connection().execute(PROBE).one().pid == injected_on

        with acting_for(api_database.tokens[other]):
            seen = one_request(api_sessions, other)
        assert seen.pid == injected_on
        assert_own(seen, api_database)
    finally:
        api.dispose()
        unbound.dispose()


# --- prepared statements through the pooler -------------------------------------------------


def _statement_moves_to_another_server(engine: Engine, holder: Engine) -> int:
    """Run the API's statements past psycopg's prepare threshold on one client
    connection, then, while another client holds the server session they ran on
    (PgBouncer hands out the most recently used one first), once more: on the other
    server session of ``todo_two``. Returns how many statements that session holds
    prepared."""
    count = sa.select(sa.func.count()).select_from(Todo)
    prepared = sa.text("SELECT count(*) FROM pg_prepared_statements")
    with engine.connect() as client:
        for _ in range(PREPARE_THRESHOLD + 2):
            with client.begin():
                bind(client, None)
                client.scalar(count)
        with holder.connect() as other, other.begin():
            bind(other, None)
            held = other.scalar(sa.text("SELECT pg_backend_pid()"))
            with client.begin():
                bind(client, None)
                client.scalar(count)
                assert client.scalar(sa.text("SELECT pg_backend_pid()")) != held
                return int(client.scalar(prepared) or 0)


def test_prepared_statements_are_no_option() -> None:
    """An injected ``DEALLOCATE``/``PREPARE`` under psycopg's predictable names would
    replace the binding's own statement for the next request on that server connection
    (tests/session_binding/test_injection.py tries it): the engine prepares nothing, and
    refuses to."""
    url = "postgresql://app@ep-cool-darkness-123456-pooler.eu-central-1.aws.neon.tech/neondb"
    with pytest.raises(TypeError, match="prepared_statements is no option"):
        session_binding.create_engine(url, prepared_statements=True)
    with pytest.raises(ValueError, match="prepare_threshold must stay None"):
        session_binding.create_engine(url, connect_args={"prepare_threshold": 5})


def test_psycopgs_default_would_break_through_the_pooler(
    pooler: PgBouncer, api_database: ApiDatabase
) -> None:
    """Why, besides: with psycopg's default (prepare after 5 runs), a statement prepared
    on one server session is executed on another, which never heard of it."""
    url = pooler.url("todo_two", api_database.login_role)
    prepared = guard(sa.create_engine(url, poolclass=sa.NullPool))
    holder = session_binding.create_engine(url, transaction_pooler=True, poolclass=sa.NullPool)
    try:
        with pytest.raises(ProgrammingError, match=r'prepared statement "_pg3_\d+" does not exist'):
            _statement_moves_to_another_server(prepared, holder)
    finally:
        prepared.dispose()
        holder.dispose()


def test_the_apis_statements_run_on_any_server_and_nothing_is_prepared(
    pooler: PgBouncer, api_database: ApiDatabase
) -> None:
    url = pooler.url("todo_two", api_database.login_role)
    engine = session_binding.create_engine(url, transaction_pooler=True, poolclass=sa.NullPool)
    holder = session_binding.create_engine(url, transaction_pooler=True, poolclass=sa.NullPool)
    try:
        assert _statement_moves_to_another_server(engine, holder) == 0
        with engine.connect() as connection:
            driver = connection.connection.driver_connection
            assert driver is not None
            assert driver.prepare_threshold is None
    finally:
        engine.dispose()
        holder.dispose()


# --- the engine factory ---------------------------------------------------------------------


def test_neon_pooled_hosts_are_recognised() -> None:
    pooled = "postgresql://app@ep-cool-darkness-123456-pooler.eu-central-1.aws.neon.tech/neondb"
    direct = "postgresql://app@ep-cool-darkness-123456.eu-central-1.aws.neon.tech/neondb"
    assert session_binding.is_pooled(pooled)
    assert not session_binding.is_pooled(direct)
    engine = session_binding.create_engine(pooled)
    assert engine.dialect.driver == "psycopg"
    with pytest.raises(ValueError, match="psycopg 3"):
        session_binding.create_engine("mysql://app@localhost/todo")


# --- the request handlers docs/api.md and the contract show --------------------------------


def test_the_documented_request_handlers_work(
    api_engine: Engine, api_database: ApiDatabase
) -> None:
    """The handlers of docs/api.md ("The application") and the contract, as written there,
    on the pooled engine: the owner comes from the binding, never from the request."""
    sessions = bind_every_transaction(
        sessionmaker(api_engine, class_=Session, expire_on_commit=False)
    )
    user = USERS[7]
    token = api_database.tokens[user]

    def list_todos(token: str | None) -> list[Todo]:
        with acting_for(token), sessions() as session:
            query = select(Todo).order_by(Todo.created_at.desc(), Todo.id.desc()).limit(50)  # type: ignore[union-attr]
            return list(session.exec(query))

    def create_todo(token: str, body: TodoCreate) -> Todo:
        with acting_for(token), sessions() as session, session.begin():
            owner = bound_user_id(session)
            todo = Todo.model_validate(body, update={"user_id": owner})
            session.add(todo)
            session.flush()
            session.refresh(todo)
            return todo

    created = create_todo(token, TodoCreate(title="written through the pooler"))
    try:
        assert created.user_id == user
        assert created.id in {todo.id for todo in list_todos(token)}
        assert list_todos(None) == []
        with pytest.raises(InvalidSessionError):
            create_todo(api_database.expired_token, TodoCreate(title="never written"))
    finally:
        with acting_for(token), sessions() as session, session.begin():
            session.delete(session.get_one(Todo, created.id))
    assert {todo.id for todo in list_todos(token)} == api_database.todos[user]
