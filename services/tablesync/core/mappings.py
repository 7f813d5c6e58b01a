"""Integration table mappings and their field mappings, as validated values.

A mapping pairs a BC entity set with a Dataverse table. Its direction, and
each field's, says which way values flow: ``to_integration`` is BC →
Dataverse, ``from_integration`` is Dataverse → BC. Nothing here does I/O:
``tablesync.core.mapping_load`` turns a plain document into these values and
refuses anything invalid with a message naming the mapping and field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from tablesync.core import filters
from tablesync.core.events import Direction, FieldValue, Side
from tablesync.core.transformation import Rule

__all__ = [
    "DELETION_POLICIES",
    "MAPPING_DIRECTIONS",
    "UPDATE_CONFLICT_POLICIES",
    "DeletionPolicy",
    "FieldMapping",
    "Lookup",
    "MappingDirection",
    "MappingSet",
    "MatchField",
    "TableMapping",
    "Transform",
    "UpdateConflictPolicy",
    "allows",
    "direction_of",
    "source_side",
]

MappingDirection: TypeAlias = Literal["to_integration", "from_integration", "bidirectional"]
UpdateConflictPolicy: TypeAlias = Literal["none", "get_from_integration", "send_to_integration"]
DeletionPolicy: TypeAlias = Literal["none", "remove_coupling", "restore", "delete"]

MAPPING_DIRECTIONS: tuple[MappingDirection, ...] = (
    "to_integration",
    "from_integration",
    "bidirectional",
)
UPDATE_CONFLICT_POLICIES: tuple[UpdateConflictPolicy, ...] = (
    "none",
    "get_from_integration",
    "send_to_integration",
)
DELETION_POLICIES: tuple[DeletionPolicy, ...] = ("none", "remove_coupling", "restore", "delete")


def direction_of(source: Side) -> Direction:
    """The direction of a change that starts on ``source``."""
    return "to_integration" if source == "bc" else "from_integration"


def source_side(direction: Direction) -> Side:
    return "bc" if direction == "to_integration" else "dataverse"


def allows(configured: MappingDirection, direction: Direction) -> bool:
    return configured in ("bidirectional", direction)


@dataclass(frozen=True, slots=True)
class Transform:
    """How a value changes on its way; every part is optional.

    ``option_map`` pairs BC values with Dataverse values; the reverse direction
    uses the inverse pairs. ``max_length`` truncates text written to the
    destination. ``code`` compares values the way BC compares Code fields:
    trimmed and upper-cased.

    ``rules`` are BC's transformation rules, applied in order to the source
    value before the rest, only on the way ``rules_direction`` (BC's
    Transformation Direction)."""

    option_map: tuple[tuple[FieldValue, FieldValue], ...] = ()
    max_length: int | None = None
    trim: bool = False
    code: bool = False
    rules: tuple[Rule, ...] = ()
    rules_direction: Direction | None = None

    def rules_for(self, direction: Direction) -> tuple[Rule, ...]:
        """The rules a value going ``direction`` passes through."""
        return self.rules if direction == self.rules_direction else ()


@dataclass(frozen=True, slots=True)
class Lookup:
    """A field that refers to a record of other mappings, resolved through their couplings.

    On the BC side the value is the target's natural key (``bc_key`` of the
    target mapping, e.g. a currency code); on the Dataverse side it is the id
    of the target row, read as ``_<attribute>_value`` and written through the
    navigation property as ``<navigation>@odata.bind``."""

    mappings: tuple[str, ...]
    # One navigation property per target entity set (polymorphic lookups
    # such as parentcustomerid bind through parentcustomerid_account).
    navigation: tuple[tuple[str, str], ...] = ()
    # BC's "Clear Value on Failed Sync", per direction: an unresolved value
    # is written blank instead of keeping the record pending.
    clear_on_failure: tuple[Direction, ...] = ()

    def navigation_for(self, entity_set: str) -> str | None:
        # The last pair of a target wins, as a dict of the pairs would have it.
        for target, navigation in reversed(self.navigation):
            if target == entity_set:
                return navigation
        return None


@dataclass(frozen=True, slots=True)
class FieldMapping:
    """One BC field and one Dataverse field, or a constant written to one side."""

    bc: str | None
    dataverse: str | None
    direction: MappingDirection = "bidirectional"
    constant: FieldValue = None
    has_constant: bool = False
    on_create_only: bool = False
    transform: Transform = field(default_factory=Transform)
    lookup: Lookup | None = None
    bc_type: str | None = None
    """The BC field's EDM type where the built-in catalog does not know the field (a
    custom page's): what BC stores for "no value" follows from it."""
    enabled: bool = True
    """BC's Status: a disabled field mapping is kept and shown, but no value is
    read, compared or written through it."""
    not_null: bool = False
    """BC's Not Null: a blank source value is not written (the destination keeps
    what it has, a create takes the destination's default), as for an owner,
    which Dataverse never has empty."""

    def name(self, side: Side) -> str | None:
        return self.bc if side == "bc" else self.dataverse

    def label(self) -> str:
        return f"{self.bc or '(constant)'}<->{self.dataverse or '(constant)'}"


