"""The operator's operations, once: what the CLI and the admin API both call.

``Operator`` offers one method per operation — run a full synchronization or
a synchronization of modified records, couple and uncouple, change a mapping,
the recovery actions on the errors list, replay a window, a dry run — and the
reads behind the listings. Each method checks its request the one way both
front ends share and refuses it with an error of ``tablesync.errors``
(``InvalidRequest``, ``NotFound`` and its kinds, ``CommandRefused`` and its
kinds, ``MappingError``); the CLI turns those into its exit codes and lines,
the admin API into its HTTP problems.

It is built from ports only (``ports.state.StateStores``, the side APIs, the
command publisher, the log window, the pair claims, codec, clock, settings),
so it sits above ``runtime/`` (whose engines it drives) and below the front
ends and the composition that builds it."""

from tablesync.application.operator import ApiOpener, ClaimsOpener, Operator

__all__ = ["ApiOpener", "ClaimsOpener", "Operator"]
