"""The API's engine: guarded, and without server-side prepared statements by default.

psycopg prepares a statement on the server once it has run ``prepare_threshold`` (5)
times on a connection. A prepared statement lives in one server session, and a pooler in
transaction mode hands each transaction whichever server session is free: through one
that does not track them (PgBouncer before 1.21, or any with ``max_prepared_statements =
0``) the next transaction fails with ``prepared statement "_pg3_0" does not exist`` (or
``already exists``), and only under concurrency. The cost of going without is a parse
and plan per statement, which for the API's short index lookups is well below a round
trip (see research.md, "The API's binding and PgBouncer").
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

import psycopg
import sqlalchemy as sa
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


def create_engine(url: str | URL, *, prepared_statements: bool = False, **kwargs: Any) -> Engine:
    """The engine of the todo API, driven by psycopg 3 and :func:`guarded
    <session_binding.guard>`: it runs no statement in a transaction no session is bound
    to. `url` is any PostgreSQL URL (``postgresql://`` is driven by psycopg); `kwargs` go
    to :func:`sqlalchemy.create_engine`.

    Server-side prepared statements are off (:data:`POOLER_CONNECT_ARGS`) unless
    `prepared_statements`: right for a direct connection, or a pooler that tracks them
    (PgBouncer 1.22+ with ``max_prepared_statements`` above 0, as Neon's is), and then only
    with a libpq that can close a prepared statement at the protocol level (17+), which
    is checked for Neon's pooled hosts.
    """
    url = sa.make_url(url)
    if url.drivername not in _PSYCOPG_SCHEMES:
        raise ValueError(f"the API's engine drives psycopg 3, not {url.drivername!r}")
    url = url.set(drivername="postgresql+psycopg")
    closes_prepared = psycopg.capabilities.has_send_close_prepared()
    if prepared_statements and is_pooled(url) and not closes_prepared:
        raise ValueError(
            "prepared statements through a pooler need a libpq of PostgreSQL 17 or later, "
            f"to close them at the protocol level (this one is {psycopg.pq.version()})"
        )
    connect_args = dict(kwargs.pop("connect_args", {}))
    if not prepared_statements:
        connect_args.update(POOLER_CONNECT_ARGS)
    return guard(sa.create_engine(url, connect_args=connect_args, **kwargs))
