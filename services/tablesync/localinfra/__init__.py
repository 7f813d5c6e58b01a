"""The local Kafka and PostgreSQL that development and tests run against.

``up`` starts a single-node Kafka (KRaft, from Maven Central's jars) and a
PostgreSQL server in a data directory of tablesync's own, on the addresses in
the settings, and waits until both answer; ``down`` stops them; ``status``
reports them. Servers of the right kind that tablesync did not start are used
as "external" and never stopped. Failures raise ``tablesync.errors.InfraError``.
"""

from __future__ import annotations

from tablesync.localinfra.control import (
    down,
    down_async,
    purge,
    purge_async,
    shutdown,
    shutdown_async,
    status,
    status_async,
    up,
    up_async,
)
from tablesync.localinfra.model import InfraStatus, ServerState, ServerStatus

__all__ = [
    "InfraStatus",
    "ServerState",
    "ServerStatus",
    "down",
    "down_async",
    "purge",
    "purge_async",
    "shutdown",
    "shutdown_async",
    "status",
    "status_async",
    "up",
    "up_async",
]
