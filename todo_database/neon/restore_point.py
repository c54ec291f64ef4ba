"""Restore points: before a deploy destroys data on Neon, a branch that keeps it.

What a revision destroys is read from what it does: the SQL its upgrade runs, rendered
in process (:func:`todo_database.lint.upgrade_losses`, the reading the review and
``make revision`` use), whatever its ``destructive_acknowledged`` says. That line is its
author's reason, asked for by ``make revision``, the tests and the review; a revision
whose author forgot it runs all the same, saying so in one line, and still gets its
restore point. Before ``alembic upgrade`` runs the first such revision on a Neon
database (holding the deploy lock, before any revision of the run has touched
anything), it creates a branch of the branch being migrated,
``restore/<revision>-<UTC time>``: Neon's copy-on-write copy of it as it stands, made
in about a second whatever its size, without a compute (nothing runs or bills until
someone reads it), deleted by Neon itself after ``restore_point_expires_in`` (7 days).
The run then says how to read the lost data or to put the whole branch back.

Which branch: the database URL's host names the compute (``ep-...neon.tech``), and the
Neon API says which branch that compute serves (``NEON_API_KEY``, ``NEON_PROJECT_ID``,
``NEON_API_HOST``, as ``neon-branch`` reads them).

``restore_point`` (``-x restore_point=...``, or in ``alembic.ini``):

* ``auto``, the default: on a Neon database, a restore point or no deploy. Without
  credentials, or when Neon's API fails (after ``restore_point_retry_for`` seconds of
  retries), the run stops before anything is touched, in one line saying how to make
  one by hand. On any other database, one line says that none is made.
* ``required``: as ``auto``, and a database that is not Neon's stops the run too.
* ``off``: none; a warning line when a revision that destroys data runs.

A run that starts from an empty database (at base) makes none: nothing there yet can
be lost. Offline (``--sql``), the SQL starts with a comment naming the revisions that
destroy data and how to make a restore point before running it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from alembic.config import Config
from alembic.runtime.migration import MigrationContext, RevisionStep
from alembic.script import Script
from alembic.util import CommandError

from todo_database import lint
from todo_database.neon.settings import DEFAULT_RETRY_FOR_S, parse_duration

if TYPE_CHECKING:
    from todo_database.neon.client import Branch, NeonClient

log = logging.getLogger("migrations")

MODES = ("auto", "required", "off")
DEFAULT_EXPIRES_IN = timedelta(days=7)
NAME_PREFIX = "restore/"
CREDENTIALS = ("NEON_API_KEY", "NEON_PROJECT_ID")

#: A Neon compute's host, direct or pooled: ``ep-cool-darkness-123456.eu-central-1.aws.neon.tech``.
_NEON_HOST = re.compile(
    r"(?P<endpoint>ep-[a-z0-9]+(?:-[a-z0-9]+)*?)(?:-pooler)?\.(?:[a-z0-9-]+\.)*neon\.tech"
)


@dataclass(frozen=True)
class Settings:
    mode: str = "auto"
    expires_in: timedelta = DEFAULT_EXPIRES_IN
    #: How long Neon's API is retried (423, 429, 5xx, no answer) before the deploy stops.
    retry_for_s: float = DEFAULT_RETRY_FOR_S

    @classmethod
    def from_config(cls, config: Config, x_arguments: Mapping[str, str]) -> Settings:
        def option(name: str) -> str | None:
            value = x_arguments.get(name) or config.get_main_option(name)
            return value.strip() if value else None

        mode = (option("restore_point") or cls.mode).lower()
        if mode not in MODES:
            raise CommandError(f"restore_point = {mode!r}: use one of {', '.join(MODES)}")
        expires_in = cls.expires_in
        retry_for = cls.retry_for_s
        try:
            if raw := option("restore_point_expires_in"):
                expires_in = parse_duration(raw)
            if raw := option("restore_point_retry_for"):
                retry_for = float(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise CommandError(f"restore_point_expires_in or _retry_for: {exc}") from None
        return cls(mode=mode, expires_in=expires_in, retry_for_s=retry_for)


def neon_endpoint(host: str | None) -> str | None:
    """The Neon compute (``ep-...``) whose host `host` is, or None for any other host."""
    match = _NEON_HOST.fullmatch((host or "").lower())
    return match["endpoint"] if match else None


@dataclass(frozen=True)
class Destroying:
    """A revision of the run whose upgrade destroys data, and what."""

    script: Script
    #: What its upgrade's SQL destroys; empty when that SQL could not be rendered.
    losses: tuple[lint.Loss, ...]
    #: Why that SQL could not be read, if it could not (then it may destroy anything).
    unreadable: str | None = None

    @property
    def revision(self) -> str:
        return self.script.revision

    @property
    def reason(self) -> str | None:
        """Why, as its author says (None: the acknowledgement is missing or empty)."""
        return lint.destructive_reason(self.script.module)

    def describe(self) -> str:
        """``revision 1a2b (file.py) destroys data (column note.mood; "why")``."""
        what = lint.describe_losses(list(self.losses)) or (
            f"what, its upgrade's SQL could not tell: {self.unreadable}"
        )
        reason = " ".join((self.reason or "").split())
        said = f'; "{reason}"' if reason else ""
        name = Path(self.script.path).name
        return f"revision {self.revision} ({name}) destroys data ({what}{said})"


def _destroys(script: Script) -> Destroying | None:
    """What `script`'s upgrade destroys, read from the SQL it runs; a revision whose SQL
    cannot be rendered is taken to destroy data (a restore point is the safe side)."""
    try:
        losses = lint.upgrade_losses(script.module)
    except Exception as exc:  # noqa: BLE001  (a revision's own code can raise anything)
        first = (str(exc).strip().splitlines() or [""])[0]
        return Destroying(script, (), f"{type(exc).__name__}: {first}".rstrip(": "))
    return Destroying(script, tuple(losses)) if losses else None


def destroying_upgrades(migration_context: MigrationContext) -> list[Destroying]:
    """The revisions this run upgrades through whose upgrade destroys data, in the order
    they run. Asked of the function Alembic's own loop asks (the command's), so the
    answer holds however the destination was written (head, +2, a label, a range)."""
    steps_of = migration_context._migrations_fn  # noqa: SLF001  (see the docstring)
    assert steps_of is not None, "configured by an alembic command"
    # As the loop does: ``stamp --purge`` starts from no heads (the ones there may be
    # unknown to this repository).
    heads = () if migration_context.purge else migration_context.get_current_heads()
    steps = steps_of(heads, migration_context)
    found = (
        _destroys(step.revision)
        for step in steps
        if isinstance(step, RevisionStep) and step.is_upgrade
    )
    return [destroying for destroying in found if destroying is not None]


def _destroying(revisions: Sequence[Destroying]) -> str:
    """``revision 1a2b (file.py) destroys data (column note.mood; "why")``, and how many
    more do."""
    more = f", as {len(revisions) - 1} more of this run do" if len(revisions) > 1 else ""
    return f"{revisions[0].describe()}{more}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]  # a log line is a sentence


def say_what_is_not_acknowledged(revisions: Sequence[Destroying]) -> None:
    """One line for each revision that destroys data without saying why. It runs all
    the same: the tests and the review refuse it before it can reach a deploy from main,
    and a Neon database gets its restore point either way (research.md)."""
    for destroying in revisions:
        if destroying.reason is None:
            log.warning(
                "%s without saying why (its %s is missing or empty): it runs all the same; "
                "make test and make review fail until it says why",
                _sentence(destroying.describe()),
                lint.DESTRUCTIVE_ACKNOWLEDGED,
            )


def comment_offline(migration_context: MigrationContext) -> None:
    """Offline SQL that destroys data starts by saying so, and how to keep it first."""
    revisions = destroying_upgrades(migration_context)
    if revisions:
        migration_context.impl.static_output(
            f"-- {_destroying(revisions)}.\n"
            "-- `alembic upgrade` makes a Neon restore point (a branch) before it runs; this "
            "SQL does not:\n"
            f"-- make one first: neon-branch restore-point <branch> --revision "
            f"{revisions[0].revision} (or a branch in the Neon console).\n"
        )


def make_before_data_is_lost(
    migration_context: MigrationContext,
    settings: Settings,
    environ: Mapping[str, str] = os.environ,
) -> None:
    """Make a restore point when this run destroys data on a Neon database; stop the
    run, in one line, when one is due and cannot be made. Called with the deploy lock
    held, before any revision runs."""
    revisions = destroying_upgrades(migration_context)
    if not revisions:
        return
    destroying = _destroying(revisions)
    said = _sentence(destroying)
    if not migration_context.get_current_heads():
        log.info("%s; the database starts empty (at base): no restore point needed", said)
        return
    say_what_is_not_acknowledged(revisions)
    if settings.mode == "off":
        log.warning("%s; no restore point is made (restore_point = off)", said)
        return
    assert migration_context.connection is not None, "online"
    host = migration_context.connection.engine.url.host
    endpoint = neon_endpoint(host)
    if endpoint is None:
        elsewhere = f"{host or 'the local server'} is not a Neon database"
        if settings.mode == "required":
            raise CommandError(
                f"{destroying}, restore_point = required and {elsewhere}, so no restore point "
                "can be made: back the database up, then rerun with -x restore_point=off; "
                "nothing was changed"
            )
        log.info(
            "%s; %s: no restore point is made (back it up first if its data matters)",
            said,
            elsewhere,
        )
        return
    if missing := [name for name in CREDENTIALS if not environ.get(name, "").strip()]:
        raise CommandError(
            f"{destroying}, and no restore point was made: {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Set {' and '.join(CREDENTIALS)} "
            "and rerun: the deploy makes one itself; or make one by hand (`neon-branch "
            f"restore-point <the branch of {endpoint}> --revision {revisions[0].revision}`, or "
            "a branch of it in the Neon console) and rerun with -x restore_point=off; "
            "nothing was changed"
        )
    log.info("%s: making a Neon restore point of the branch of %s first", said, endpoint)
    # Only now: a deploy that makes no restore point never loads the HTTP client.
    from todo_database.neon.client import NeonError, client_from_environment, scrub

    if migration_context.connection.in_transaction():
        migration_context.connection.commit()  # none left open while Neon is asked
    try:
        with client_from_environment(
            environ,
            retry_for=settings.retry_for_s,
            # A branch without a compute is made in about a second: waiting for it longer
            # than for an answer would mean Neon is in trouble.
            wait_for=settings.retry_for_s,
            progress=lambda message: log.info("Neon: %s", message),
            retry_option="-x restore_point_retry_for",
            wait_option="-x restore_point_retry_for",
        ) as client:
            point = make_for_endpoint(
                client, endpoint, label=revisions[0].revision, expires_in=settings.expires_in
            )
    except (NeonError, KeyError) as exc:
        failure = f"its answer has no {exc} field" if isinstance(exc, KeyError) else str(exc)
        raise CommandError(
            scrub(
                f"{destroying}, and no restore point could be made: Neon: {failure}; rerun once "
                "Neon answers, or with -x restore_point=off to deploy without one; nothing was "
                "changed"
            )
        ) from None
    for line in point.how_to_restore():
        log.info("%s", line)


@dataclass(frozen=True)
class RestorePoint:
    branch: Branch
    parent: Branch
    project_id: str
    expires_at: str

    def how_to_restore(self) -> list[str]:
        name, parent = self.branch.name, self.parent.name
        kept = f"{parent}-before-restore"
        api_body = f'{{"source_branch_id": "{self.branch.id}", "preserve_under_name": "{kept}"}}'
        return [
            f"Restore point made: Neon branch {name} ({self.branch.id}) holds {parent} "
            f"({self.parent.id}) as it was before this deploy; Neon deletes it at "
            f"{self.expires_at}",
            f"To read the lost data: give {name} a compute (Neon console, or `neonctl branches "
            f"add-compute {name}`), then connect to `neon-branch url {name}`",
            f"To put all of {parent} back as it was, losing every write since: the Neon "
            f"console's Backup & restore, or `neonctl branches restore {parent} {name} "
            f"--preserve-under-name {kept}`, or POST /projects/{self.project_id}/branches/"
            f"{self.parent.id}/restore {api_body}",
        ]


def make_for_endpoint(
    client: NeonClient, endpoint: str, *, label: str, expires_in: timedelta
) -> RestorePoint:
    """A restore point of the branch whose compute `endpoint` is."""
    branch_id = client.endpoint_branch_id(endpoint)
    branches = client.branches()
    parent = next((branch for branch in branches if branch.id == branch_id), None)
    if parent is None:
        from todo_database.neon.client import NeonError

        raise NeonError(f"branch {branch_id} of endpoint {endpoint} is not in the project")
    return make_of_branch(client, parent, branches, label=label, expires_in=expires_in)


def make_of_branch(
    client: NeonClient,
    parent: Branch,
    branches: Sequence[Branch],
    *,
    label: str,
    expires_in: timedelta,
) -> RestorePoint:
    """A restore point of `parent` (`branches`: the project's, whose names are taken),
    named ``restore/<label>-<UTC time>``, waited for until Neon has made it."""
    now = datetime.now(UTC)
    stamped = f"{NAME_PREFIX}{label}-{now:%Y%m%dT%H%M%SZ}"
    taken = {branch.name for branch in branches}
    name, suffix = stamped, 1
    while name in taken:  # a rerun within the same second
        suffix += 1
        name = f"{stamped}-{suffix}"
    expires_at = (now + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    branch, operations = client.create_branch(
        name, parent_id=parent.id, schema_only=False, expires_at=expires_at, with_compute=False
    )
    client.wait(operations)
    return RestorePoint(branch, parent, client.project_id, expires_at)
