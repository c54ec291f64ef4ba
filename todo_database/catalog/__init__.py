"""What the database holds, read in one place, as plain data: tables, their columns,
constraints, indexes and owned sequences (:mod:`.tables`); row security, grants, roles
and their settings (:mod:`.security`); functions (:mod:`.functions`); enum types
(:mod:`.enums`); which schema a reader reads (:mod:`.schemas`); what the session's
role may set (:mod:`.session`); and what one autogenerate run reads of it, each kind
once (:mod:`.snapshot`).

The project's comparators, the docs, the review, the online forms' checks during an
upgrade and the deploy lock read the schema through these readers (Alembic's own
comparators reflect through SQLAlchemy). Teaching the project a new kind of object is
one reader here, one comparator in :mod:`todo_database.autogenerate`, one renderer in
:mod:`todo_database.operations`."""
