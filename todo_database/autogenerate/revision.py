"""What autogenerate compares, what it writes, and how a written revision is proven.

Passed to ``context.configure`` by ``env.py``; kept here so ``env.py`` reads as a
story and so tools and tests can use the same filters:

* :data:`COMPARE_OPTIONS` and :class:`ObjectFilter`: what is compared;
* :func:`render_item`: the modules of the models' own column types imported;
* :func:`process_revision_directives`: table ``info`` kept out of the revision, no
  row-level work on a table the same step drops, the online rewrites and up-front
  locks (:mod:`todo_database.online.forms`, :mod:`todo_database.online.columns`, which also fills
  the template's account of the steps), and no file for an empty
  ``revision --autogenerate``;
* the ``verify_revision`` post-write hook (``alembic.ini``): a revision just written
  must import, render its upgrade and downgrade SQL, and upgrade, downgrade and
  upgrade again on a throwaway database, or ``alembic revision`` fails with one line
  naming the file. A revision whose upgrade's SQL destroys data
  (:func:`todo_database.lint.data_losses`) is said to in one line, and gets an empty
  ``destructive_acknowledged`` for its author to fill.
"""

from __future__ import annotations

import ast
import io
import logging
import os
import textwrap
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.environment import NameFilterType
from alembic.operations import ops
from alembic.operations.ops import MigrationScript, OpContainer
from alembic.runtime.migration import MigrationContext
from alembic.script import write_hooks
from alembic.util import CommandError
from alembic.util.pyfiles import load_module_py
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from todo_database import lint
from todo_database.autogenerate import enums, renames
from todo_database.autogenerate import order as dependency_order
from todo_database.catalog.tables import read_extension_relations
from todo_database.deploy import database
from todo_database.deploy import runner as deploy
from todo_database.online import columns as online_columns
from todo_database.online import forms as online
from todo_database.operations import policies, privileges
from todo_database.operations import row_security as switches

# Under the "migrations" logger alembic.ini configures, by the name its lines always had.
log = logging.getLogger("migrations.autogen")

#: Every operation on one table's row-level security (a ``table_name`` attribute each).
TABLE_OPERATIONS = (
    *switches.TABLE_OPERATIONS,
    *policies.TABLE_OPERATIONS,
    *privileges.TABLE_OPERATIONS,
)


def compare_server_default(  # noqa: PLR0917  (the signature is Alembic's)
    context: MigrationContext,
    inspected_column: sa.Column[Any],
    metadata_column: sa.Column[Any],
    inspected_default: str | None,
    metadata_default: Any,
    rendered_metadata_default: str | None,
) -> bool:
    """Alembic's own comparison of server defaults, which evaluates both in the
    database, in a savepoint: a default the database cannot evaluate yet (an enum
    value that the same revision adds, ``invalid input value for enum``) is a
    difference, not a failed run."""
    compare = context.impl.compare_server_default
    arguments = (inspected_column, metadata_column, rendered_metadata_default, inspected_default)
    if inspected_default == rendered_metadata_default or None in (
        inspected_default,
        rendered_metadata_default,
    ):
        # Equal or missing: no round trip.
        return bool(compare(*arguments))  # type: ignore[no-untyped-call]
    connection = context.connection
    assert connection is not None
    try:
        with connection.begin_nested():
            return bool(compare(*arguments))  # type: ignore[no-untyped-call]
    except DBAPIError:
        return True


#: Options every autogenerate run uses, online or offline.
COMPARE_OPTIONS: dict[str, Any] = {
    "compare_type": True,
    "compare_server_default": compare_server_default,
}

_OUR_SCHEMAS = {None, "public"}


