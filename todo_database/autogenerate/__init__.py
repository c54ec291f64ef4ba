"""What ``alembic revision --autogenerate`` and ``alembic check`` compare, and how a
revision is written and proven (:mod:`.revision`)."""
