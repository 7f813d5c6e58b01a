"""The state ports in memory, for the simulator and the dry run.

Every store of one ``memory_stores()`` bundle works on one ``MemoryDatabase``,
so what one writes the others read, as with one PostgreSQL database; the same
contract suites (``tests/contract/``) run on these and on ``adapters.postgres``.
``MemoryDatabase.copy()`` gives an independent copy of the whole state, cheaply
(rows are immutable and shared; only the dicts are copied)."""

from tablesync.adapters.memory.apply_state import MemoryApplyState
from tablesync.adapters.memory.checkpoints import MemoryCheckpoints
from tablesync.adapters.memory.couplings import MemoryCouplings
from tablesync.adapters.memory.database import (
    ConstraintViolation,
    MemoryDatabase,
    MemoryStore,
    Pause,
    Tables,
)
from tablesync.adapters.memory.jobs import MemoryJobs
from tablesync.adapters.memory.mappings import MemoryMappings
from tablesync.adapters.memory.problems import MemoryProblems
from tablesync.adapters.memory.singleton import MemorySingleton
from tablesync.ports.clock import Clock
from tablesync.ports.state import StateStores

__all__ = [
    "ConstraintViolation",
    "MemoryApplyState",
    "MemoryCheckpoints",
    "MemoryCouplings",
    "MemoryDatabase",
    "MemoryJobs",
    "MemoryMappings",
    "MemoryProblems",
    "MemorySingleton",
    "MemoryStore",
    "Pause",
    "Tables",
    "memory_stores",
]


def memory_stores(
    database: MemoryDatabase | None = None,
    *,
    clock: Clock | None = None,
    pause: Pause | None = None,
) -> StateStores:
    """Every state port on one in-memory database: ``database`` when given
    (``clock`` and ``pause`` are then its own), else a new, empty one."""
    if database is None:
        database = MemoryDatabase(clock, pause=pause)
    elif clock is not None or pause is not None:
        raise ValueError("pass clock and pause to the MemoryDatabase, not beside it")
    return StateStores(
        couplings=MemoryCouplings(database),
        apply_state=MemoryApplyState(database),
        jobs=MemoryJobs(database),
        mappings=MemoryMappings(database),
        problems=MemoryProblems(database),
        checkpoints=MemoryCheckpoints(database),
    )
