"""``make review``: what a pull request does to the schema, as a Markdown report fit to
post as a pull-request comment.

The working tree is compared with a base commit (``origin/main`` unless ``--base``):

* **revisions**: those of the working tree whose id no revision file at the base has
  (the base's files are read with ``git ls-tree`` and ``git show``; a base without
  ``migrations/`` has none). For each: its message, the SQL it runs and the SQL its
  downgrade runs (offline: ``alembic upgrade <down>:<rev> --sql``, in a child process),
  and squawk's findings with the revision's acknowledgements (:mod:`todo_database.lint`);
* **schema changes**: two throwaway databases, one migrated to the base's head by the
  base's own ``alembic.ini``, ``migrations/`` and ``models/`` (``git archive`` into a
  temporary directory), one to the working tree's head by the working tree's; both
  read back from the catalog and compared (tables, columns, indexes, constraints,
  row-security switches, policies, grants);
* the **row-security matrix** after the change, what changed marked, and the
  **entity-relationship diagram** of the schema after it (:mod:`todo_database.review.docs`);
* **warnings** a reviewer must not miss: data lost on upgrade or on downgrade, a
  destructive revision that does not acknowledge it, a downgrade whose type change
  rewrites the table and fails on values that no longer fit (asked of PostgreSQL on the
  head database), a table or column renamed (code reading the old name breaks), a
  table without row-level security, squawk findings not acknowledged, released
  revisions edited or deleted.

A rename (``ALTER TABLE ... RENAME``, of a table, a column, a constraint, an index or a
sequence, in a new revision's SQL; :mod:`todo_database.autogenerate.renames` writes them
for what the
models declare) is shown as one: the schema before is compared under the new names, so
the renamed table or column is neither dropped nor added, and what else changed in it
shows as usual.

Why the base is built by its own files rather than by the working tree's revisions up
to the base's head: revisions are append-only, so on an honest change both give the
same database; but a pull request that edits or deletes a released revision would then
change the very "before" it is compared with. Built from the base's own files, the
before is what main deploys, and the edit shows up as a difference and a warning.

A revision whose upgrade drops a table or a column, or empties a table, acknowledges
it with a module-level string::

    destructive_acknowledged = "todo.priority was never read; its values are not needed"

The databases are ``todo_review_*`` on the embedded server, or on the server whose
admin URL ``REVIEW_DATABASE_URL`` names, and are dropped however the review ends.
``DATABASE_URL`` (perhaps production) is never used.

The report is written whatever it finds; the command then exits 1 when it holds a
blocking warning (⛔), so CI fails the pull request, and 2 when no review could be made.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from alembic.config import Config
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import pool as sa_pool
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

import models
from models.security import PUBLIC, Policy
from todo_database import lint
from todo_database.catalog.security import Catalog
from todo_database.catalog.tables import Index
from todo_database.declarations import row_security as declarations
from todo_database.deploy import database
from todo_database.online import columns as online_columns
from todo_database.review import docs as schema_docs
from todo_database.review.docs import Column, Constraint, Schema, Table, code

DEFAULT_BASE = "origin/main"
REPORT_PATH = database.PROJECT_ROOT / "review.md"
#: Hidden in the comment, so a bot can find and update its own comment.
MARKER = "<!-- todo-database:schema-review -->"
#: GitHub refuses comments longer than 65,536 characters; past this, SQL is left out.
COMMENT_LIMIT = 60_000
#: The module-level string in which a revision acknowledges the data its upgrade drops.
DESTRUCTIVE_ACKNOWLEDGED = lint.DESTRUCTIVE_ACKNOWLEDGED

VERSIONS = "migrations/versions"
#: What the base needs to build its own schema.
BASE_PATHS = ("alembic.ini", "migrations", "models")

T = TypeVar("T")

BLOCKING = "⛔"
ATTENTION = "⚠️"


class ReviewError(Exception):
    """A review that cannot be made, explained in one line."""


def say(message: str) -> None:
    schema_docs.say(message, tool="review")


def git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise ReviewError(f"git {' '.join(args)}: {lines[-1] if lines else 'failed'}")
    return result.stdout


# --- revisions ----------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionFile:
    """A revision file as the base has it: read, never imported."""

    revision: str
    down_revisions: tuple[str, ...]
    path: str
    text: str


def parse_revision_file(path: str, text: str) -> RevisionFile | None:
    """The ``revision`` and ``down_revision`` a revision file assigns, if it is one."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    values: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
                try:
                    values[target.id] = ast.literal_eval(value)
                except ValueError:
                    continue
    revision = values.get("revision")
    if not isinstance(revision, str):
        return None
    down = values.get("down_revision")
    downs: tuple[str, ...] = ()
    if isinstance(down, str):
        downs = (down,)
    elif isinstance(down, list | tuple):
        downs = tuple(str(item) for item in down)
    return RevisionFile(revision, downs, path, text)


def base_revisions(root: Path, commit: str) -> dict[str, RevisionFile]:
    """The revision files of `commit`, by revision id (none when it has no migrations)."""
    found = {}
    listing = git(root, "ls-tree", "-r", "-z", "--name-only", commit, "--", VERSIONS)
    for path in listing.split("\0"):
        if not path.endswith(".py") or "/" in path.removeprefix(VERSIONS + "/"):
            continue
        parsed = parse_revision_file(path, git(root, "show", f"{commit}:{path}"))
        if parsed is not None:
            found[parsed.revision] = parsed
    return found


