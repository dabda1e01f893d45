"""Alembic's entry point for core/store/migrations; `core.store.database.Store` runs it on every open.

The store passes its connection (already in a transaction) as `config.attributes["connection"]`;
`alembic` commands run by hand get an engine from the `sqlalchemy.url` option instead, e.g. from
`core.store.database.alembic_config(url)`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from core.store.database import metadata


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters a table by copying it; later migrations get that for free.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


config = context.config
if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
elif (shared := config.attributes.get("connection")) is not None:
    run(shared)
else:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("No database: set sqlalchemy.url (core.store.database.alembic_config(url) does).")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            run(connection)
            connection.commit()
    finally:
        engine.dispose()
