"""``neon-branch``: give a pull request a Neon branch of its own, migrated to head.

Subcommands::

    neon-branch create NAME [--parent BRANCH] [--schema-only] [--expires-in 7d]
    neon-branch url NAME [--pooled] [--show-password]
    neon-branch delete NAME
    neon-branch list
    neon-branch restore-point BRANCH [--revision REVISION] [--expires-in 7d]

``create`` makes the branch with a read-write compute (or reuses the branch of that
name), waits for Neon's operations, runs ``alembic upgrade head`` over the direct
(non-pooled) connection, and prints ``branch_id=``, ``db_url=`` and ``db_url_pooled=``
lines, appended to ``$GITHUB_OUTPUT`` too when that is set. Its migration makes no
restore point (``-x restore_point=off``): the branch is a copy, its parent keeps the
data. ``restore-point`` makes one by hand, as a deploy makes it before a revision that
destroys data (:mod:`todo_database.neon.restore_point`): a branch of BRANCH as it is, with no
compute and not migrated, named ``restore/<REVISION or BRANCH>-<UTC time>``.

Configuration: ``NEON_API_KEY`` (required), ``NEON_PROJECT_ID`` or ``--project-id``,
``NEON_API_HOST``, ``NEON_DATABASE``/``--database``, ``NEON_ROLE``/``--role``,
``--retry-for`` and ``--wait-for``. Progress goes to stderr, results to stdout; errors
are one ``neon-branch: error:`` line and exit code 2. The API key and passwords never
appear in what is printed for people; ``db_url`` values and ``url --show-password`` are
for machines (on GitHub Actions, an ``::add-mask::`` line for the password comes first).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from todo_database.deploy import database

PROG = "neon-branch"
DEFAULT_API_HOST = "https://console.neon.tech/api/v2"
DEFAULT_DATABASE = "neondb"
DEFAULT_ROLE = "neondb_owner"
DEFAULT_RETRY_FOR_S = 120.0
DEFAULT_WAIT_FOR_S = 300.0
#: First retry delay; doubled on each retry up to MAX_RETRY_DELAY_S. NEON_RETRY_BASE_DELAY.
DEFAULT_BASE_DELAY_S = 1.0
MAX_RETRY_DELAY_S = 10.0
MAX_POLL_DELAY_S = 2.0
REPORT_EVERY_S = 5.0
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)

#: 423 Locked: another operation runs on the project; 429: rate limited; 5xx: Neon's side.
RETRY_STATUSES = frozenset({423, 429, *range(500, 600)})
#: Answers that say the request was not applied, so even a POST may simply be sent again.
NOT_APPLIED_STATUSES = frozenset({423, 429})
OPERATION_DONE = frozenset({"finished", "skipped"})
OPERATION_FAILED = frozenset({"failed", "error", "cancelled"})

_DURATION = re.compile(r"(\d+)([mhd])")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days"}

Json = dict[str, Any]

#: Values never shown to people (the API key, passwords): every line printed is scrubbed.
_secrets: set[str] = set()


class NeonError(Exception):
    """A failure explained in one line, fit to show a person."""


class NotFoundError(NeonError):
    """The API answered 404."""


@dataclass(frozen=True)
class Branch:
    id: str
    name: str
    parent_id: str | None
    created_at: str
    default: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Branch:
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            parent_id=data.get("parent_id"),
            created_at=str(data.get("created_at", "")),
            default=bool(data.get("default", False)),
        )


def keep_secret(value: str | None) -> None:
    if value and len(value) >= 4:
        _secrets.add(value)


def scrub(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, "***")
    return text


def say(message: str) -> None:
    """Progress, for people, on stderr."""
    print(f"{PROG}: {scrub(message)}", file=sys.stderr, flush=True)


class NeonClient:
    """The few Neon API calls this tool and the deploy's restore points make, with
    retries and operation waits.

    `progress` receives the retries and waits, for people (this tool's stderr by
    default; the migration log for a deploy); `retry_option` and `wait_option` name
    the options that set `retry_for` and `wait_for`, for the messages that hit them."""

    def __init__(
        self,
        *,
        api_host: str,
        api_key: str,
        project_id: str,
        retry_for: float = DEFAULT_RETRY_FOR_S,
        wait_for: float = DEFAULT_WAIT_FOR_S,
        base_delay: float = DEFAULT_BASE_DELAY_S,
        progress: Callable[[str], None] = say,
        retry_option: str = "--retry-for",
        wait_option: str = "--wait-for",
    ) -> None:
        self.project_id = project_id
        self.retry_for = retry_for
        self.wait_for = wait_for
        self.base_delay = base_delay
        self.say = progress
        self.retry_option, self.wait_option = retry_option, wait_option
        self._http = httpx.Client(
            base_url=api_host.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=HTTP_TIMEOUT,
        )

    def __enter__(self) -> NeonClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._http.close()

    # -- requests -------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        missing: str,
        params: Mapping[str, str] | None = None,
        body: Json | None = None,
        recover: Callable[[], Json | None] | None = None,
    ) -> Json:
        """Send `method` to ``/projects/{id}{path}``, retrying 423, 429, 5xx and no answer.

        Retries stop once ``retry_for`` seconds have passed since the first attempt.
        `missing` names what a 404 means. For a request that is not safe to repeat,
        `recover` is asked, before each repeat after an answer that may have been
        applied (5xx, no answer), whether it was: its result is returned if so.
        """
        url = f"projects/{self.project_id}{path}"
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = self._http.request(method, url, params=params, json=body)
            except httpx.RequestError as exc:
                last = f"no answer ({type(exc).__name__}: {exc})"
            else:
                if response.is_success:
                    return _json(method, url, response)
                if response.status_code not in RETRY_STATUSES:
                    raise self._refusal(method, url, response, missing)
                last = f"{response.status_code} {_reason(response)}"
            elapsed = time.monotonic() - started
            remaining = self.retry_for - elapsed
            if remaining <= 0:
                raise NeonError(
                    f"gave up on {method} /{url} after {attempt} attempts in {elapsed:.1f} s "
                    f"({self.retry_option} {self.retry_for:g}); last answer: {last}"
                )
            delay = min(self._backoff(attempt, response), remaining)
            self.say(f"{method} /{url}: {last}; retrying in {delay:.1f} s")
            time.sleep(delay)
            if recover is not None and (
                response is None or response.status_code not in NOT_APPLIED_STATUSES
            ):
                recovered = recover()
                if recovered is not None:
                    return recovered

    def _backoff(self, attempt: int, response: httpx.Response | None) -> float:
        delay = min(MAX_RETRY_DELAY_S, self.base_delay * 2.0 ** (attempt - 1))
        delay *= random.uniform(0.5, 1.0)  # jitter: parallel CI jobs do not retry in step
        retry_after = response.headers.get("Retry-After", "") if response is not None else ""
        if retry_after.isdigit():
            delay = max(delay, float(retry_after))
        return delay

    def _refusal(self, method: str, url: str, response: httpx.Response, missing: str) -> NeonError:
        status = response.status_code
        if status == 401:
            return NeonError("Neon rejected the API key (401)")
        if status == 403:
            return NeonError(f"Neon denied access to project {self.project_id!r} (403)")
        if status == 404:
            return NotFoundError(f"{missing} not found (404)")
        return NeonError(f"Neon refused {method} /{url} ({status}): {_reason(response)}")

    # -- the API --------------------------------------------------------------------

    def branches(self) -> list[Branch]:
        data = self.request("GET", "/branches", missing=f"project {self.project_id!r}")
        return [Branch.from_json(branch) for branch in data["branches"]]

    def find_branch(self, name: str) -> Branch | None:
        return next((branch for branch in self.branches() if branch.name == name), None)

    def endpoint_branch_id(self, endpoint_id: str) -> str:
        """The id of the branch whose compute `endpoint_id` (``ep-...``) is."""
        data = self.request(
            "GET",
            f"/endpoints/{endpoint_id}",
            missing=f"endpoint {endpoint_id!r} in project {self.project_id!r}",
        )
        return str(data["endpoint"]["branch_id"])

    def create_branch(
        self,
        name: str,
        *,
        parent_id: str | None,
        schema_only: bool,
        expires_at: str | None,
        with_compute: bool = True,
    ) -> tuple[Branch, list[Json]]:
        """Create branch `name`, with a read-write compute unless told otherwise; return
        it and its operations."""
        spec: Json = {"name": name, "init_source": "schema-only" if schema_only else "parent-data"}
        if parent_id is not None:
            spec["parent_id"] = parent_id
        if expires_at is not None:
            spec["expires_at"] = expires_at

        def created_after_all() -> Json | None:
            found = self.find_branch(name)
            if found is None:
                return None
            self.say(f"branch {name} was created after all ({found.id})")
            return {"branch": {"id": found.id, "name": found.name}, "operations": []}

        body: Json = {"branch": spec}
        if with_compute:
            body["endpoints"] = [{"type": "read_write"}]
        data = self.request(
            "POST",
            "/branches",
            missing=f"project {self.project_id!r}",
            body=body,
            recover=created_after_all,
        )
        return Branch.from_json(data["branch"]), list(data.get("operations", []))

    def delete_branch(self, branch: Branch) -> list[Json]:
        data = self.request(
            "DELETE", f"/branches/{branch.id}", missing=f"branch {branch.name!r} ({branch.id})"
        )
        return list(data.get("operations", []))

    def connection_uri(self, branch: Branch, *, database: str, role: str, pooled: bool) -> str:
        data = self.request(
            "GET",
            "/connection_uri",
            missing=f"database {database!r} with role {role!r} on branch {branch.name!r}",
            params={
                "branch_id": branch.id,
                "database_name": database,
                "role_name": role,
                "pooled": "true" if pooled else "false",
            },
        )
        uri = str(data["uri"])
        keep_secret(_password(uri))
        return uri

    def wait(self, operations: Sequence[Json]) -> None:
        """Poll each operation until it finishes; fail on failure or after ``wait_for``."""
        for operation in operations:
            self._wait_one(operation)

    def _wait_one(self, operation: Json) -> None:
        action = str(operation.get("action", "operation"))
        started = time.monotonic()
        delay = self.base_delay
        reported: tuple[str, float] | None = None
        while True:
            status = str(operation.get("status", "unknown"))
            elapsed = time.monotonic() - started
            if status in OPERATION_DONE:
                self.say(f"operation {action} {status} ({elapsed:.1f} s)")
                return
            if status in OPERATION_FAILED:
                detail = operation.get("error") or "Neon gives no detail"
                raise NeonError(f"operation {action} {status}: {detail}")
            if elapsed > self.wait_for:
                raise NeonError(
                    f"operation {action} still {status} after {elapsed:.1f} s "
                    f"({self.wait_option} {self.wait_for:g})"
                )
            if reported is None or reported[0] != status or elapsed - reported[1] >= REPORT_EVERY_S:
                self.say(f"waiting for operation {action} ({status}, {elapsed:.1f} s)")
                reported = (status, elapsed)
            time.sleep(delay)
            delay = min(delay * 1.5, MAX_POLL_DELAY_S)
            operation = self.request(
                "GET", f"/operations/{operation['id']}", missing=f"operation {action}"
            )["operation"]


def _json(method: str, url: str, response: httpx.Response) -> Json:
    try:
        data = response.json() if response.content else {}
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise NeonError(f"{method} /{url} answered {response.status_code} without a JSON object")
    return data


def _reason(response: httpx.Response) -> str:
    """Neon's own message for a failed request, else the HTTP reason."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or response.reason_phrase or "no message").splitlines()[0]


