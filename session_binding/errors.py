"""Why a request's database work cannot run: each maps to one HTTP answer."""


class BindingError(Exception):
    """The database work of a request cannot be bound to the user who made it."""


class NoIdentityError(BindingError):
    """A transaction began, or a statement ran, with no identity declared for it: a bug in
    the API (a code path that forgot :func:`session_binding.acting_for`), never the
    client's fault, so a 500."""


class InvalidSessionError(BindingError):
    """The declared token is not a live Better Auth session (unknown, expired or signed
    out): the client must sign in again, so a 401."""


class TaintedConnectionError(BindingError):
    """The connection holds temporary objects an earlier client left (the database
    refused to bind on it, :data:`models.security.TAINTED_CONNECTION`): it is discarded,
    and the request fails, so a 503 the client may retry. No role of the API may create
    temporary objects, so it means a grant has drifted: ``alembic check`` reports it."""
