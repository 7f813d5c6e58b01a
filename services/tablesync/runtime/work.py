"""The changes an applier takes through its steps, and what it works with.

Each record of a chunk is a ``Work``: its ``Item`` (the change and where it
came from), the ``Facts`` gathered so far and, once decided, what its writes
did (``Performed``). Both are frozen values of the core; a step replaces
them, so what the rules saw is always one consistent value."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from tablesync.core.counting import Performed
from tablesync.core.decision import Facts
from tablesync.core.effects import DueRecord
from tablesync.core.events import RecordChanged, Side
from tablesync.core.mappings import MappingSet, TableMapping
from tablesync.core.plan import Decision, JobContext
from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock
from tablesync.ports.state import ApplyState, Couplings

__all__ = ["Item", "Scope", "Work"]


@dataclass(frozen=True, slots=True)
class Item:
    """One change to apply, where it came from, and the job it counts toward."""

    event: RecordChanged
    raw: bytes
    job: JobContext
    topic: str
    partition: int
    offset: int | None = None
    retry: DueRecord | None = None


@dataclass(slots=True)
class Scope:
    """The mapping an applier applies and the ports it works through; the
    mappings are replaced when they are reloaded."""

    mapping_name: str
    mappings: MappingSet
    apis: dict[Side, SideApi]
    couplings: Couplings
    state: ApplyState
    clock: Clock
    new_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    """The id a new Dataverse record gets (tablesync names it, and announces
    it with the create's intent): random, unless a caller needs them repeatable."""

    @property
    def mapping(self) -> TableMapping:
        return self.mappings.get(self.mapping_name)


@dataclass(slots=True)
class Work:
    item: Item
    facts: Facts
    done: Performed | None = None

    @property
    def event(self) -> RecordChanged:
        return self.item.event

    @property
    def performed(self) -> Performed:
        assert self.done is not None, "decided before it is written"
        return self.done

    @property
    def decision(self) -> Decision:
        return self.performed.decision
