"""The database (SQLAlchemy, Alembic migrations) and one owner's workspace written through to it."""
