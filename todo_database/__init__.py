"""The machinery of the schema repository, by concern.

``migrations/`` is Alembic's (``env.py``, the template, ``versions/``); what it runs
lives here, each package leaning only on those listed after it:

* :mod:`todo_database.review`: ``make review`` and ``schema.md``;
* :mod:`todo_database.neon`: Neon's API, ``neon-branch`` and restore points;
* :mod:`todo_database.autogenerate`: what ``alembic revision --autogenerate`` and
  ``alembic check`` compare, and how a revision is written and proven;
* :mod:`todo_database.lint`: what a revision's SQL does (squawk, data it destroys);
* :mod:`todo_database.deploy`: running revisions safely, and reaching the database;
* :mod:`todo_database.online`: changes to live tables in their online forms;
* :mod:`todo_database.catalog`: what the database holds, read in one place;
* :mod:`todo_database.operations`: the ``op.*`` operations of revisions, one module
  per kind of database object: their SQL and how a revision spells them;
* :mod:`todo_database.declarations`: what the models declare, resolved and checked.

The todo API imports ``models`` and ``session_binding``, never this package.
"""
