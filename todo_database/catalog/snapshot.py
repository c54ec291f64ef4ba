"""What one run reads of the catalog: each kind on first use, then kept for the run.

An autogenerate run (``make revision``, ``alembic check``) has several comparators
that ask of the same schema; :func:`for_run` gives them one :class:`Snapshot` per
migration context, so each kind is read once per run and not at all by a run that
does not ask for it. The snapshot is of the schema as the comparison sees it (the
declared renames carried out, :mod:`todo_database.autogenerate.renames`): what reads
the database around its own changes (the renames, the online forms mid-upgrade) calls
the readers directly instead.
"""

from __future__ import annotations

from functools import cached_property
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Connection

from todo_database.catalog.enums import read_enums
from todo_database.catalog.functions import Held, read_functions
from todo_database.catalog.schemas import PUBLIC
from todo_database.catalog.security import Catalog, read_catalog
from todo_database.catalog.tables import Constraint, Index, read_constraints, read_indexes


class Snapshot:
    """The readers of this package over one connection, each read once."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @cached_property
    def security(self) -> Catalog:
        return read_catalog(self.connection)

    @cached_property
    def functions(self) -> dict[tuple[str, str], Held]:
        return read_functions(self.connection, PUBLIC)

    @cached_property
    def enums(self) -> dict[str, tuple[str, ...]]:
        return read_enums(self.connection)

    @cached_property
    def constraints(self) -> dict[str, dict[str, Constraint]]:
        return read_constraints(self.connection)

    @cached_property
    def indexes(self) -> dict[str, dict[str, Index]]:
        return read_indexes(self.connection)


_runs: WeakKeyDictionary[object, Snapshot] = WeakKeyDictionary()


def for_run(run: object, connection: Connection) -> Snapshot:
    """The snapshot of `run` (an object that lives as long as the run: its migration
    context), made over `connection` on first use."""
    if run not in _runs:
        _runs[run] = Snapshot(connection)
    return _runs[run]
