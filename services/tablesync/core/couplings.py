"""Couplings and the stamps that tell whether a record changed since the last sync."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from tablesync.core.events import Direction, Side

__all__ = ["Coupling", "Freshness", "Stamp", "compare_stamps"]

Freshness = Literal["same", "older", "newer"]

_DATAVERSE_VERSION = re.compile(r'^W/"(\d+)"$')


@dataclass(frozen=True, slots=True)
class Stamp:
    """What a side says about a record's version: its modified time and ETag."""

    modified_at: datetime | None
    etag: str | None


def _dataverse_version(etag: str | None) -> int | None:
    if etag is None:
        return None
    match = _DATAVERSE_VERSION.match(etag)
    return int(match.group(1)) if match else None


def compare_stamps(side: Side, seen: Stamp, synced: Stamp) -> Freshness:
    """Where a version ``seen`` in an event stands against the one last synced.

    Dataverse's ETag is the row's versionnumber, which only grows, so it
    orders versions exactly (``modifiedon`` has whole seconds only). BC's
    ETag is opaque: equal means same; otherwise the millisecond stamp orders."""
    if synced.modified_at is None and synced.etag is None:
        return "newer"
    if seen.etag is not None and seen.etag == synced.etag:
        return "same"
    if side == "dataverse":
        a, b = _dataverse_version(seen.etag), _dataverse_version(synced.etag)
        if a is not None and b is not None:
            return "newer" if a > b else "older" if a < b else "same"
    if seen.modified_at is not None and synced.modified_at is not None:
        if seen.modified_at < synced.modified_at:
            return "older"
        if seen.modified_at == synced.modified_at and seen.etag is None:
            return "same"
    return "newer"


@dataclass(frozen=True, slots=True)
class Coupling:
    mapping: str
    bc_id: str
    dv_id: str
    bc_key: str | None
    bc_stamp: Stamp
    dv_stamp: Stamp
    bc_deleted: bool = False
    dv_deleted: bool = False
    # Which way the last write between the two went: the other side's record
    # of that version is the echo of tablesync's own write.
    last_direction: Direction | None = None
    # The BC company the BC record belongs to: "" for the one company of a
    # deployment that names no list of companies.
    company: str = ""

    def id_on(self, side: Side) -> str:
        return self.bc_id if side == "bc" else self.dv_id

    def stamp_on(self, side: Side) -> Stamp:
        return self.bc_stamp if side == "bc" else self.dv_stamp

    def with_stamp(self, side: Side, stamp: Stamp) -> Coupling:
        return replace(self, bc_stamp=stamp) if side == "bc" else replace(self, dv_stamp=stamp)

    @staticmethod
    def between(
        mapping: str,
        ids: dict[Side, str],
        stamps: dict[Side, Stamp],
        bc_key: str | None,
        company: str = "",
    ) -> Coupling:
        return Coupling(
            mapping=mapping,
            bc_id=ids["bc"],
            dv_id=ids["dataverse"],
            bc_key=bc_key,
            bc_stamp=stamps["bc"],
            dv_stamp=stamps["dataverse"],
            company=company,
        )
