"""Functions compared: what the schema holds
(:func:`todo_database.catalog.functions.read_functions`) against the declarations'
twins, made by PostgreSQL in ``pg_temp`` (:mod:`todo_database.autogenerate.deparse`):
created, replaced, re-owned, granted and revoked; one nobody declares is dropped."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from alembic.operations import MigrateOperation

from models.security import Function
from todo_database.catalog.functions import Held
from todo_database.operations.functions import (
    CreateFunctionOp,
    DropFunctionOp,
    FunctionOwnerOp,
    GrantExecuteOp,
    ReplaceFunctionOp,
    RevokeExecuteOp,
)


def diff_functions(
    declared: Iterable[Function],
    twins: Mapping[tuple[str, str], Held],
    held: Mapping[tuple[str, str], Held],
) -> list[MigrateOperation]:
    """Operations that bring the schema's functions to the declarations. `twins` are
    the declared functions as PostgreSQL made them in ``pg_temp``."""
    result: list[MigrateOperation] = []
    by_name = {function.name: function for function in declared}
    wanted = {key: twin for key, twin in twins.items() if key[0] in by_name}
    for key, undeclared in sorted(held.items()):
        if key not in wanted:
            result.append(DropFunctionOp(undeclared.declaration()))
    for key, twin in sorted(wanted.items()):
        function = by_name[key[0]]
        current = held.get(key)
        if current is None:
            result.append(CreateFunctionOp(function))
            continue
        if current.shape != twin.shape:
            result.append(ReplaceFunctionOp(function, current.declaration()))
        signature = function.signature
        if function.owner is not None and current.owner != function.owner:
            result.append(FunctionOwnerOp(signature, str(function.owner), current.owner))
        # The owner may always execute its function: not a grant to manage.
        have = current.executors - {current.owner, function.owner}
        want = {str(role) for role in function.executors}
        for role in sorted(have - want):
            result.append(RevokeExecuteOp(signature, role))
        for role in sorted(want - have):
            result.append(GrantExecuteOp(signature, role))
    return result