#: Module-level names that say something about a revision without changing what it runs.
_COMMENTARY = frozenset({lint.ACKNOWLEDGED, DESTRUCTIVE_ACKNOWLEDGED})


def runs_the_same(old: str, new: str) -> bool:
    """Whether two versions of a revision file differ only in what does not run: the
    docstring, comments, formatting, and the acknowledgement mappings."""

    def code_of(text: str) -> str:
        try:
            module = ast.parse(text)
        except SyntaxError:
            return text
        kept = []
        for node in module.body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # a docstring
            target = (
                node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            )
            if isinstance(target, ast.Name) and target.id in _COMMENTARY:
                continue
            kept.append(ast.dump(node))
        return "\n".join(kept)

    return code_of(old) == code_of(new)


def heads(revisions: Mapping[str, RevisionFile]) -> list[str]:
    referenced = {down for revision in revisions.values() for down in revision.down_revisions}
    return sorted(revision for revision in revisions if revision not in referenced)


def working_script(root: Path) -> ScriptDirectory:
    return ScriptDirectory.from_config(Config(str(root / "alembic.ini")))


def extract_base(root: Path, commit: str, target: Path) -> None:
    """The base's ``alembic.ini``, ``migrations/`` and ``models/`` into `target`."""
    present = git(root, "ls-tree", "--name-only", commit, "--", *BASE_PATHS).split()
    if "alembic.ini" not in present:
        raise ReviewError(f"the base {commit[:12]} has revisions but no alembic.ini to run them")
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "--", *present],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)


# --- what a revision destroys -------------------------------------------------------

#: Read from the SQL, in one place for the review, ``make revision`` and the deploy.
Loss = lint.Loss
data_losses = lint.data_losses


# --- one revision, reviewed ---------------------------------------------------------


