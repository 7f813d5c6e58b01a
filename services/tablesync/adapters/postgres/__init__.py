"""PostgreSQL through asyncpg: migrations and the stores of tablesync's state."""

from typing import Any

from tablesync.adapters.postgres.apply_state import ApplyStateStore
from tablesync.adapters.postgres.checkpoints import CheckpointStore
from tablesync.adapters.postgres.couplings import CouplingStore
from tablesync.adapters.postgres.jobs import JobStore
from tablesync.adapters.postgres.lock import PostgresLease
from tablesync.adapters.postgres.mappings import MappingStore
from tablesync.adapters.postgres.migrate import Migration, load_migrations, migrate
from tablesync.adapters.postgres.problems import ProblemStore
from tablesync.ports.state import StateStores

__all__ = ["Migration", "PostgresLease", "load_migrations", "migrate", "postgres_stores"]


def postgres_stores(pool: Any) -> StateStores:
    """Every state port on one asyncpg pool."""
    return StateStores(
        couplings=CouplingStore(pool),
        apply_state=ApplyStateStore(pool),
        jobs=JobStore(pool),
        mappings=MappingStore(pool),
        problems=ProblemStore(pool),
        checkpoints=CheckpointStore(pool),
    )
