"""What the database holds, read in one place, as plain data: tables, their columns,
constraints, indexes and owned sequences (:mod:`.tables`); row security, grants, roles
and their settings (:mod:`.security`); functions (:mod:`.functions`); enum types
(:mod:`.enums`); which schema a reader reads (:mod:`.schemas`); and what one run reads
of it, each kind once (:mod:`.snapshot`).

Autogenerate, ``alembic check``, the docs, the review and the online forms' checks
during an upgrade all read the schema through these readers, and only through them.
Teaching the project a new kind of object is one reader here, one comparator in
:mod:`todo_database.autogenerate`, one renderer in :mod:`todo_database.operations`."""
