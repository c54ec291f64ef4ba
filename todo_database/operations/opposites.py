"""Operations that come in opposite pairs: grant and revoke, create and drop, enable
and disable. Each one's reverse is the other with the same fields, so a downgrade
undoes exactly what its upgrade did."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar, TypeVar

from alembic.operations import MigrateOperation


class OppositeOp(MigrateOperation):
    """A dataclass operation whose reverse is :attr:`opposite` built from its fields."""

    #: The name of the ``op.`` method, also the first item of the diff tuple.
    operation_name: ClassVar[str] = ""
    opposite: ClassVar[type[OppositeOp]]

    def reverse(self) -> OppositeOp:
        return self.opposite(*(getattr(self, field.name) for field in fields(self)))  # type: ignore[arg-type]

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return (self.operation_name, *(getattr(self, field.name) for field in fields(self)))  # type: ignore[arg-type]


_Op = TypeVar("_Op", bound=type[OppositeOp])


def opposites(one: _Op, other: _Op) -> None:
    """Make `one` and `other` each other's reverse."""
    one.opposite, other.opposite = other, one