@dataclass
class RevisionReview:
    """A new revision: what it runs, what squawk says of it, what it destroys."""

    script: Script
    path: str
    upgrade_sql: str = ""
    downgrade_sql: str = ""
    findings: list[lint.Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: The downgrade's type changes PostgreSQL does not make in place, with what it does
    #: instead and the column's type after the change (:func:`downgrade_type_changes`).
    downgrade_rewrites: list[tuple[lint.TypeChange, str, str]] = field(default_factory=list)

    @property
    def revision(self) -> str:
        return self.script.revision

    @property
    def message(self) -> str:
        return self.script.doc.strip() or "(no message)"

    @property
    def description(self) -> str:
        """The docstring past its first line, without Alembic's header lines."""
        doc = (self.script.module.__doc__ or "").split("\nRevision ID:", 1)[0]
        paragraphs = [p.strip() for p in doc.strip().split("\n\n")]
        return "\n\n".join(p for p in paragraphs[1:] if p)

    @property
    def acknowledged(self) -> dict[str, str]:
        return lint.acknowledged(self.script.module)

    @property
    def unacknowledged(self) -> list[lint.Finding]:
        return lint.unacknowledged(self.script, self.findings)

    @property
    def advisory(self) -> list[lint.Finding]:
        """Advisory findings the revision gives no reason for: shown, never blocking."""
        return [
            f
            for f in self.findings
            if f.rule in lint.ADVISORY_RULES and lint.reason_for(self.script.module, f) is None
        ]

    @property
    def destructive_acknowledged(self) -> str | None:
        return lint.destructive_reason(self.script.module)

    @property
    def upgrade_losses(self) -> list[Loss]:
        return data_losses(self.upgrade_sql)

    @property
    def renames(self) -> list[lint.Rename]:
        """What the upgrade renames, in order."""
        return lint.renames_in(self.upgrade_sql)

    @property
    def downgrade_losses(self) -> list[Loss]:
        return data_losses(self.downgrade_sql)


def review_revisions(scripts: list[Script], root: Path) -> list[RevisionReview]:
    """Render each of `scripts`' upgrade and downgrade offline and lint the upgrade."""
    reviewed = []
    for script, (upgrade, downgrade) in zip(scripts, lint.offline_sql(scripts, root), strict=True):
        path = Path(script.path).resolve().relative_to(root.resolve()).as_posix()
        revision = RevisionReview(script, path)
        if isinstance(upgrade, lint.LintError):
            revision.errors.append(str(upgrade))
        else:
            revision.upgrade_sql = upgrade
            try:
                revision.findings = lint.squawk_sql(upgrade, root, name=script.revision)
            except lint.LintError as exc:
                revision.errors.append(str(exc))
        if isinstance(downgrade, lint.LintError):
            revision.errors.append(str(downgrade))
        else:
            revision.downgrade_sql = downgrade
        reviewed.append(revision)
    return reviewed


def downgrade_type_changes(url: URL, revisions: list[RevisionReview], after: Schema) -> None:
    """Each downgrade's type changes that PostgreSQL does not make in place (a
    ``varchar(80)`` narrowed back to ``varchar(40)`` rewrites the table and fails on a
    longer value), asked of a temporary copy of the table on the database `url` at the
    working tree's head, recorded on the revision's review."""
    engine = database.create_engine(url, poolclass=sa_pool.NullPool)
    try:
        with engine.connect() as connection:
            for revision in revisions:
                for change in lint.type_changes(revision.downgrade_sql):
                    table = after.tables.get(change.table)
                    column = table.columns.get(change.column) if table is not None else None
                    if column is None:
                        continue  # gone by the head: a later revision changed it again
                    try:
                        effect = online_columns.type_change_effect(
                            connection, change.table, change.column, change.type, using=change.using
                        )
                    except DBAPIError:
                        continue  # not a type PostgreSQL knows here: the SQL says enough
                    if effect is not None:
                        revision.downgrade_rewrites.append((change, effect, column.type))
            connection.rollback()
    finally:
        engine.dispose()


# --- the schema, before and after ---------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between the schema before and after."""

    kind: str  # table, column, index, constraint, row security, policy, grant
    action: str  # added, changed, dropped
    table: str
    name: str
    detail: str = ""


#: The kinds the summary line counts, with their plural.
COUNTED = {
    "table": "tables",
    "column": "columns",
    "index": "indexes",
    "constraint": "constraints",
    "policy": "policies",
    "grant": "grants",
}
ACTIONS = ("added", "changed", "renamed", "dropped")


def describe_policy(policy: Policy) -> str:
    roles = ", ".join("PUBLIC" if role == PUBLIC else role for role in policy.roles)
    text = f"{'permissive' if policy.permissive else 'restrictive'} {policy.command} to {roles}"
    if policy.using is not None:
        text += f", USING {code(policy.using)}"
    if policy.with_check is not None:
        text += f", WITH CHECK {code(policy.with_check)}"
    return text


def _switches(state: tuple[bool, bool]) -> str:
    enabled, forced = state
    return "disabled" if not enabled else "enabled, forced" if forced else "enabled, not forced"


def _compare_named(
    kind: str,
    table: str,
    before: Mapping[str, T],
    after: Mapping[str, T],
    *,
    describe: Callable[[T], str],
    qualify: bool = False,
) -> list[Change]:
    changes = []
    for name in sorted({*before, *after}):
        shown = f"{table}.{name}" if qualify else name
        old, new = before.get(name), after.get(name)
        if old is None and new is not None:
            changes.append(Change(kind, "added", table, shown, describe(new)))
        elif new is None and old is not None:
            changes.append(Change(kind, "dropped", table, shown, describe(old)))
        elif old != new and old is not None and new is not None:
            changes.append(
                Change(kind, "changed", table, shown, f"{describe(old)} → {describe(new)}")
            )
    return changes


def compare(before: Schema, after: Schema, renames: Iterable[lint.Rename] = ()) -> list[Change]:
    """Every difference between two schemas, tables first, then what is inside them;
    what `renames` renamed (in order) shows as renamed, `before` read under the new
    names (:func:`under_new_names`)."""
    renamed: list[Change] = []
    for rename in renames:
        if (change := _renamed_change(before, rename)) is None:
            continue
        if rename.kind == "table":  # what was renamed in it before is shown in it now
            renamed = [_in_renamed_table(c, rename.old, rename.new) for c in renamed]
        renamed.append(change)
        before = under_new_names(before, rename)
    changes: list[Change] = [c for c in renamed if c.kind == "table"]
    for name in sorted(after.tables.keys() - before.tables.keys()):
        table = after.tables[name]
        detail = (
            f"{len(table.columns)} columns, {len(table.indexes)} indexes, "
            f"RLS {_switches(table.row_security)}"
        )
        changes.append(Change("table", "added", name, name, detail))
    for name in sorted(before.tables.keys() - after.tables.keys()):
        detail = f"{len(before.tables[name].columns)} columns, every row with them"
        changes.append(Change("table", "dropped", name, name, detail))
    inner: list[Change] = []
    for name in sorted(before.tables.keys() & after.tables.keys()):
        old, new = before.tables[name], after.tables[name]
        inner += _compare_named(
            "column", name, old.columns, new.columns, describe=Column.describe, qualify=True
        )
        inner += _compare_named(
            "index", name, old.indexes, new.indexes, describe=lambda i: code(i.definition)
        )
        inner += _compare_named(
            "constraint",
            name,
            old.constraints,
            new.constraints,
            describe=lambda c: code(c.definition),
        )
        if old.row_security != new.row_security:
            detail = f"{_switches(old.row_security)} → {_switches(new.row_security)}"
            inner.append(Change("row security", "changed", name, name, detail))
    for name in sorted({*before.security.policies, *after.security.policies}):
        inner += _compare_named(
            "policy",
            name,
            before.security.policies.get(name, {}),
            after.security.policies.get(name, {}),
            describe=describe_policy,
        )
    grantees = {
        *before.security.grants,
        *before.security.column_grants,
        *after.security.grants,
        *after.security.column_grants,
    }
    for name, role in sorted(grantees):
        if name == "alembic_version":
            continue
        shown = "PUBLIC" if role == PUBLIC else role
        held_before = schema_docs.held_privileges(before.security, name, role)
        held_after = schema_docs.held_privileges(after.security, name, role)
        inner += _compare_named(
            "grant",
            name,
            {shown: tuple(held_before)} if held_before else {},
            {shown: tuple(held_after)} if held_after else {},
            describe=lambda held: ", ".join(held) or "nothing",
        )
    inner += [c for c in renamed if c.kind != "table"]
    order = ("column", "index", "constraint", "sequence", "row security", "policy", "grant")
    inner.sort(key=lambda c: (c.table, order.index(c.kind), c.name))
    for name in sorted(before.tables.keys() & after.tables.keys()):
        touched = Counter(f"{c.kind} {c.action}" for c in inner if c.table == name)
        if touched:
            detail = ", ".join(f"{count} {what}" for what, count in sorted(touched.items()))
            changes.append(Change("table", "changed", name, name, detail))
    return changes + inner


# --- renames ------------------------------------------------------------------------


def _table_of(schema: Schema, rename: lint.Rename) -> str | None:
    """The table `rename` happens on in `schema`, when `schema` has what it renames."""
    if rename.kind == "table":
        return rename.old if rename.old in schema.tables else None
    if rename.kind == "sequence":
        sequence = f"'{rename.old}'"
        for table in schema.tables.values():
            if any(sequence in (column.default or "") for column in table.columns.values()):
                return table.name
        return None
    for table in schema.tables.values():
        if rename.table not in (None, table.name):
            continue
        if rename.kind == "column":
            held: Mapping[str, object] = table.columns
        elif rename.kind == "index":
            held = table.indexes
        else:
            held = table.constraints
        if rename.old in held:
            return table.name
    return None


def _renamed_change(before: Schema, rename: lint.Rename) -> Change | None:
    table = _table_of(before, rename)
    if table is None:
        return None  # made by the same change: it shows as added, under its last name
    if rename.kind == "table":
        return Change("table", "renamed", rename.new, rename.new, f"from {code(rename.old)}")
    name = f"{table}.{rename.new}" if rename.kind == "column" else rename.new
    return Change(rename.kind, "renamed", table, name, f"from {code(rename.old)}")


def _in_renamed_table(change: Change, old: str, new: str) -> Change:
    if change.table != old:
        return change
    name = f"{new}.{change.name.split('.', 1)[1]}" if change.kind == "column" else change.name
    return replace(change, table=new, name=name)


def _swap(
    text: str, old: str, new: str, *, qualified_by: str | None = None, column: bool = False
) -> str:
    """`text` (SQL as PostgreSQL prints it) with the identifier `old` written `new`:
    quoted or bare (a `column` never followed by a parenthesis: that is a function of
    the same name), or, given `qualified_by`, only after it and a dot; a sequence's name
    in a ``'...'::regclass`` literal too."""
    quoted = '"' + old.replace('"', '""') + '"'
    written_new = (
        new if re.fullmatch(r"[a-z_][a-z0-9_$]*", new) else '"' + new.replace('"', '""') + '"'
    )
    before = rf"(?<={re.escape(qualified_by)}\.)" if qualified_by else r'(?<![\w$"])'
    text = re.sub(before + re.escape(quoted), written_new, text)
    after = r'(?![\w$"]|\s*\()' if column else r'(?![\w$"])'
    text = re.sub(before + re.escape(old) + after, written_new, text)
    return text.replace(f"'{old}'::regclass", f"'{new}'::regclass")


def _text_everywhere(schema: Schema, change: Callable[[str], str]) -> Schema:
    """`schema` with `change` applied to every definition, default and policy text."""
    tables = {
        name: replace(
            table,
            columns={
                key: replace(column, default=change(column.default) if column.default else None)
                for key, column in table.columns.items()
            },
            indexes={
                key: replace(index, definition=change(index.definition))
                for key, index in table.indexes.items()
            },
            constraints={
                key: replace(constraint, definition=change(constraint.definition))
                for key, constraint in table.constraints.items()
            },
        )
        for name, table in schema.tables.items()
    }
    security = replace(schema.security, policies=defaultdict(dict))
    for table, policies in schema.security.policies.items():
        security.policies[table] = {
            name: replace(
                policy,
                using=change(policy.using) if policy.using else policy.using,
                with_check=change(policy.with_check) if policy.with_check else policy.with_check,
            )
            for name, policy in policies.items()
        }
    return replace(schema, tables=tables, security=security)


def _keys_moved(security: Catalog, old: str, new: str) -> Catalog:
    """`security` with what it holds by table name `old` held by `new`."""

    def move(key: str) -> str:
        return new if key == old else key

    def move_pair(key: tuple[str, str]) -> tuple[str, str]:
        return (move(key[0]), key[1])

    return replace(
        security,
        switches={move(k): v for k, v in security.switches.items()},
        policies=defaultdict(dict, {move(k): v for k, v in security.policies.items()}),
        grants={move_pair(k): v for k, v in security.grants.items()},
        grant_options={move_pair(k): v for k, v in security.grant_options.items()},
        column_grants=defaultdict(
            dict, {move_pair(k): v for k, v in security.column_grants.items()}
        ),
        column_grant_options=defaultdict(
            dict, {move_pair(k): v for k, v in security.column_grant_options.items()}
        ),
        sequence_usage={move_pair(k): v for k, v in security.sequence_usage.items()},
        policy_columns=defaultdict(
            set,
            {
                move_pair(k): {move_pair(read) for read in v}
                for k, v in security.policy_columns.items()
            },
        ),
    )


def _column_moved(schema: Schema, table: str, old: str, new: str) -> Schema:
    """`schema` with column `old` of `table` called `new` wherever it is named: in the
    table's own definitions and policies, in foreign keys to it, and qualified
    (``table.old``) in other tables' policies."""

    def rename(columns: Iterable[str]) -> tuple[str, ...]:
        return tuple(new if column == old else column for column in columns)

    def in_own(text: str) -> str:
        return _swap(text, old, new, column=True)

    def in_others(text: str) -> str:
        return _swap(text, old, new, qualified_by=table, column=True)

    def in_reference(definition: str) -> str:
        return re.sub(
            rf"(REFERENCES {re.escape(table)}\()([^)]*)",
            lambda match: match[1] + _swap(match[2], old, new, column=True),
            definition,
        )

    tables = {}
    for name, held in schema.tables.items():
        constraints = {}
        for key, constraint in held.constraints.items():
            moved = constraint
            if name == table:
                moved = replace(
                    moved, columns=rename(moved.columns), definition=in_own(moved.definition)
                )
            if moved.referred_table == table:
                moved = replace(
                    moved,
                    referred_columns=rename(moved.referred_columns),
                    definition=in_reference(moved.definition),
                )
            constraints[key] = moved
        columns, indexes = held.columns, held.indexes
        if name == table:
            columns = {
                (new if key == old else key): (replace(column, name=new) if key == old else column)
                for key, column in held.columns.items()
            }
            indexes = {
                key: replace(index, definition=in_own(index.definition))
                for key, index in held.indexes.items()
            }
        tables[name] = replace(held, columns=columns, indexes=indexes, constraints=constraints)
    security = schema.security
    policies: dict[str, dict[str, Policy]] = defaultdict(dict)
    for name, held_policies in security.policies.items():
        change = in_own if name == table else in_others
        for policy_name, policy in held_policies.items():
            policies[name][policy_name] = replace(
                policy,
                using=change(policy.using) if policy.using else policy.using,
                with_check=change(policy.with_check) if policy.with_check else policy.with_check,
            )
    column_grants: dict[tuple[str, str], dict[str, frozenset[str]]] = defaultdict(dict)
    for grantee, held_grants in security.column_grants.items():
        column_grants[grantee] = {
            privilege: frozenset(rename(columns)) if grantee[0] == table else columns
            for privilege, columns in held_grants.items()
        }
    security = replace(
        security,
        policies=policies,
        column_grants=column_grants,
        sequence_usage={
            (key[0], new if key == (table, old) else key[1]): users
            for key, users in security.sequence_usage.items()
        },
    )
    return replace(schema, tables=tables, security=security)


def _named_moved(schema: Schema, table: str, rename: lint.Rename) -> Schema:
    """`schema` with `table`'s index or constraint (and the index that backs it) renamed."""
    old, new = rename.old, rename.new
    held = schema.tables[table]
    constraints: dict[str, Constraint] = {
        (new if key == old and rename.kind == "constraint" else key): (
            replace(c, name=new) if key == old and rename.kind == "constraint" else c
        )
        for key, c in held.constraints.items()
    }
    indexes: dict[str, Index] = {
        (new if key == old else key): (
            replace(i, name=new, definition=_swap(i.definition, old, new)) if key == old else i
        )
        for key, i in held.indexes.items()
    }
    tables = dict(schema.tables)
    tables[table] = replace(held, indexes=indexes, constraints=constraints)
    return replace(schema, tables=tables)


def under_new_names(schema: Schema, rename: lint.Rename) -> Schema:
    """`schema` as it reads once `rename` has run, so that comparing it with the schema
    after the change shows what else changed."""
    table = _table_of(schema, rename)
    if table is None:
        return schema
    if rename.kind == "table":
        moved = _text_everywhere(schema, lambda text: _swap(text, rename.old, rename.new))
        tables: dict[str, Table] = {
            (rename.new if name == rename.old else name): (
                replace(held, name=rename.new) if name == rename.old else held
            )
            for name, held in moved.tables.items()
        }
        for name, held in tables.items():
            tables[name] = replace(
                held,
                constraints={
                    key: replace(c, referred_table=rename.new)
                    if c.referred_table == rename.old
                    else c
                    for key, c in held.constraints.items()
                },
            )
        return replace(
            moved, tables=tables, security=_keys_moved(moved.security, rename.old, rename.new)
        )
    if rename.kind == "column":
        return _column_moved(schema, table, rename.old, rename.new)
    if rename.kind == "sequence":
        return _text_everywhere(schema, lambda text: _swap(text, rename.old, rename.new))
    return _named_moved(schema, table, rename)


# --- warnings -----------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    level: str  # BLOCKING or ATTENTION
    text: str


ACKNOWLEDGE_HOW = (
    f'say why in the revision\'s `{DESTRUCTIVE_ACKNOWLEDGED} = "<why losing this data is right>"` '
    "(make revision writes it empty) once the loss is intended"
)


def revision_alerts(revision: RevisionReview) -> list[Alert]:
    """What one new revision destroys, fails to render, or breaks unacknowledged."""
    name = code(revision.revision)
    found = [Alert(BLOCKING, f"{name}: {error}") for error in revision.errors]
    if losses := revision.upgrade_losses:
        what = ", ".join(loss.describe(code) for loss in losses)
        if reason := revision.destructive_acknowledged:
            text = f"{name} destroys data on upgrade: {what}. Acknowledged: “{reason}”"
            found.append(Alert(ATTENTION, text))
        else:
            text = (
                f"{name} destroys data on upgrade ({what}) without acknowledging it: "
                f"{ACKNOWLEDGE_HOW}"
            )
            found.append(Alert(BLOCKING, text))
    if losses := revision.downgrade_losses:
        what = ", ".join(loss.describe(code) for loss in losses)
        text = f"Downgrading {name} drops {what}: the data written there is lost"
        found.append(Alert(ATTENTION, text))
    for change, effect, now in revision.downgrade_rewrites:
        old = code(change.type)
        text = (
            f"Downgrading {name} changes column {code(f'{change.table}.{change.column}')} back "
            f"to {old} (it is {code(now)} after the change), which {effect} under ACCESS "
            f"EXCLUSIVE, and fails on any value written since that {old} cannot hold"
        )
        found.append(Alert(ATTENTION, text))
    for rename in revision.renames:
        if rename.kind in ("table", "column"):
            old = f"{rename.table}.{rename.old}" if rename.table else rename.old
            declared = rename in lint.listed_renames(revision.script.module)
            text = (
                f"{name} renames {rename.kind} {code(old)} to {code(rename.new)}"
                f"{' (declared in the models)' if declared else ''}: "
                f"code still reading {code(rename.old)} fails once it has run. Deploy the "
                "readers of the new name with it, or, if they cannot be deployed at the same "
                "time, expand and contract: keep a view or a column under the old name until "
                "they are"
            )
            found.append(Alert(ATTENTION, text))
    for finding in revision.unacknowledged:
        text = (
            f"{name} breaks squawk rule {code(finding.rule)} (line {finding.line} of its SQL) "
            "without acknowledging it: fix the SQL, or give a reason for the rule in the "
            f"revision's `{lint.ACKNOWLEDGED}` (tests/chain/test_squawk.py fails until then)"
        )
        found.append(Alert(BLOCKING, text))
    for finding in revision.advisory:
        text = (
            f"{name}: squawk advises {code(finding.rule)} (line {finding.line} of its SQL): "
            f"{finding.message}"
        )
        found.append(Alert(ATTENTION, text))
    return found


def exemption(table: str) -> str | None:
    """Why the models declare `table` without row-level security, if they do."""
    declared = models.metadata.tables.get(table)
    security = declarations.row_security(declared) if declared is not None else None
    return (security.exemption or "").strip() or None if security is not None else None


def schema_alerts(changes: list[Change], explained: set[Loss], after: Schema) -> list[Alert]:
    """Drops no revision accounts for, type changes, tables without row security."""
    found = []
    for change in changes:
        if change.action == "dropped" and change.kind in ("table", "column"):
            column = change.name.split(".", 1)[1] if change.kind == "column" else None
            if Loss(change.table, column) not in explained:
                text = (
                    f"{change.kind} {code(change.name)} is gone after the change, but no new "
                    "revision's SQL drops it (renamed? dropped by a hand-written statement? "
                    "a released revision edited?): make sure its data survives"
                )
                found.append(Alert(BLOCKING, text))
        if change.kind == "column" and change.action == "changed":
            old, new = change.detail.split(" → ", 1)
            if old.split(",", 1)[0] != new.split(",", 1)[0]:
                text = (
                    f"column {code(change.name)} changes type ({change.detail}): "
                    "check that the conversion keeps every value"
                )
                found.append(Alert(ATTENTION, text))
    for table in after.tables.values():
        enabled, forced = table.row_security
        if not enabled and (reason := exemption(table.name)):
            text = (
                f"table {code(table.name)} has no row-level security, as declared: “{reason}”; "
                "a role granted on it reaches every row"
            )
            found.append(Alert(ATTENTION, text))
        elif not enabled:
            text = (
                f"table {code(table.name)} has no row-level security: a role granted on it "
                "reaches every row"
            )
            found.append(Alert(BLOCKING, text))
        elif not forced:
            text = (
                f"table {code(table.name)} has row-level security but does not FORCE it: "
                "its owner (the migration role) bypasses the policies"
            )
            found.append(Alert(ATTENTION, text))
    return found


@dataclass(frozen=True)
class Edit:
    """A revision the base has, changed in the working tree."""

    revision: str
    path: str
    #: Only its docstring, comments or acknowledgements changed: it runs the same.
    harmless: bool


def history_alerts(edited: list[Edit], deleted: list[RevisionFile], head_count: int) -> list[Alert]:
    """Released revisions edited or deleted; several heads."""
    found = []
    for edit in edited:
        name = f"released revision {code(edit.revision)} ({code(edit.path)})"
        if edit.harmless:
            text = f"{name} was edited, only in its docstring, comments or acknowledgements"
            found.append(Alert(ATTENTION, text))
        else:
            text = (
                f"{name} was edited: released revisions are never edited, databases that ran "
                "it will not run it again; revert the edit and fix forward with a new revision"
            )
            found.append(Alert(BLOCKING, text))
    found += [
        Alert(
            BLOCKING,
            f"released revision {code(gone.revision)} ({code(gone.path)}) is gone from the "
            "working tree: a database deployed from the base is at a revision nobody knows",
        )
        for gone in deleted
    ]
    if head_count > 1:
        text = f"the revisions have {head_count} heads: `alembic merge heads` first"
        found.append(Alert(BLOCKING, text))
    return found


# --- the report ---------------------------------------------------------------------


@dataclass
class Review:
    base: str
    commit: str
    base_head: str | None
    head: str | None
    revisions: list[RevisionReview]
    changes: list[Change]
    alerts: list[Alert]
    before: Schema
    after: Schema
    owners: dict[str, str]

    def counts(self, kind: str) -> Counter[str]:
        return Counter(change.action for change in self.changes if change.kind == kind)

    def summary(self) -> str:
        count = len(self.revisions)
        parts = [f"**{count} revision{'' if count == 1 else 's'} added**"]
        for kind, plural in COUNTED.items():
            counts = self.counts(kind)
            done = ", ".join(f"{counts[action]} {action}" for action in ACTIONS if counts[action])
            parts.append(f"{plural}: {done or 'none'}")
        findings = sum(len(revision.findings) for revision in self.revisions)
        open_findings = sum(len(revision.unacknowledged) for revision in self.revisions)
        advisory = sum(len(revision.advisory) for revision in self.revisions)
        lint_text = f"lint: {findings} finding{'' if findings == 1 else 's'}"
        if findings:
            acknowledged = findings - open_findings - advisory
            lint_text += f" ({acknowledged} acknowledged, {advisory} advisory)"
        parts.append(lint_text)
        blocking = sum(alert.level == BLOCKING for alert in self.alerts)
        parts.append(f"warnings: {len(self.alerts)} ({blocking} blocking)")
        return " · ".join(parts)

    def render(self, *, include_sql: bool = True) -> str:
        lines = [
            MARKER,
            "## Schema review",
            "",
            f"{code(self.base)} ({code(self.commit[:12])}, head {code(self.base_head or 'none')}) "
            f"→ this change (head {code(self.head or 'none')})",
            "",
            self.summary(),
            "",
            "### Warnings",
            "",
        ]
        lines += [f"- {alert.level} {alert.text}" for alert in self.alerts] or ["✅ None."]
        lines += ["", "### Revisions", ""]
        if not self.revisions:
            lines += ["No new revisions.", ""]
        for revision in self.revisions:
            lines += [*self._revision(revision, include_sql=include_sql), ""]
        lines += ["### Schema changes", ""]
        if not self.changes:
            lines.append("None: both heads build the same schema.")
        marks = {"added": "🆕", "changed": "✏️", "renamed": "🔀", "dropped": "🗑️"}
        for change in self.changes:
            if change.kind == "table" and change.action == "changed":
                continue  # its changes are listed one by one
            target = code(change.name)
            if change.kind in ("policy", "grant"):
                target = f"{code(change.name)} on {code(change.table)}"
            detail = f": {change.detail}" if change.detail else ""
            lines.append(f"- {marks[change.action]} {change.kind} {target} {change.action}{detail}")
        lines += [
            "",
            "### Row-level security after the change",
            "",
            *schema_docs.security_matrix(self.after, self.before),
            "",
            "### Entity-relationship diagram",
            "",
            *schema_docs.er_diagram(self.after, self.owners),
            "",
        ]
        return "\n".join(lines)

    def _revision(self, revision: RevisionReview, *, include_sql: bool) -> list[str]:
        down = revision.script.down_revision
        revises = ", ".join(code(d) for d in ((down,) if isinstance(down, str) else down or ()))
        lines = [
            f"#### {code(revision.revision)} {revision.message}",
            "",
            f"{code(revision.path)} · revises {revises or 'nothing (the first revision)'}",
        ]
        if revision.description:
            lines += [
                "",
                *(f"> {line}" if line else ">" for line in revision.description.splitlines()),
            ]
        if reason := revision.destructive_acknowledged:
            lines += ["", f"Destroys data, acknowledged: “{reason}”"]
        for title, sql, open_ in (
            ("Upgrade SQL", revision.upgrade_sql, True),
            ("Downgrade SQL", revision.downgrade_sql, False),
        ):
            if not sql:
                continue
            lines += ["", f"<details{' open' if open_ else ''}><summary>{title}</summary>", ""]
            if include_sql:
                fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`+", sql))])
                lines += [f"{fence}sql", sql.rstrip("\n"), fence]
            else:
                lines.append(
                    "SQL left out: the report would exceed GitHub's comment limit; "
                    "`make review` prints it."
                )
            lines += ["", "</details>"]
        lines += ["", *self._findings(revision)]
        return lines

    def _findings(self, revision: RevisionReview) -> list[str]:
        if revision.errors and not revision.upgrade_sql:
            return ["squawk: not run (no SQL)."]
        module = revision.script.module
        reasons = revision.acknowledged
        fired = {finding.rule for finding in revision.findings}
        unused = [
            f"- {code(rule)} is acknowledged (“{reason}”), but squawk does not report it"
            for rule, reason in sorted(reasons.items())
            if rule not in fired
        ]
        if not revision.findings:
            return ["squawk: no findings.", *(["", *unused] if unused else [])]
        rows = [
            [
                str(f.line),
                code(f.rule),
                f"{f.message} {f.help}".strip(),
                f"✅ {reason}"
                if (reason := lint.reason_for(module, f))
                else "💬 advisory"
                if f.rule in lint.ADVISORY_RULES
                else "❌ not acknowledged",
            ]
            for f in revision.findings
        ]
        count = len(revision.findings)
        return [
            f"squawk: {count} finding{'' if count == 1 else 's'}:",
            "",
            *schema_docs.table_rows(["line", "rule", "finding", "acknowledged"], rows),
            *(["", *unused] if unused else []),
        ]

    def markdown(self) -> str:
        """The report, without the SQL when it would not fit in a comment."""
        text = self.render()
        if len(text) > COMMENT_LIMIT:
            text = self.render(include_sql=False)
        return text


# --- running it ---------------------------------------------------------------------


def resolve_commit(root: Path, base: str) -> str:
    try:
        return git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}").strip()
    except ReviewError:
        raise ReviewError(
            f"the base {base!r} is not a commit here (git fetch origin main, or "
            "make review base=<commit>)"
        ) from None


def review(root: Path, base: str, admin: URL | None = None) -> Review:
    """Review `root`'s working tree against `base`."""
    commit = resolve_commit(root, base)
    at_base = base_revisions(root, commit)
    base_heads = heads(at_base)
    base_head = ", ".join(base_heads) or "none"
    say(f"base {base} is {commit[:12]}: {len(at_base)} revisions, head {base_head}")

    script = working_script(root)
    try:
        working = list(reversed(list(script.walk_revisions())))
    except (CommandError, KeyError) as exc:
        raise ReviewError(f"the working tree's revisions do not form a chain: {exc}") from None
    working_ids = {s.revision for s in working}
    new = [s for s in working if s.revision not in at_base]
    edited = [
        Edit(s.revision, at_base[s.revision].path, runs_the_same(released.text, current))
        for s in working
        if (released := at_base.get(s.revision)) is not None
        and (current := Path(s.path).read_text()) != released.text
    ]
    deleted = [f for rev, f in sorted(at_base.items()) if rev not in working_ids]
    say(f"{len(new)} new revision(s): {', '.join(s.revision for s in new) or 'none'}")

    admin = database.review_admin_url() if admin is None else admin
    with ExitStack() as stack:
        head_url = stack.enter_context(schema_docs.throwaway_database(admin, "head", tool="review"))
        base_url = None
        if at_base:
            base_url = stack.enter_context(
                schema_docs.throwaway_database(admin, "base", tool="review")
            )
            base_tree = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="todo-review-base-"))
            )
            extract_base(root, commit, base_tree)
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=3))  # exits first: waits
        say("migrating both: the base by its own files, the working tree by its own")
        migrations: list[Future[None]] = [pool.submit(schema_docs.migrate, root, head_url)]
        if base_url is not None:
            migrations.append(pool.submit(schema_docs.migrate, base_tree, base_url))
        if new:
            say(f"rendering the SQL of {len(new)} revision(s) offline and linting it with squawk")
        reviewed = pool.submit(review_revisions, new, root)
        for migration in migrations:
            try:
                migration.result()
            except schema_docs.DocsError as exc:
                raise ReviewError(str(exc)) from None
        say("reading both schemas from the catalog")
        after = schema_docs.read_database(head_url)
        before = schema_docs.read_database(base_url) if base_url is not None else Schema()
        revisions = reviewed.result()
        downgrade_type_changes(head_url, revisions, after)

    renames = [rename for revision in revisions for rename in revision.renames]
    changes = compare(before, after, renames)
    for rename in renames:
        before = under_new_names(before, rename)  # the matrix, too, under the new names
    explained = {loss for revision in revisions for loss in revision.upgrade_losses}
    return Review(
        base=base,
        commit=commit,
        base_head=", ".join(base_heads) or None,
        head=", ".join(script.get_heads()) or None,
        revisions=revisions,
        changes=changes,
        alerts=sorted(
            [
                *(alert for revision in revisions for alert in revision_alerts(revision)),
                *schema_alerts(changes, explained, after),
                *history_alerts(edited, deleted, len(script.get_heads())),
            ],
            key=lambda alert: alert.level != BLOCKING,
        ),
        before=before,
        after=after,
        owners=schema_docs.owner_columns(models.metadata),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m todo_database.review.report",
        description="What the working tree does to the schema, against a base commit (Markdown).",
    )
    parser.add_argument("--base", default=DEFAULT_BASE, help="base commit (default: %(default)s)")
    parser.add_argument("--output", type=Path, default=REPORT_PATH, help="default: %(default)s")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        reviewed = review(database.PROJECT_ROOT, args.base)
    except (ReviewError, schema_docs.DocsError, database.DatabaseError) as exc:
        print(f"review: error: {exc}", file=sys.stderr)
        return 2
    report = reviewed.markdown()
    output: Path = args.output
    output.write_text(report)
    sys.stdout.write(report)
    say(f"wrote {output} ({time.monotonic() - started:.1f} s)")
    blocking = [alert for alert in reviewed.alerts if alert.level == BLOCKING]
    if blocking:
        # The report is written either way: CI posts it, then fails the pull request.
        count = f"{len(blocking)} blocking warning{'' if len(blocking) == 1 else 's'}"
        print(
            f"review: {count} ({BLOCKING}) in {output}, the first: {blocking[0].text}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
