"""The chain's offline SQL as ``alembic upgrade <span> --sql`` prints it, rendered once
per test process.

Every revision's span and the whole chain's are rendered in one warm child
(:mod:`tests.support.alembic_batch`), through the console script's own entry, with no
``DATABASE_URL`` (offline rendering never connects): the tests that read the SQL then
share it instead of each starting an ``alembic`` of its own.
"""

from __future__ import annotations

import functools
import os

from alembic.script import Script

from tests.conftest import PROJECT_ROOT, SCRIPT
from tests.support import alembic_batch
from todo_database import lint

_WHOLE_CHAIN = "head"


def head() -> str:
    """``alembic upgrade head --sql``: the whole chain."""
    return _rendered()[_WHOLE_CHAIN]


def of(revision: Script) -> str:
    """``alembic upgrade <its down revision>:<revision> --sql``: what `revision` runs, as
    :func:`todo_database.lint.offline_sql` renders it for the review."""
    return _rendered()[revision.revision]


@functools.cache
def _rendered() -> dict[str, str]:
    spans = {_WHOLE_CHAIN: _WHOLE_CHAIN}
    spans.update(
        (revision.revision, f"{lint.start_of(revision)}:{revision.revision}")
        for revision in SCRIPT.walk_revisions()
    )
    environment = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    commands = [["upgrade", span, "--sql"] for span in spans.values()]
    results = alembic_batch.run(str(PROJECT_ROOT), environment, commands)
    rendered: dict[str, str] = {}
    for (name, span), (code, stdout, stderr) in zip(spans.items(), results, strict=False):
        if code != 0:
            raise AssertionError(f"alembic upgrade {span} --sql failed:\n{stdout}{stderr}")
        rendered[name] = stdout
    if len(rendered) < len(spans):
        raise AssertionError(f"the alembic child died after {len(rendered)} of {len(spans)}")
    return rendered