@dataclass(frozen=True, slots=True)
class MatchField:
    """A pair of fields that must be equal for two uncoupled records to be the
    same. Fields of one ``priority`` are a group that must all be equal; the
    groups are tried from the lowest priority on, as BC's Match Priority."""

    bc: str
    dataverse: str
    case_sensitive: bool = False
    priority: int = 0


@dataclass(frozen=True, slots=True)
class TableMapping:
    name: str
    bc_table: str
    dataverse_table: str
    direction: MappingDirection
    fields: tuple[FieldMapping, ...]
    depends_on: tuple[str, ...] = ()
    sync_only_coupled: bool = True
    table_filter: filters.Expr | None = None
    integration_table_filter: filters.Expr | None = None
    bc_key: str | None = None
    match: tuple[MatchField, ...] = ()
    update_conflict: UpdateConflictPolicy = "none"
    deletion: DeletionPolicy = "none"

    def table(self, side: Side) -> str:
        return self.bc_table if side == "bc" else self.dataverse_table

    def filter(self, side: Side) -> filters.Expr | None:
        return self.table_filter if side == "bc" else self.integration_table_filter

    def allows(self, direction: Direction) -> bool:
        return allows(self.direction, direction)

    def directions(self) -> tuple[Direction, ...]:
        if self.direction == "bidirectional":
            return ("to_integration", "from_integration")
        return (self.direction,)

    def enabled_fields(self) -> tuple[FieldMapping, ...]:
        """The field mappings in use: every one but the disabled."""
        return tuple(f for f in self.fields if f.enabled)

    def fields_for(self, direction: Direction) -> tuple[FieldMapping, ...]:
        """The enabled field mappings that carry values in ``direction``."""
        # Asked for every record a batch maps: worked out once per mapping value.
        key = (id(self), direction)
        known = _FIELDS_FOR.get(key)
        if known is not None and known[0] is self:
            return known[1]
        found = tuple(
            f
            for f in self.fields
            if f.enabled
            and allows(f.direction, direction)
            and (f.name(source_side(direction)) is not None or f.has_constant)
            and _destination_name(f, direction) is not None
        )
        if len(_FIELDS_FOR) >= _FIELDS_FOR_MOST:
            _FIELDS_FOR.clear()
        # The mapping is kept beside its answer, so its id names no other while cached.
        _FIELDS_FOR[key] = (self, found)
        return found

    def lookups(self) -> tuple[FieldMapping, ...]:
        return tuple(f for f in self.fields if f.enabled and f.lookup is not None)


_FIELDS_FOR: dict[tuple[int, Direction], tuple[TableMapping, tuple[FieldMapping, ...]]] = {}
_FIELDS_FOR_MOST = 256


def _destination_name(f: FieldMapping, direction: Direction) -> str | None:
    return f.dataverse if direction == "to_integration" else f.bc


@dataclass(frozen=True, slots=True)
class MappingSet:
    """Every mapping, in dependency order."""

    mappings: tuple[TableMapping, ...]
    _by_name: dict[str, TableMapping] = field(
        init=False, repr=False, compare=False, hash=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self._by_name.update({m.name: m for m in self.mappings})

    def get(self, name: str) -> TableMapping:
        try:
            return self._by_name[name]
        except KeyError:
            known = ", ".join(self._by_name) or "none"
            raise KeyError(f"unknown mapping {name!r} (known: {known})") from None

    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.mappings)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def reading(self, side: Side, table: str) -> tuple[TableMapping, ...]:
        """The mappings whose ``side`` table is ``table``."""
        return tuple(m for m in self.mappings if m.table(side) == table)

    def tables(self, side: Side) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for m in self.mappings:
            seen.setdefault(m.table(side), None)
        return tuple(seen)
