"""Alembic environment: runs migrations on the URL the IdP's settings name, or on the
connection ``Database.upgrade`` hands over (it holds the migration lock on it)."""

from alembic import context
from sqlalchemy import create_engine

from idp.storage.models import Base

config = context.config


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    shared = config.attributes.get("connection")
    if shared is not None:
        _migrate(shared)
        return
    engine = create_engine(url)
    with engine.connect() as connection:
        _migrate(connection)
    engine.dispose()


run()
