"""Row-level security for Alembic: the models' declarations resolved and checked
(:mod:`.declarations`), operations and their rendering (:mod:`.operations`), and the
autogenerate comparison with the live catalog (:mod:`.compare`).

Importing :mod:`.compare` registers the operations and the comparator with Alembic;
``env.py`` does so.
"""
