"""Alembic migrations: the only thing that creates or changes caremsg's schema."""
