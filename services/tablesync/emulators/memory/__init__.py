"""In-memory stand-ins of both APIs for the deterministic simulator.

``MemorySide`` implements ``tablesync.ports.api.SideApi`` the way the OData connector
and the project's emulators behave together, on dicts instead of HTTP and PostgreSQL;
``tests/contract/test_side_api.py`` holds the two to the same tests. ``Faults`` is what
a simulator makes the side suffer.
"""

from tablesync.emulators.memory.faults import Faults, Outage, Refusal, Throttle
from tablesync.emulators.memory.side import MemorySide
from tablesync.emulators.memory.store import IdSource, counter_ids

__all__ = ["Faults", "IdSource", "MemorySide", "Outage", "Refusal", "Throttle", "counter_ids"]