def _password(uri: str) -> str | None:
    try:
        password = sa.make_url(uri).password
    except ArgumentError:
        return None
    return None if password is None else str(password)


# -- commands ---------------------------------------------------------------------------


def create(client: NeonClient, args: argparse.Namespace) -> int:
    branches = client.branches()
    branch = next((b for b in branches if b.name == args.name), None)
    if branch is None:
        branch = _new_branch(client, args, branches)
    else:
        given = [
            flag
            for flag, value in (
                ("--parent", args.parent),
                ("--schema-only", args.schema_only),
                ("--expires-in", args.expires_in),
            )
            if value
        ]
        note = f" ({', '.join(given)} ignored: they apply to a new branch)" if given else ""
        say(f"branch {branch.name} exists ({branch.id}): reusing it{note}")

    direct = client.connection_uri(branch, database=args.database, role=args.role, pooled=False)
    pooled = client.connection_uri(branch, database=args.database, role=args.role, pooled=True)
    migrate(direct)
    outputs = {"branch_id": branch.id, "db_url": direct, "db_url_pooled": pooled}
    lines = "".join(f"{key}={value}\n" for key, value in outputs.items())
    mask_in_github_actions(direct, pooled)
    sys.stdout.write(lines)
    github_output = os.environ.get("GITHUB_OUTPUT", "").strip()
    if github_output:
        with open(github_output, "a", encoding="utf-8") as file:
            file.write(lines)
        say(f"wrote branch_id, db_url and db_url_pooled to {github_output}")
    say(f"branch {branch.name} is at head: {database.mask(direct)}")
    return 0


