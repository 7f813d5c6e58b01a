"""What capture publishes: the rules, apart from reading and publishing.

- De-duplication: a poll re-reads a window behind its checkpoint (a look-back, so a row
  committed after a later one was read, with an older stamp, is still seen); a row whose
  version was published already is not published again. ``unpublished`` picks the rows
  to publish, ``remember`` notes what was, ``forget_before`` drops what no poll re-reads.
- Reconcile: a full read of every row's version, compared with the versions capture
  read (``missed``): a row whose version it never read and whose stamp is older than
  what the polls still re-read was committed too late for them.
- Echoes: a row whose version a mapping's coupling records already (or a later one) is
  tablesync's own write read back, which apply would find unchanged; ``synced_already``
  picks those of one mapping. Capture publishes a row unless every mapping reading its
  table has it so: a mapping that has not coupled it may need it.
- Deletions found by a scan (coupled records missing from a listing of every id):
  ``vanished`` are the candidates; ``overreach`` says which mappings would lose more than
  their share of couplings (and more than a few records), and then the scan stops
  instead of publishing; otherwise
  ``confirmed`` keeps the ids a direct read did not find either. ``scan_pause`` spaces
  the scans so that listing every id of large tables stays a small share of the side's
  request budget (BC has no other way to learn of a deletion).

Versions are ETags (the stamp's text where a side gives none).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tablesync.core.couplings import Stamp, compare_stamps
from tablesync.core.events import Side
from tablesync.core.records import Row

__all__ = [
    "Overreach",
    "Seen",
    "confirmed",
    "forget_before",
    "missed",
    "overreach",
    "remember",
    "scan_pause",
    "synced_already",
    "unpublished",
    "vanished",
    "version_of",
    "within_share",
]


@dataclass(frozen=True, slots=True)
class Seen:
    """The version of a row capture published, and its stamp."""

    version: str
    stamp: datetime


def version_of(row: Row) -> str:
    return row.etag or row.modified_at.isoformat()


def unpublished(rows: Iterable[Row], recent: Mapping[str, Seen]) -> list[Row]:
    """The rows, in their order, whose version is not the one published last for their
    id; a version read twice in one pass (a row that moved behind the cursor) once."""
    picked: list[Row] = []
    taken: set[tuple[str, str]] = set()
    for row in rows:
        version = version_of(row)
        seen = recent.get(row.id)
        if (seen is not None and seen.version == version) or (row.id, version) in taken:
            continue
        taken.add((row.id, version))
        picked.append(row)
    return picked


def remember(recent: Mapping[str, Seen], rows: Iterable[Row]) -> dict[str, Seen]:
    """``recent`` with the versions of ``rows`` (published, in order) as the last ones."""
    updated = dict(recent)
    for row in rows:
        updated[row.id] = Seen(version_of(row), row.modified_at)
    return updated


def synced_already(side: Side, rows: Iterable[Row], synced: Mapping[str, Stamp]) -> list[Row]:
    """The rows, in their order, whose version is the one ``synced`` (the stamps one
    mapping's couplings keep on ``side``, by id) records, or an older one: the events
    apply's triage would count unchanged. An uncoupled row is never one."""
    picked = []
    for row in rows:
        stamp = synced.get(row.id)
        if stamp is not None and (
            compare_stamps(side, Stamp(row.modified_at, row.etag), stamp) != "newer"
        ):
            picked.append(row)
    return picked


def forget_before(recent: Mapping[str, Seen], floor: datetime) -> dict[str, Seen]:
    """What a poll reading from ``floor`` on can still meet again."""
    return {rid: seen for rid, seen in recent.items() if seen.stamp >= floor}


def missed(rows: Iterable[Row], known: Mapping[str, str], horizon: datetime) -> list[str]:
    """Ids of rows whose version is not the one capture knows, stamped before
    ``horizon`` (the oldest stamp the polls still re-read): committed too late for
    them. Newer rows are left to the polls."""
    return [
        row.id for row in rows if row.modified_at < horizon and known.get(row.id) != version_of(row)
    ]


def vanished(
    coupled: Collection[str], present: Collection[str], published: Collection[str]
) -> set[str]:
    """Coupled ids a listing of every id did not return, less those whose deletion was
    published already: candidates, not yet deletions."""
    return {rid for rid in coupled if rid not in present and rid not in published}


def within_share(gone: int, coupled: int, max_share: float, at_least: int) -> bool:
    """Whether removing ``gone`` of ``coupled`` couplings stays within ``max_share``, or
    within ``at_least`` records: a small table's users may delete a few of its records
    between two scans without that looking like a listing cut short."""
    return gone <= at_least or gone <= round(max_share * coupled, 9)


@dataclass(frozen=True, slots=True)
class Overreach:
    """A scan would remove more than its share of one mapping's couplings."""

    mapping: str
    vanished: int
    coupled: int


def overreach(
    coupled_by_mapping: Mapping[str, Collection[str]],
    gone: Collection[str],
    max_share: float,
    at_least: int,
) -> list[Overreach]:
    """The mappings, by name, of which ``gone`` takes more than ``max_share`` of the
    couplings (and more than ``at_least``): a listing cut short (a permission, a wrong
    company, a fault) rather than users deleting that much between two scans."""
    found = []
    for name in sorted(coupled_by_mapping):
        coupled = coupled_by_mapping[name]
        lost = sum(1 for rid in gone if rid in coupled)
        if not within_share(lost, len(coupled), max_share, at_least):
            found.append(Overreach(name, lost, len(coupled)))
    return found


def confirmed(candidates: Iterable[str], found: Collection[str]) -> list[str]:
    """Of ids missing from a listing, in order, those a direct read did not find either."""
    return sorted(rid for rid in set(candidates) if rid not in found)


def scan_pause(requests: int, interval_s: float, requests_per_min: float) -> float:
    """Seconds between two rounds of deletion scans of one side: ``interval_s``,
    or longer when the last round's ``requests`` would otherwise average more
    than ``requests_per_min``."""
    if requests_per_min <= 0:
        return interval_s
    return max(interval_s, requests * 60.0 / requests_per_min)
