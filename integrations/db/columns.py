"""What every table model shares: the metadata they register on (with its constraint naming
convention), the common column declarations, and :func:`table_of` for queries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, DateTime, ForeignKey, Integer, MetaData, Table, func
from sqlmodel import Field, SQLModel

# A constraint naming convention so Alembic migrations name every constraint predictably.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata


def timestamp(*, nullable: bool = False, default_now: bool = True) -> Any:
    """A ``timestamptz`` column, by default ``NOT NULL DEFAULT now()``."""
    return Field(
        sa_column=Column(
            DateTime(timezone=True), nullable=nullable, server_default=func.now() if default_now else None
        )
    )


def foreign_key(
    target: str, *, nullable: bool = False, ondelete: str | None = None, index: bool = True
) -> Any:
    """An integer column referencing ``target`` (``"table.column"``), indexed by default."""
    return Field(
        sa_column=Column(Integer, ForeignKey(target, ondelete=ondelete), nullable=nullable, index=index)
    )


def table_of(model: type[SQLModel]) -> Table:
    """The Core table a SQLModel class declares, for queries (SQLModel leaves ``__table__`` untyped)."""
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table