def _new_branch(client: NeonClient, args: argparse.Namespace, branches: list[Branch]) -> Branch:
    """Create branch ``args.name`` as asked and wait until Neon has finished making it."""
    parent_id = None
    if args.parent is not None:
        parent = next((b for b in branches if args.parent in (b.name, b.id)), None)
        if parent is None:
            raise NeonError(f"parent branch {args.parent!r} not found")
        parent_id = parent.id
    expires_at = None
    if args.expires_in is not None:
        expires_at = (datetime.now(UTC) + args.expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    say(
        f"creating branch {args.name} from {args.parent or 'the default branch'}"
        + (" (schema only)" if args.schema_only else "")
        + (f", expiring at {expires_at}" if expires_at else "")
    )
    branch, operations = client.create_branch(
        args.name, parent_id=parent_id, schema_only=args.schema_only, expires_at=expires_at
    )
    say(f"created branch {branch.name} ({branch.id})")
    client.wait(operations)
    return branch


def url(client: NeonClient, args: argparse.Namespace) -> int:
    branch = _existing_branch(client, args.name)
    uri = client.connection_uri(branch, database=args.database, role=args.role, pooled=args.pooled)
    if not args.show_password:
        print(database.mask(uri))
        return 0
    mask_in_github_actions(uri)
    print(uri)  # for machines: DATABASE_URL=$(neon-branch url pr-1 --show-password)
    return 0


def delete(client: NeonClient, args: argparse.Namespace) -> int:
    branch = client.find_branch(args.name)
    if branch is None:
        say(f"branch {args.name} does not exist: nothing to delete")
        return 0
    say(f"deleting branch {branch.name} ({branch.id})")
    try:
        client.wait(client.delete_branch(branch))
    except NotFoundError:
        say(f"branch {branch.name} was already gone")
        return 0
    print(f"deleted branch {branch.name} ({branch.id})")
    return 0


def list_branches(client: NeonClient, args: argparse.Namespace) -> int:
    branches = client.branches()
    names = {branch.id: branch.name for branch in branches}
    rows = [("NAME", "ID", "PARENT", "CREATED")]
    rows += [
        (
            branch.name + (" (default)" if branch.default else ""),
            branch.id,
            names.get(branch.parent_id, branch.parent_id) if branch.parent_id else "-",
            branch.created_at,
        )
        for branch in sorted(branches, key=lambda b: b.created_at)
    ]
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


def restore_point(client: NeonClient, args: argparse.Namespace) -> int:
    # Imported here: todo_database.neon.restore_point builds on this module.
    from todo_database.neon.restore_point import DEFAULT_EXPIRES_IN, make_of_branch

    branches = client.branches()
    parent = next((b for b in branches if args.branch in (b.name, b.id)), None)
    if parent is None:
        raise NeonError(f"branch {args.branch!r} not found in project {client.project_id!r}")
    say(f"making a restore point of branch {parent.name} ({parent.id})")
    point = make_of_branch(
        client,
        parent,
        branches,
        label=args.revision or parent.name,
        expires_in=args.expires_in or DEFAULT_EXPIRES_IN,
    )
    for line in point.how_to_restore():
        print(line)
    return 0


def mask_in_github_actions(*uris: str) -> None:
    """On GitHub Actions, have the runner mask the passwords before the URLs are printed."""
    if os.environ.get("GITHUB_ACTIONS") == "true":
        for password in sorted({p for p in map(_password, uris) if p}):
            print(f"::add-mask::{password}", flush=True)


def _existing_branch(client: NeonClient, name: str) -> Branch:
    branch = client.find_branch(name)
    if branch is None:
        raise NeonError(f"branch {name!r} not found in project {client.project_id!r}")
    return branch


def migrate(direct_url: str) -> None:
    """``alembic upgrade head`` on `direct_url`, through the project's own alembic.ini."""
    from alembic import command
    from alembic.config import Config

    ini = database.PROJECT_ROOT / "alembic.ini"
    if not ini.is_file():
        raise NeonError(f"{ini} not found: run {PROG} from a checkout of the schema repository")
    say(f"migrating {database.mask(direct_url)} to head")
    config = Config(str(ini))
    # A branch made for a pull request is a copy: its parent keeps the data.
    config.cmd_opts = argparse.Namespace(x=["restore_point=off"])
    with _environment_variable("DATABASE_URL", direct_url):
        try:
            command.upgrade(config, "head")
        except Exception as exc:  # noqa: BLE001  (a revision fails in many ways: one line each)
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise NeonError(f"migration failed: {lines[0]}") from None


@contextmanager
def _environment_variable(name: str, value: str) -> Iterator[None]:
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


# -- command line -----------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """``30m``, ``12h``, ``7d``."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a positive number of m, h or d (30m, 12h, 7d)"
        )
    return timedelta(**{_DURATION_UNITS[match[2]]: int(match[1])})


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-id", help="Neon project (default: $NEON_PROJECT_ID)")
    common.add_argument(
        "--database", help=f"database name (default: $NEON_DATABASE or {DEFAULT_DATABASE})"
    )
    common.add_argument("--role", help=f"role name (default: $NEON_ROLE or {DEFAULT_ROLE})")
    common.add_argument(
        "--retry-for",
        type=_seconds,
        default=DEFAULT_RETRY_FOR_S,
        metavar="SECONDS",
        help="how long one API request is retried on 423, 429, 5xx (default: %(default)g)",
    )
    common.add_argument(
        "--wait-for",
        type=_seconds,
        default=DEFAULT_WAIT_FOR_S,
        metavar="SECONDS",
        help="how long to wait for Neon's operations to finish (default: %(default)g)",
    )

    parser = argparse.ArgumentParser(
        prog=PROG, description="Neon branches for pull requests, migrated to head."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create_parser = commands.add_parser(
        "create", parents=[common], help="create (or reuse) a branch and migrate it to head"
    )
    create_parser.add_argument("name", metavar="NAME")
    create_parser.add_argument("--parent", metavar="BRANCH", help="default: the default branch")
    create_parser.add_argument("--schema-only", action="store_true", help="copy no data")
    create_parser.add_argument(
        "--expires-in", type=parse_duration, metavar="DURATION", help="30m, 12h, 7d..."
    )
    create_parser.set_defaults(run=create)

    url_parser = commands.add_parser("url", parents=[common], help="print a branch's URL")
    url_parser.add_argument("name", metavar="NAME")
    url_parser.add_argument("--pooled", action="store_true", help="the pooler's URL")
    url_parser.add_argument(
        "--show-password", action="store_true", help="print the password too (for scripts)"
    )
    url_parser.set_defaults(run=url)

    delete_parser = commands.add_parser("delete", parents=[common], help="delete a branch")
    delete_parser.add_argument("name", metavar="NAME")
    delete_parser.set_defaults(run=delete)

    list_parser = commands.add_parser("list", parents=[common], help="the project's branches")
    list_parser.set_defaults(run=list_branches)

    restore_parser = commands.add_parser(
        "restore-point",
        parents=[common],
        help="a branch of BRANCH as it is now, not migrated, to restore from",
    )
    restore_parser.add_argument("branch", metavar="BRANCH", help="its name or id")
    restore_parser.add_argument(
        "--revision", help="the revision it is made before, for its name (default: BRANCH)"
    )
    restore_parser.add_argument(
        "--expires-in", type=parse_duration, metavar="DURATION", help="default: 7d"
    )
    restore_parser.set_defaults(run=restore_point)
    return parser


def _client(args: argparse.Namespace, environ: Mapping[str, str]) -> NeonClient:
    client = client_from_environment(
        environ, project_id=args.project_id, retry_for=args.retry_for, wait_for=args.wait_for
    )
    args.database = args.database or environ.get("NEON_DATABASE", "").strip() or DEFAULT_DATABASE
    args.role = args.role or environ.get("NEON_ROLE", "").strip() or DEFAULT_ROLE
    return client


def client_from_environment(
    environ: Mapping[str, str],
    *,
    project_id: str | None = None,
    retry_for: float = DEFAULT_RETRY_FOR_S,
    wait_for: float = DEFAULT_WAIT_FOR_S,
    progress: Callable[[str], None] = say,
    retry_option: str = "--retry-for",
    wait_option: str = "--wait-for",
) -> NeonClient:
    """A client configured as this tool documents it (``NEON_API_KEY``,
    ``NEON_PROJECT_ID`` unless `project_id` is given, ``NEON_API_HOST``,
    ``NEON_RETRY_BASE_DELAY``); the rest as :class:`NeonClient` takes it. The API key
    is kept secret from then on: :func:`scrub` hides it in anything printed."""
    api_key = environ.get("NEON_API_KEY", "").strip()
    if not api_key:
        raise NeonError("NEON_API_KEY is not set")
    keep_secret(api_key)
    project_id = (project_id or environ.get("NEON_PROJECT_ID", "")).strip()
    if not project_id:
        raise NeonError("no Neon project: set NEON_PROJECT_ID or pass --project-id")
    api_host = environ.get("NEON_API_HOST", "").strip() or DEFAULT_API_HOST
    try:
        valid = httpx.URL(api_host).scheme in ("https", "http") and bool(httpx.URL(api_host).host)
    except httpx.InvalidURL:
        valid = False
    if not valid:
        raise NeonError(f"NEON_API_HOST is not an http(s) URL: {api_host!r}")
    raw_delay = environ.get("NEON_RETRY_BASE_DELAY", "").strip()
    try:
        base_delay = _seconds(raw_delay) if raw_delay else DEFAULT_BASE_DELAY_S
    except argparse.ArgumentTypeError:
        raise NeonError(
            f"NEON_RETRY_BASE_DELAY is not a number of seconds: {raw_delay!r}"
        ) from None
    return NeonClient(
        api_host=api_host,
        api_key=api_key,
        project_id=project_id,
        retry_for=retry_for,
        wait_for=wait_for,
        base_delay=base_delay,
        progress=progress,
        retry_option=retry_option,
        wait_option=wait_option,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with _client(args, os.environ) as client:
            result: int = args.run(client, args)
            return result
    except NeonError as exc:
        print(f"{PROG}: error: {scrub(str(exc))}", file=sys.stderr)
        return 2
    except KeyError as exc:  # an answer without a field every Neon answer of its kind has
        print(f"{PROG}: error: Neon's answer has no {exc} field", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
