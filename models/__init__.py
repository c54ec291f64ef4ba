"""Every table of the todo service, registered on one metadata.

Importing this package is enough for Alembic to see the whole schema: each area's
module is imported here and its tables listed in ``__all__``.
"""

from models.auth import Account, Session, User, Verification
from models.base import NAMING_CONVENTION, metadata
from models.todo import Todo, TodoCreate, TodoUpdate

__all__ = [
    "NAMING_CONVENTION",
    "Account",
    "Session",
    "Todo",
    "TodoCreate",
    "TodoUpdate",
    "User",
    "Verification",
    "metadata",
]
