"""What autogenerate compares, what it writes, and how a written revision is proven.

Passed to ``context.configure`` by ``env.py``; kept here so ``env.py`` reads as a
story and so tools and tests can use the same filters:

* :data:`COMPARE_OPTIONS` and :class:`ObjectFilter`: what is compared;
* :func:`render_item`: the modules of the models' own column types imported;
* :func:`process_revision_directives`: table ``info`` kept out of the revision, no
  row-level work on a table the same step drops, the online rewrites and up-front
  locks (:mod:`migrations.online`), and no file for an empty
  ``revision --autogenerate``;
* the ``verify_revision`` post-write hook (``alembic.ini``): a revision just written
  must import and render its upgrade and downgrade SQL, or ``alembic revision`` fails
  with one line naming the file.
"""

from __future__ import annotations

import io
import logging
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.environment import NameFilterType
from alembic.operations import ops
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from alembic.script import write_hooks
from alembic.util import CommandError
from alembic.util.pyfiles import load_module_py
from sqlalchemy.engine import Connection

from migrations import online
from migrations.rowsecurity import compare as rowsecurity

log = logging.getLogger(__name__)

#: Options every autogenerate run uses, online or offline.
COMPARE_OPTIONS: dict[str, Any] = {
    "compare_type": True,
    "compare_server_default": True,
}

_OUR_SCHEMAS = {None, "public"}

_EXTENSION_RELATIONS = """
    SELECT c.relname
    FROM pg_depend d
    JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
    WHERE d.deptype = 'e' AND c.relnamespace = 'public'::regnamespace
"""


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
        return frozenset(self._connection.exec_driver_sql(_EXTENSION_RELATIONS).scalars())

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


def render_item(kind: str, item: Any, autogen_context: AutogenContext) -> Literal[False]:
    """The ``render_item`` hook: a column type of the project's own (a ``TypeDecorator``
    in ``models/``) is rendered as Alembic renders it, ``models.x.MyType()``, and its
    module imported, which Alembic leaves out."""
    if kind == "type":
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


def process_revision_directives(*, drop_empty: bool) -> Any:
    """The ``process_revision_directives`` hook: online rewrites and up-front locks
    (:func:`migrations.online.rewrite`), no table ``info`` rendered, and, when
    `drop_empty` (``alembic revision --autogenerate``), no file when there is nothing
    to do."""

    def hook(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
        for script in directives:
            _without_table_info(script)
            for container in (*script.upgrade_ops_list, *script.downgrade_ops_list):
                rowsecurity.without_work_on_dropped_tables(container)
        online.rewrite(context, revision, directives)
        if drop_empty and all(
            ops_.is_empty() for script in directives for ops_ in script.upgrade_ops_list
        ):
            directives[:] = []
            log.info("No changes between the models and the database; no revision written.")

    return hook


# --- the revision just written ----------------------------------------------------------


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise `names`' loggers to WARNING for the duration (offline rendering chatter)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


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


def verify_revision(path: str, options: Mapping[str, str]) -> None:
    """Post-write hook: the revision at `path` imports, and ``alembic upgrade --sql``
    and ``downgrade --sql`` render it, through the configuration `options["config"]`
    names. Anything else is one ``FAILED:`` line naming the file."""
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
    for verb, span in (("upgrade", f"{start}:{revision}"), ("downgrade", f"{revision}:{start}")):
        config = Config(config_file, output_buffer=io.StringIO(), stdout=io.StringIO())
        config.attributes["configure_logging"] = False
        try:
            with _quiet("alembic", "migrations"):
                getattr(command, verb)(config, span, sql=True)
        except Exception as exc:  # noqa: BLE001  (a failure of the revision's own code)
            raise CommandError(
                f"{written.name} was written but `alembic {verb} {span} --sql` fails"
                f"{_where_in(written, exc)}: {_first_line(exc)}"
            ) from None


write_hooks.register("verify_revision")(verify_revision)
