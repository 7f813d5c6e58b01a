"""Faults a simulator makes a ``MemorySide`` suffer, as the engine would see them
through the connector.

A *call* is one request the connector would send: one page of ``changed_since``,
``read_all``, ``read_ids`` or ``find``, one ``get_many``, one ``write``. Rules match by
method and table (None: any) and last for ``count`` matching calls (None: until
cleared); the first matching rule of each kind applies.

- ``fail``: the call raises ``ApiUnavailable``, what the connector raises once its
  retry budget is spent. For a write, ``applied`` says how much took effect before the
  reply was lost: nothing (False), every op (True) or the first *n* ops.
- ``throttle``: the connector waits out 429s inside the call, so throttling shows only
  as time; each throttled call passes ``waits`` more times through the side's
  ``_pause`` hook, where a scheduler can let other work (or time) go by.
- ``refuse``: one record's write is ``Rejected`` with a 4xx status and message while
  the other ops of the call go on.
- ``refuse_read``: a read is refused with a 4xx status and message (``ReadRefused``), as
  the connector raises it: every matching read (a 401 or 403: credentials, a permission)
  or those whose filter ``where`` is true for (a query the side will not serve). A
  ``get_many`` is seen with the id filter the connector would send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tablesync.core.filters import Expr
from tablesync.core.records import Rejected, WriteOp

__all__ = ["Faults", "Outage", "ReadRefusal", "Refusal", "Throttle"]


@dataclass(slots=True)
class _Rule:
    count: int | None
    method: str | None
    table: str | None

    def take(self, method: str, table: str) -> bool:
        """Whether this call matches; counts it."""
        if (self.method is not None and self.method != method) or (
            self.table is not None and self.table != table
        ):
            return False
        if self.count is not None:
            self.count -= 1
        return True

    @property
    def spent(self) -> bool:
        return self.count is not None and self.count <= 0


@dataclass(slots=True)
class Outage(_Rule):
    applied: bool | int = False
    status: int = 503


@dataclass(slots=True)
class Throttle(_Rule):
    waits: int = 1


@dataclass(slots=True)
class Refusal:
    count: int | None
    table: str | None
    matches: Callable[[WriteOp], bool]
    result: Rejected


@dataclass(slots=True)
class ReadRefusal(_Rule):
    where: Callable[[Expr], bool] | None = None
    status: int = 400
    message: str = "The query is not valid."

    def refuses(self, method: str, table: str, expr: Expr | None) -> bool:
        """Whether this read is refused; counts it."""
        if self.where is not None and (expr is None or not self.where(expr)):
            return False
        return self.take(method, table)


class Faults:
    """The faults waiting for a side's calls; empty means the side behaves."""

    def __init__(self) -> None:
        self.outages: list[Outage] = []
        self.throttles: list[Throttle] = []
        self.refusals: list[Refusal] = []
        self.read_refusals: list[ReadRefusal] = []

    def fail(
        self,
        count: int | None = 1,
        *,
        method: str | None = None,
        table: str | None = None,
        applied: bool | int = False,
        status: int = 503,
    ) -> Outage:
        """The next ``count`` matching calls raise ``ApiUnavailable``."""
        rule = Outage(count, method, table, applied, status)
        self.outages.append(rule)
        return rule

    def throttle(
        self,
        count: int | None = 1,
        *,
        method: str | None = None,
        table: str | None = None,
        waits: int = 1,
    ) -> Throttle:
        """The next ``count`` matching calls are throttled ``waits`` times each."""
        rule = Throttle(count, method, table, waits)
        self.throttles.append(rule)
        return rule

    def refuse(
        self,
        table: str | None = None,
        *,
        record_id: str | None = None,
        where: Callable[[WriteOp], bool] | None = None,
        count: int | None = 1,
        status: int = 400,
        message: str = "The record was refused by the service.",
    ) -> Refusal:
        """The next ``count`` writes of a matching op are ``Rejected(status, message)``:
        ops naming ``record_id`` (a create names one only when it gives it), or ops
        ``where`` is true for, or any op when neither is given."""
        if not 400 <= status < 500:
            raise ValueError("a refusal is a 4xx status")
        wanted = record_id.lower() if record_id is not None else None

        def matches(op: WriteOp) -> bool:
            if wanted is not None and (op.record_id is None or op.record_id.lower() != wanted):
                return False
            return where is None or where(op)

        rule = Refusal(count, table, matches, Rejected(status, message))
        self.refusals.append(rule)
        return rule

    def refuse_read(
        self,
        count: int | None = None,
        *,
        method: str | None = None,
        table: str | None = None,
        where: Callable[[Expr], bool] | None = None,
        status: int = 400,
        message: str = "The query is not valid.",
    ) -> ReadRefusal:
        """The next ``count`` matching reads (None: until cleared) are refused with
        ``status`` and ``message``: those with a filter ``where`` is true for, or every
        one when ``where`` is None."""
        if not 400 <= status < 500:
            raise ValueError("a refusal is a 4xx status")
        rule = ReadRefusal(count, method, table, where, status, message)
        self.read_refusals.append(rule)
        return rule

    def clear(self) -> None:
        self.outages.clear()
        self.throttles.clear()
        self.refusals.clear()
        self.read_refusals.clear()

    # ------------------------------------------------------------ used by the side

    @property
    def active(self) -> bool:
        return bool(self.outages or self.throttles or self.refusals or self.read_refusals)

    def outage(self, method: str, table: str) -> Outage | None:
        for rule in self.outages:
            if rule.take(method, table):
                if rule.spent:
                    self.outages.remove(rule)
                return rule
        return None

    def waits(self, method: str, table: str) -> int:
        for rule in self.throttles:
            if rule.take(method, table):
                if rule.spent:
                    self.throttles.remove(rule)
                return rule.waits
        return 0

    def read_refusal(self, method: str, table: str, expr: Expr | None) -> ReadRefusal | None:
        for rule in self.read_refusals:
            if rule.refuses(method, table, expr):
                if rule.spent:
                    self.read_refusals.remove(rule)
                return rule
        return None

    def refusal(self, table: str, op: WriteOp) -> Rejected | None:
        for rule in self.refusals:
            if (rule.table is None or rule.table == table) and rule.matches(op):
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count <= 0:
                        self.refusals.remove(rule)
                return rule.result
        return None
