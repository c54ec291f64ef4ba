"""Neon's API: branches, their endpoints and connection URIs, and the operations
Neon runs for them, retried and waited for; the API key and passwords kept out of
what is printed (:func:`scrub`)."""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from todo_database.neon.settings import DEFAULT_RETRY_FOR_S, DEFAULT_WAIT_FOR_S, seconds

PROG = "neon-branch"


DEFAULT_API_HOST = "https://console.neon.tech/api/v2"


DEFAULT_DATABASE = "neondb"


DEFAULT_ROLE = "neondb_owner"


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
        base_delay = seconds(raw_delay) if raw_delay else DEFAULT_BASE_DELAY_S
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
