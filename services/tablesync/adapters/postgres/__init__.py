"""PostgreSQL through asyncpg: migrations and the stores of tablesync's state."""

from tablesync.adapters.postgres.migrate import Migration, load_migrations, migrate

__all__ = ["Migration", "load_migrations", "migrate"]
