"""Row-level security for Alembic: operations, rendering and autogenerate comparison.

Importing this package registers everything with Alembic; ``env.py`` does so.
"""

from migrations.rowsecurity import compare, operations

__all__ = ["compare", "operations"]
