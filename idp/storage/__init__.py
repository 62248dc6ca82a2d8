"""Persistent state: SQLAlchemy models, the database handle and alembic migrations."""
