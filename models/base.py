"""The metadata every table registers on, and the names its constraints get.

The naming convention reproduces the names PostgreSQL itself gives unnamed
constraints and indexes (``user_pkey``, ``user_email_key``, ``session_userId_idx``,
``todo_user_id_fkey``), so a database built by Better Auth's own migrator and one
built by these revisions name things the same way, and every revision can drop
what it created by name.
"""

from sqlmodel import SQLModel

NAMING_CONVENTION = {
    "pk": "%(table_name)s_pkey",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "ix": "%(table_name)s_%(column_0_N_name)s_idx",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "ck": "%(table_name)s_%(constraint_name)s_check",
}

SQLModel.metadata.naming_convention = NAMING_CONVENTION

metadata = SQLModel.metadata

#: The ``info`` key of a table or column that names what it was called before, so that
#: ``make revision`` renames it (keeping its rows) rather than dropping it and adding a
#: new one. Left in the model once the rename has run, it does nothing.
RENAMED_FROM = "renamed_from"


def renamed_from(old_name: str) -> dict[str, str]:
    """The ``info`` of a column that was called `old_name`:
    ``Column("title", Text, info=renamed_from("name"))``, or
    ``Field(sa_column_kwargs={"info": renamed_from("name")})``. A table says it in its
    own ``info``: ``{"info": {ROW_SECURITY: ..., RENAMED_FROM: "todo_item"}}``."""
    return {RENAMED_FROM: old_name}
