"""What autogenerate compares, and what it does with an empty result.

Passed to ``context.configure`` by ``env.py``; kept here so ``env.py`` reads as a
story and so tools and tests can use the same filters.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from alembic.config import Config
from alembic.environment import NameFilterType
from alembic.operations.ops import MigrationScript
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from migrations import online

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


def process_revision_directives(config: Config) -> Any:
    """The ``process_revision_directives`` hook: index and foreign-key changes on existing
    tables are rewritten to run online, the locks of several existing tables are taken up
    front (:mod:`migrations.online`), and ``revision --autogenerate`` with nothing to do
    writes no file."""

    def hook(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
        online.rewriter(context, revision, directives)
        online.lock_up_front(context, directives)
        if not getattr(config.cmd_opts, "autogenerate", False):
            return
        script = directives[0]
        if all(ops.is_empty() for ops in script.upgrade_ops_list):
            directives[:] = []
            log.info("No changes between the models and the database; no revision written.")

    return hook
