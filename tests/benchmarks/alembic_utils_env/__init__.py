"""A minimal Alembic environment declaring the same policies with alembic_utils.

Used by ``tests/benchmarks/drift.py`` to time ``alembic check`` with alembic_utils'
``PGPolicy`` entities instead of this project's row-security comparator. Its
``alembic.ini`` points at this directory for ``env.py`` and at the project's own
``migrations/versions`` for the chain, so it checks the very same database at head.
"""