class ObjectFilter:
    """Keeps objects that are not ours out of comparisons.

    Other tools' schemas (``neon_auth``, Supabase's ``auth``...) and relations that
    belong to an extension (``spatial_ref_sys``...) must never show up as drops.
    """

    def __init__(self, connection: Connection | None) -> None:
        self._connection = connection

    @cached_property
    def foreign_tables(self) -> frozenset[str]:
        """Relations in our schema that an extension owns; read on first use, so
        runs that only migrate never pay for it."""
        if self._connection is None:
            return frozenset()
        return read_extension_relations(self._connection)

    def include_name(self, name: str | None, type_: NameFilterType, parent_names: Any) -> bool:
        if type_ == "schema":
            return name in _OUR_SCHEMAS
        if type_ == "table":
            return name not in self.foreign_tables
        return True

    def include_object(
        self, obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        info = getattr(obj, "info", None) or {}
        return not info.get("skip_autogenerate", False)


def render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """The ``render_item`` hook: a native enum is rendered not to create its type (the
    revision does, :mod:`todo_database.autogenerate.enums`); a column type of the project's own (a
    ``TypeDecorator`` in ``models/``) is rendered as Alembic renders it,
    ``models.x.MyType()``, and its module imported, which Alembic leaves out."""
    if kind != "type":
        return False
    if isinstance(item, sa.Enum) and item.native_enum and item.name:
        return enums.render_enum(item, autogen_context)
    module = type(item).__module__
    if module.split(".")[0] not in ("sqlalchemy", "builtins"):
        autogen_context.imports.add(f"import {module}")
    return False


def _without_table_info(script: MigrationScript) -> None:
    """A table's ``info`` is for the models (row security is declared there); what it
    means for the database is in the revision as operations. Alembic would render it
    into ``op.create_table(..., info=...)``, objects the revision cannot even import."""
    for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
        for operation in container.ops:
            if isinstance(operation, ops.CreateTableOp):
                operation.info = {}


def _without_work_on_dropped_tables(
    container: OpContainer, reads: dependency_order.PolicyReads
) -> None:
    """Leave out what a table's drop does by itself: dropping its indexes and
    constraints and its row-level security (a plain ``DROP INDEX`` on a live table,
    for one, would hold writers for nothing); but not the drop of a policy that reads
    another table dropped too (:mod:`todo_database.autogenerate.order`). Called once the
    downgrade has been derived from the upgrade, so a dropped table's downgrade still
    rebuilds it all."""
    dropped = {op.table_name for op in container.ops if isinstance(op, ops.DropTableOp)}
    kept: list[Any] = []
    for operation in container.ops:
        if (
            isinstance(operation, TABLE_OPERATIONS)
            and operation.table_name in dropped
            and not dependency_order.policy_drop_stays(operation, dropped, reads)
        ):
            continue
        if isinstance(operation, ops.ModifyTableOps) and operation.table_name in dropped:
            operation.ops = [
                inner
                for inner in operation.ops
                if not isinstance(inner, ops.DropIndexOp | ops.DropConstraintOp)
            ]
            if not operation.ops:
                continue
        kept.append(operation)
    container.ops = kept


def process_revision_directives(*, drop_empty: bool) -> Any:
    """The ``process_revision_directives`` hook: operations in an order that runs
    (:mod:`todo_database.autogenerate.order`), online rewrites and up-front locks
    (:func:`todo_database.online.forms.rewrite`), no table ``info`` rendered, and, when
    `drop_empty` (``alembic revision --autogenerate``), no file when there is nothing
    to do."""

    def hook(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
        reads = dependency_order.policy_reads(context)
        for script in directives:
            _without_table_info(script)
            for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
                _without_work_on_dropped_tables(container, reads)
                dependency_order.in_dependency_order(container, reads)
        online_columns.prepare(directives)
        online.rewrite(context, revision, directives)
        renames.rewrite(context, revision, directives)
        online_columns.finish(context, directives)
        if drop_empty and all(
            ops_.is_empty() for script in directives for ops_ in script.upgrade_ops_list
        ):
            directives[:] = []
            log.info("No changes between the models and the database; no revision written.")

    return hook


# --- the revision just written ----------------------------------------------------------


@contextmanager
def _quiet(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise `names`' loggers to `level` for the duration (offline rendering chatter)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, was in zip(loggers, levels, strict=True):
            logger.setLevel(was)


def _first_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _where_in(path: Path, exc: BaseException) -> str:
    """`exc`'s innermost line in `path`, when it was raised from there."""
    lines = [
        line
        for frame, line in traceback.walk_tb(exc.__traceback__)
        if Path(frame.f_code.co_filename).resolve() == path.resolve()
    ]
    return f" (line {lines[-1]})" if lines else ""


#: ``VERIFY_REVISIONS=offline`` skips running a written revision on a throwaway
#: database: it is then only imported and rendered offline.
VERIFY_VARIABLE = "VERIFY_REVISIONS"


def verify_revision(path: str, options: Mapping[str, str]) -> None:
    """Post-write hook: the revision at `path` imports, ``alembic upgrade --sql`` and
    ``downgrade --sql`` render it, and on a throwaway database the whole chain upgrades
    to it, it downgrades and it upgrades again, all through the configuration
    `options["config"]` names. Anything else is one ``FAILED:`` line naming the file."""
    written = Path(path)
    try:
        module = load_module_py(f"verify_{written.stem}", written)
    except Exception as exc:  # noqa: BLE001  (whatever a broken file raises, one line)
        raise CommandError(
            f"{written.name} was written but does not import{_where_in(written, exc)}: "
            f"{_first_line(exc)}"
        ) from None
    revision = str(module.revision)
    down = module.down_revision
    start = "base" if down is None else down if isinstance(down, str) else down[0]
    config_file = options.get("config") or "alembic.ini"
    upgrade_sql = io.StringIO()
    for verb, span in (("upgrade", f"{start}:{revision}"), ("downgrade", f"{revision}:{start}")):
        output = upgrade_sql if verb == "upgrade" else io.StringIO()
        config = Config(config_file, output_buffer=output, stdout=io.StringIO())
        config.attributes["configure_logging"] = False
        try:
            with _quiet("alembic", "migrations"):
                getattr(command, verb)(config, span, sql=True)
        except Exception as exc:  # noqa: BLE001  (a failure of the revision's own code)
            raise CommandError(
                f"{written.name} was written but `alembic {verb} {span} --sql` fails"
                f"{_where_in(written, exc)}: {_first_line(exc)}"
            ) from None
    if losses := lint.data_losses(upgrade_sql.getvalue()):
        _ask_why(written, module, losses)
    if os.environ.get(VERIFY_VARIABLE, "").strip().lower() != "offline":
        _run_on_a_throwaway_database(written, config_file, revision, start)


def _ask_why(written: Path, module: Any, losses: list[lint.Loss]) -> None:
    """Say in one line that the revision at `written` destroys data (`losses`, read from
    its upgrade's SQL) and, unless it already says why, write an empty
    ``destructive_acknowledged`` for its author to fill: until it holds a reason, the
    tests and the review fail on the revision, and a deploy says so."""
    what = lint.describe_losses(losses)
    name = lint.DESTRUCTIVE_ACKNOWLEDGED
    if lint.destructive_reason(module) is not None:
        log.info("%s destroys data on upgrade (%s), and says why", written.name, what)
        return
    wrote = not hasattr(module, name)
    if wrote:
        _write_placeholder(written, what)
    log.warning(
        "%s destroys data on upgrade (%s): say why in its %s (%s); make test and make review "
        "fail until it does",
        written.name,
        what,
        name,
        "written empty" if wrote else "it is empty",
    )


def _write_placeholder(written: Path, what: str) -> None:
    """``destructive_acknowledged = ""`` after the revision's last top-level assignment
    before its functions (its identifiers, or ``squawk_acknowledged``), with a comment
    saying what goes, formatted as ruff formats it."""
    text = written.read_text()
    tree = ast.parse(text)
    assignments = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            break
        if isinstance(node, ast.Assign | ast.AnnAssign):
            assignments.append(node)
    lines = text.splitlines(keepends=True)
    after = assignments[-1].end_lineno if assignments else 0
    assert after is not None
    comment = textwrap.wrap(
        f"Its upgrade destroys data: {what}. Say why that is right; while this is empty, "
        "make test and make review fail on this revision.",
        width=86,
        break_long_words=False,
        break_on_hyphens=False,
    )
    block = ["\n", *(f"# {line}\n" for line in comment), f"{lint.DESTRUCTIVE_PLACEHOLDER}\n"]
    written.write_text("".join([*lines[:after], *block, *lines[after:]]))


def _run_on_a_throwaway_database(
    written: Path, config_file: str, revision: str, start: str
) -> None:
    """Upgrade a new database through `revision`, downgrade it to `start`, upgrade it
    again: what the deploy and a rollback will do. The database is ``todo_review_*``
    on the server docs and reviews use (the embedded one, or ``REVIEW_DATABASE_URL``),
    never ``DATABASE_URL``'s."""
    try:
        admin = database.review_admin_url()
        with database.throwaway_database(admin, database.REVIEW_DATABASE_PREFIX, "verify") as url:
            engine = database.create_engine(url, poolclass=pool.NullPool)
            try:
                for verb, target in (
                    ("upgrade", revision),
                    ("downgrade", start),
                    ("upgrade", revision),
                ):
                    config = Config(config_file, stdout=io.StringIO())
                    config.attributes["connection"] = engine
                    # What a deploy would warn of (an unacknowledged loss, say) is said
                    # already, of the revision itself: a failure here is the one line.
                    with _quiet("alembic", "migrations", level=logging.ERROR):
                        getattr(command, verb)(config, target)
            finally:
                engine.dispose()
    except CommandError as failure:
        reason = failure.cause if isinstance(failure, deploy.RevisionFailedError) else failure
        raise CommandError(
            f"{written.name} was written but fails on a throwaway database "
            f"(alembic {verb} {target}): {reason}"
        ) from None
    except (database.DatabaseError, DBAPIError) as exc:
        raise CommandError(
            f"{written.name} was written, but no throwaway database could be made to run it "
            f"on ({_first_line(exc)}); set {VERIFY_VARIABLE}=offline to skip that"
        ) from None


write_hooks.register("verify_revision")(verify_revision)
