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
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from todo_database.deploy import database
from todo_database.neon.client import (
    DEFAULT_DATABASE,
    DEFAULT_ROLE,
    PROG,
    Branch,
    NeonClient,
    NeonError,
    NotFoundError,
    _password,
    client_from_environment,
    say,
    scrub,
)
from todo_database.neon.restore_point import DEFAULT_EXPIRES_IN, make_of_branch
from todo_database.neon.settings import (
    DEFAULT_RETRY_FOR_S,
    DEFAULT_WAIT_FOR_S,
    parse_duration,
    seconds,
)


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


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project-id", help="Neon project (default: $NEON_PROJECT_ID)")
    common.add_argument(
        "--database", help=f"database name (default: $NEON_DATABASE or {DEFAULT_DATABASE})"
    )
    common.add_argument("--role", help=f"role name (default: $NEON_ROLE or {DEFAULT_ROLE})")
    common.add_argument(
        "--retry-for",
        type=seconds,
        default=DEFAULT_RETRY_FOR_S,
        metavar="SECONDS",
        help="how long one API request is retried on 423, 429, 5xx (default: %(default)g)",
    )
    common.add_argument(
        "--wait-for",
        type=seconds,
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
