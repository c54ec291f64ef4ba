"""Binds the signed-in user to every transaction of the todo API, and fails closed.

The API's login role (a member of ``todo_app``) sees and changes only the rows of the
user whose live Better Auth session is bound to the current transaction by
``public.bind_session(token)`` (:data:`models.security.BIND_SESSION`). This package
makes that binding the first statement of every transaction and impossible to forget::

    engine = session_binding.create_engine(os.environ["DATABASE_URL"])
    Sessions = session_binding.bind_every_transaction(
        sessionmaker(engine, class_=Session, expire_on_commit=False)
    )

    def list_todos(token: str) -> list[Todo]:
        with session_binding.acting_for(token), Sessions() as session:
            return list(session.exec(select(Todo)))

- :func:`acting_for` declares, for the current context (a thread, an asyncio task),
  whose session token the request's transactions bind; ``acting_for(None)`` declares an
  anonymous request;
- :func:`bind_every_transaction` makes a sessionmaker's Sessions bind at the start of
  each transaction (again after every commit and rollback);
- :func:`bind` does the same for a Core connection;
- :func:`create_engine` builds the engine: :func:`guarded <guard>` (no statement runs in
  a transaction that is not bound), its tables named with their schema, without
  server-side prepared statements, and reset between requests where it pools sessions
  itself (``session_binding/engine.py`` says why each).

A transaction begun with nothing declared raises :class:`NoIdentityError` (a bug: 500),
one whose token is not a live session :class:`InvalidSessionError` (401), one on a
connection an earlier client left temporary objects on :class:`TaintedConnectionError`
(the connection discarded; 503), all before any statement of the request runs; none
runs as nobody.
"""

from session_binding.binding import bind, bind_every_transaction, bound_user_id, guard
from session_binding.engine import POOLER_CONNECT_ARGS, create_engine, is_pooled
from session_binding.errors import (
    BindingError,
    InvalidSessionError,
    NoIdentityError,
    TaintedConnectionError,
)
from session_binding.identity import acting_for

__all__ = [
    "POOLER_CONNECT_ARGS",
    "BindingError",
    "InvalidSessionError",
    "NoIdentityError",
    "TaintedConnectionError",
    "acting_for",
    "bind",
    "bind_every_transaction",
    "bound_user_id",
    "create_engine",
    "guard",
    "is_pooled",
]
