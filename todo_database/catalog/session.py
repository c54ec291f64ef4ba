"""The session's role, as a deploy asks of it before it runs revisions. Imports
nothing of the models: ``env.py`` loads the deploy runner before it imports them, to
report a model that does not import in one line."""

from __future__ import annotations

from sqlalchemy.engine import Connection

#: Whether the session's role may set a setting (PostgreSQL 15+ can grant it; before,
#: a superuser only), which role that is, and the setting's value now.
_MAY_I_SET = """
    SELECT CASE WHEN current_setting('server_version_num')::int >= 150000
                THEN has_parameter_privilege(%(name)s, 'SET')
                ELSE (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) END,
           current_user, current_setting(%(name)s)
"""


def may_i_set(connection: Connection, name: str) -> tuple[bool, str, str]:
    """(whether the session's role may set `name`, that role, the setting's value)."""
    may_set, role, value = connection.exec_driver_sql(_MAY_I_SET, {"name": name}).one()
    return bool(may_set), role, value
