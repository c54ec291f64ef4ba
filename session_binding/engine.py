"""The API's engine: guarded, its tables named with their schema, no server-side prepared
statements, and its pooled connections reset between requests.

Whatever one request leaves on a connection must not reach the next, whichever user
makes it (an injected statement may leave anything a session can hold):

* **tables named with their schema**: every table of the models is written
  ``public.todo`` (a ``schema_translate_map``), so a name an earlier client could shadow
  (a temporary table, a search_path it set) is never looked up;
* **no server-side prepared statements**: psycopg prepares a statement once it has run
  ``prepare_threshold`` (5) times, under a predictable name (``_pg3_0``...), and an
  injected ``DEALLOCATE``/``PREPARE`` of that name in one request replaced the
  binding's own statement for the next request on that server connection (bound as
  the attacker, or handing over the token). Through a transaction-mode pooler that
  does not track them (PgBouncer before 1.21) they fail besides. Without them a
  statement is parsed and planned each time it runs, which for the API's short index
  lookups costs well below a round trip (research.md, "The API's binding and
  PgBouncer"). There is no option to turn them on;
* **a reset when a connection goes back to SQLAlchemy's pool**, a pool of sessions:
  ``DISCARD ALL`` after the rollback (settings, temporary objects, advisory locks,
  prepared statements, cursors, ``LISTEN``). Not through Neon's pooled endpoint (a
  transaction-mode pooler hands the next statement to any server connection, and runs
  no reset of its own); there ``bind_session`` refuses a server connection holding
  temporary objects, and nothing else an earlier client can leave changes what the
  next one's statements mean (research.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine

from session_binding.binding import guard

#: psycopg's connect arguments for a pooler that does not track prepared statements:
#: ``sqlalchemy.create_engine(url, connect_args=POOLER_CONNECT_ARGS)``.
POOLER_CONNECT_ARGS: Final[Mapping[str, object]] = MappingProxyType({"prepare_threshold": None})

_PSYCOPG_SCHEMES: Final = {"postgres", "postgresql", "postgresql+psycopg"}


def is_pooled(url: str | URL) -> bool:
    """Whether `url` names a Neon pooled endpoint (``ep-...-pooler.<region>...``)."""
    host = sa.make_url(url).host or ""
    return host.split(".", 1)[0].endswith("-pooler")


def create_engine(
    url: str | URL, *, transaction_pooler: bool | None = None, **kwargs: Any
) -> Engine:
    """The engine of the todo API, driven by psycopg 3 and :func:`guarded
    <session_binding.guard>`: it runs no statement in a transaction no session is bound
    to. `url` is any PostgreSQL URL (``postgresql://`` is driven by psycopg); `kwargs` go
    to :func:`sqlalchemy.create_engine`. See the module's docstring for what it does to
    keep one request's leftovers from the next. `transaction_pooler` says whether `url`
    leads to a pooler in transaction mode (no reset to make); by default, whether it is
    Neon's pooled endpoint."""
    if "prepared_statements" in kwargs:
        raise TypeError(
            "prepared_statements is no option: an injected statement could replace a "
            "prepared binding for the next request on the same server connection "
            "(session_binding/engine.py)"
        )
    url = sa.make_url(url)
    if url.drivername not in _PSYCOPG_SCHEMES:
        raise ValueError(f"the API's engine drives psycopg 3, not {url.drivername!r}")
    url = url.set(drivername="postgresql+psycopg")
    connect_args = dict(kwargs.pop("connect_args", {}))
    if connect_args.get("prepare_threshold") is not None:
        raise ValueError(
            "prepare_threshold must stay None: server-side prepared statements could be "
            "replaced by an injected statement for the next request"
        )
    connect_args.update(POOLER_CONNECT_ARGS)
    pooled = is_pooled(url) if transaction_pooler is None else transaction_pooler
    if not pooled:
        kwargs.setdefault("pool_reset_on_return", None)  # reset_on_return below does it
    engine = sa.create_engine(url, connect_args=connect_args, **kwargs)
    if not pooled:
        event.listen(engine, "reset", _discard_all)
    engine = engine.execution_options(schema_translate_map={None: "public"})
    return guard(engine)


def _discard_all(
    dbapi_connection: psycopg.Connection[Any], record: object, reset_state: object
) -> None:
    """What a connection held for its last request, gone before the next: the rollback
    SQLAlchemy would make, then ``DISCARD ALL`` (which a transaction may not run)."""
    dbapi_connection.rollback()
    dbapi_connection.autocommit = True
    try:
        dbapi_connection.execute("DISCARD ALL")
    finally:
        dbapi_connection.autocommit = False
