"""Whose request this is: the Better Auth session token declared for the current context.

The declaration lives in a :class:`contextvars.ContextVar`, so it belongs to one thread or
one asyncio task: concurrent requests never see each other's, a new thread starts with
none (and fails closed), and ``asyncio.to_thread`` or Starlette's thread pool carry the
caller's along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

from session_binding.errors import NoIdentityError


@dataclass(frozen=True)
class Declared:
    """What the current context declared: a session token, or None for a request that
    says it is anonymous."""

    token: str | None

    def __repr__(self) -> str:
        # A token is a bearer credential: it must not reach a log through a repr.
        return "Declared(anonymous)" if self.token is None else "Declared(token=***)"


_DECLARED: Final[ContextVar[Declared]] = ContextVar("session_binding.declared")


@contextmanager
def acting_for(token: str | None) -> Iterator[None]:
    """Every transaction begun inside the block binds `token` (a Better Auth session
    token, as stored in ``session.token``) first; None says, explicitly, that the request
    is anonymous (its transactions run as nobody and see no owned row).

    Enter and leave the block in the same context (a plain ``with`` in the request
    handler). A transaction already running when the block starts or ends keeps the
    binding it began with.
    """
    if token is not None and not isinstance(token, str):
        raise TypeError(f"a session token is a str, not {type(token).__name__}")
    reset = _DECLARED.set(Declared(token))
    try:
        yield
    finally:
        _DECLARED.reset(reset)


def declared() -> Declared:
    """The current context's declaration; :class:`NoIdentityError` when it made none."""
    try:
        return _DECLARED.get()
    except LookupError:
        raise NoIdentityError(
            "a transaction began with no identity declared for this request: wrap the "
            "request's database work in session_binding.acting_for(token), or "
            "acting_for(None) when it is anonymous"
        ) from None
