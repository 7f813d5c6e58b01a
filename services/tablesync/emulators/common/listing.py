"""A short read, injected: for a while, listings of ids alone leave some rows out.

A listing of every id (``$select=<key>``, no ``$filter``) is what a deletion scan
reads; answered short — a replica behind, a page lost to a timeout, a permission
that hides rows for a moment — it makes existing records look deleted. Only
those listings are shortened: a read by id, by filter, or of whole rows still
finds every row, as the direct read that confirms a deletion does."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tablesync.emulators.common.query import QueryOptions
from tablesync.emulators.common.sql import TableSpec

__all__ = ["ShortListing", "shown"]


@dataclass(slots=True)
class ShortListing:
    share: float
    """Of the rows of each id listing, about this share is left out."""
    until: float
    clock: Callable[[], float] = time.monotonic
    salt: bytes = field(default_factory=lambda: secrets.token_bytes(8))
    """Which rows are left out: the same ones on every page and every listing of this
    short read, others on the next."""
    hidden: int = 0
    """Rows left out so far: nonzero once a listing was answered short."""

    @property
    def active(self) -> bool:
        return self.clock() < self.until

    def hides(self, key: object) -> bool:
        digest = hashlib.blake2b(str(key).lower().encode(), key=self.salt, digest_size=4).digest()
        return int.from_bytes(digest) < self.share * 2**32

    def describe(self) -> dict[str, object]:
        return {
            "share": self.share,
            "seconds_left": max(0.0, self.until - self.clock()),
            "hidden": self.hidden,
        }


def _lists_ids(spec: TableSpec, options: QueryOptions) -> bool:
    select = options.select
    return (
        options.filter is None
        and select is not None
        and [f.name for f in select] == [spec.entity.key]
    )


def shown(
    short: ShortListing | None, spec: TableSpec, options: QueryOptions, rows: Sequence[Any]
) -> Sequence[Any]:
    """The rows of one page as answered: all of them, unless a short read is on
    and the request lists ids alone."""
    if short is None or not short.active or not _lists_ids(spec, options):
        return rows
    kept = [r for r in rows if not short.hides(r[spec.entity.key])]
    short.hidden += len(rows) - len(kept)
    return kept
