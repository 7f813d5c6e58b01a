"""The small interfaces the runtimes depend on; adapters implement them."""

from tablesync.ports.api import SideApi
from tablesync.ports.clock import Clock, SystemClock

__all__ = ["Clock", "SideApi", "SystemClock"]
