"""The binding: first in every transaction, and no statement runs in a transaction without.

:func:`bind` calls ``public.bind_session(token)`` (:data:`models.security.BIND_SESSION`)
on a connection; the ORM listener that :func:`bind_every_transaction` installs calls it
for every transaction a Session begins; :func:`guard` makes an engine refuse any other
statement in a transaction the binding has not run in. Each binding is remembered on the
connection together with the Core transaction it ran in, so a binding never outlives its
transaction, whatever the pool or PgBouncer do with the connection afterwards.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from psycopg.pq import TransactionStatus
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExecutionContext, RootTransaction
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from models.security import BIND_SESSION, TAINTED_CONNECTION
from session_binding.errors import (
    BindingError,
    InvalidSessionError,
    NoIdentityError,
    TaintedConnectionError,
)
from session_binding.identity import declared

# The call is written from the declaration, so a renamed or moved function breaks here,
# at import, rather than at the first request.
if (BIND_SESSION.arguments, BIND_SESSION.returns) != ("token text", "text"):
    raise ImportError(
        f"session_binding calls {BIND_SESSION.signature} as (token text) RETURNS text; "
        "the declaration in models/security.py changed: update session_binding/binding.py"
    )

_BINDING: Final = sa.text(f"SELECT {BIND_SESSION.schema}.{BIND_SESSION.name}(:token)").bindparams(
    sa.bindparam("token", type_=sa.Text)
)
#: Marks the binding's own statement, which the guard lets through.
_BINDING_OPTION: Final = "session_binding.binds"
#: Where a connection keeps its last binding (``Connection.info`` lives as long as the
#: DBAPI connection, across checkouts).
_BOUND_KEY: Final = "session_binding.bound"
#: The Session classes :func:`bind_every_transaction` made bind, and the engines
#: :func:`guard` guards. Kept here rather than asked of ``event.contains``: SQLAlchemy's
#: event registry keys a listener by ``id()`` of its target (the sessionmaker) and keeps
#: a class-level one's key after the target is collected, so a new sessionmaker at a
#: collected one's address would look bound and never bind.
_BINDING_CLASSES: Final[weakref.WeakSet[type[Session]]] = weakref.WeakSet()
_GUARDED_ENGINES: Final[weakref.WeakSet[Engine]] = weakref.WeakSet()


@dataclass(frozen=True)
class _Binding:
    transaction: RootTransaction
    user_id: str | None


def bind(connection: Connection, token: str | None) -> str | None:
    """Bind `token` to `connection`'s current transaction (beginning one if none runs)
    and return the user's id; None binds nobody, for an anonymous request, and returns
    None.

    Raises :class:`InvalidSessionError` when `token` is not a live session, and
    :class:`BindingError` when the connection runs no transaction of its own
    (autocommit), in which the binding would end with its own statement. Call it before
    anything else in the transaction: until it has run, a guarded engine refuses every
    statement.
    """
    connection.info.pop(_BOUND_KEY, None)
    try:
        user_id = connection.execute(
            _BINDING, {"token": token}, execution_options={_BINDING_OPTION: True}
        ).scalar_one()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != TAINTED_CONNECTION:
            raise
        # What the earlier client left must not serve the next one: the pool drops it.
        connection.invalidate()
        raise TaintedConnectionError(
            "the connection holds temporary objects an earlier client left; it was discarded"
        ) from None
    transaction = connection.get_transaction()
    if transaction is None or _transaction_status(connection) != TransactionStatus.INTRANS:
        raise BindingError(
            "the binding lasts one transaction and this connection runs none (autocommit?): "
            "bind inside connection.begin() or a Session transaction"
        )
    if token is not None and user_id is None:
        raise InvalidSessionError(
            "the session token is not a live Better Auth session (unknown, expired or signed out)"
        )
    connection.info[_BOUND_KEY] = _Binding(transaction, user_id)
    return None if user_id is None else str(user_id)


def bound_user_id(where: Session | Connection) -> str | None:
    """The id of the user bound to `where`'s current transaction (None for an anonymous
    request). A Session begins its transaction, and so binds it, if none runs; a
    Connection must have been bound (:class:`NoIdentityError` otherwise)."""
    connection = where.connection() if isinstance(where, Session) else where
    binding = _binding_of(connection)
    if binding is None:
        raise NoIdentityError("no session is bound to this connection's transaction")
    return binding.user_id


_Factory = TypeVar("_Factory", bound="sessionmaker[Any] | type[Session]")


def bind_every_transaction(factory: _Factory) -> _Factory:
    """Make every transaction of `factory`'s Sessions (a ``sessionmaker``, or a Session
    subclass of the API's own) begin with the binding of the token declared by
    :func:`session_binding.acting_for` in the context that begins it: at the first
    statement, and again after each commit or rollback. A transaction begun with no
    declaration raises :class:`NoIdentityError`, a dead token
    :class:`InvalidSessionError`, both before the transaction's first statement. Never
    pass SQLAlchemy's own ``Session`` class: every Session of the process would bind.
    Returns `factory`."""
    if factory is Session:
        raise TypeError(
            "bind a sessionmaker or a Session subclass of the API's own, not "
            "sqlalchemy.orm.Session (every Session of the process would bind)"
        )
    session_class = factory.class_ if isinstance(factory, sessionmaker) else factory
    # A listener on a Session class serves its subclasses too.
    if not any(base in _BINDING_CLASSES for base in session_class.__mro__):
        event.listen(session_class, "after_begin", _bind_on_begin)
        _BINDING_CLASSES.add(session_class)
    return factory


def guard(engine: Engine) -> Engine:
    """Make `engine` refuse, with :class:`NoIdentityError`, any statement in a
    transaction :func:`bind` has not run in: a Core connection that forgot to bind, a
    Session used again after its binding failed, a Session of a factory that does not
    bind. Returns `engine`."""
    if engine not in _GUARDED_ENGINES:
        event.listen(engine, "before_cursor_execute", _refuse_unbound)
        _GUARDED_ENGINES.add(engine)
    return engine


def _bind_on_begin(
    session: Session, transaction: SessionTransaction, connection: Connection
) -> None:
    # A savepoint runs inside a transaction that was bound when it began.
    if transaction.nested:
        return
    bind(connection, declared().token)


def _refuse_unbound(  # noqa: PLR0917  (the signature is SQLAlchemy's event's)
    connection: Connection,
    cursor: object,
    statement: str,
    parameters: object,
    context: ExecutionContext | None,
    executemany: bool,
) -> None:
    if context is not None and context.execution_options.get(_BINDING_OPTION):
        return
    if _binding_of(connection) is None:
        raise NoIdentityError(
            "a statement was about to run in a transaction no session is bound to: bind "
            "first (session_binding.bind, or a Session of a factory passed to "
            "bind_every_transaction, inside acting_for)"
        )


def _binding_of(connection: Connection) -> _Binding | None:
    binding = connection.info.get(_BOUND_KEY)
    if isinstance(binding, _Binding) and binding.transaction is connection.get_transaction():
        return binding
    return None


def _transaction_status(connection: Connection) -> TransactionStatus | None:
    """psycopg's view of the server session: INTRANS inside a transaction, IDLE after
    an autocommitted statement. Read locally, without a round trip."""
    driver = connection.connection.driver_connection
    status = getattr(getattr(driver, "info", None), "transaction_status", None)
    return status if isinstance(status, TransactionStatus) else None
