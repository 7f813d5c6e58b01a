"""Field values from one side to the other: transforms, lookups, and the diff
against what the destination holds now.

Mapped values are kept per field mapping rather than per raw name, because a
Dataverse lookup is read as ``_x_value`` but written as ``nav@odata.bind``:
the diff compares by field mapping and only the payload uses write names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from tablesync.core import catalog, options
from tablesync.core.events import Direction, FieldValue, Side
from tablesync.core.mappings import (
    FieldMapping,
    MappingSet,
    TableMapping,
    Transform,
    direction_of,
    source_side,
)
from tablesync.core.records import Ref, WriteValue
from tablesync.core.transformation import Rule, apply_rules

__all__ = [
    "LookupKey",
    "Mapped",
    "Unresolved",
    "changes",
    "echo_of_earlier_write",
    "holds_already",
    "identifies",
    "looks_sent",
    "lookup_keys",
    "map_values",
    "normalise_key",
    "not_written_back",
    "read_name",
    "same_value",
    "sent_values",
    "write_name",
    "written_image",
]


@dataclass(frozen=True, slots=True)
class LookupKey:
    """One lookup to resolve through ``target``'s couplings.

    ``side`` is the side the known value lives on: a BC natural key resolves
    to a Dataverse id, a Dataverse id to a BC natural key. Only couplings of
    ``company`` answer: two BC companies may both have a customer C00010."""

    target: str
    side: Side
    value: str
    company: str = ""


def normalise_key(side: Side, value: str) -> str:
    # BC codes compare trimmed and upper-cased; Dataverse ids are GUIDs.
    return value.strip().upper() if side == "bc" else value.strip().lower()


@dataclass(frozen=True, slots=True)
class Unresolved:
    """A lookup whose target is not coupled (yet), or a value with no option mapping."""

    field: FieldMapping
    value: FieldValue
    message: str
    retryable: bool


@dataclass(frozen=True, slots=True)
class Mapped:
    """The destination values of one record, per field mapping."""

    values: tuple[tuple[FieldMapping, WriteValue], ...]
    unresolved: tuple[Unresolved, ...] = ()


def read_name(f: FieldMapping, side: Side) -> str | None:
    """The name a field has in rows read from ``side``."""
    name = f.name(side)
    if name is not None and side == "dataverse" and f.lookup is not None:
        return f"_{name}_value"
    return name


def write_name(f: FieldMapping, side: Side, value: WriteValue) -> str | None:
    """The name a field is written as on ``side``; lookups bind through a navigation property."""
    name = f.name(side)
    if name is None or side == "bc" or f.lookup is None:
        return name
    if isinstance(value, Ref):
        nav = f.lookup.navigation_for(value.entity_set) or name
        return f"{nav}@odata.bind"
    return f"{f.lookup.navigation[0][1] if f.lookup.navigation else name}@odata.bind"


def lookup_keys(
    mapping: TableMapping, direction: Direction, fields: Mapping[str, FieldValue]
) -> set[LookupKey]:
    """Every coupling lookup needed to map ``fields`` in ``direction``."""
    side = source_side(direction)
    keys: set[LookupKey] = set()
    for f in mapping.fields_for(direction):
        if f.lookup is None or f.has_constant:
            continue
        name = read_name(f, side)
        raw = fields.get(name) if name else None
        if isinstance(raw, str) and raw.strip():
            keys.update(LookupKey(t, side, normalise_key(side, raw)) for t in f.lookup.mappings)
    return keys


def map_values(
    mapping: TableMapping,
    direction: Direction,
    fields: Mapping[str, FieldValue],
    resolved: Mapping[LookupKey, str],
    mappings: MappingSet,
    *,
    creating: bool,
) -> Mapped:
    """The destination values of a source record.

    ``resolved`` holds the lookups found in the targets' couplings: for a BC
    key the Dataverse id, for a Dataverse id the BC key."""
    side = source_side(direction)
    values: list[tuple[FieldMapping, WriteValue]] = []
    unresolved: list[Unresolved] = []
    for f in mapping.fields_for(direction):
        if f.on_create_only and not creating:
            continue
        if f.has_constant:
            values.append((f, f.constant))
            continue
        name = read_name(f, side)
        raw = fields.get(name) if name else None
        if f.lookup is not None:
            result = _map_lookup(f, side, raw, resolved, mappings, direction)
            if isinstance(result, Unresolved):
                unresolved.append(result)
            elif not (f.not_null and _is_empty(result)):
                values.append((f, result))
            continue
        converted = _transform(f, side, raw)
        if isinstance(converted, Unresolved):
            unresolved.append(converted)
        elif f.not_null and _is_empty(converted):
            # BC's Not Null: nothing to say, so nothing is written.
            continue
        elif converted is None and side == "dataverse" and f.bc is not None:
            values.append((f, _bc_blank(mapping.bc_table, f.bc, f.bc_type)))
        else:
            values.append((f, converted))
    return Mapped(tuple(values), tuple(unresolved))


def _bc_blank(entity_set: str, name: str, described: str | None = None) -> FieldValue:
    """What BC stores for "no value": it has no null text, number or flag. The type is
    the catalog's, else the one the metadata gave the mapping (``described``)."""
    try:
        edm: str | None = catalog.entity("bc", entity_set).fields[name].edm_type
    except KeyError:
        edm = described
    return _BC_BLANKS.get(edm) if edm is not None else None


_BC_BLANKS: dict[str, FieldValue] = {
    "Edm.String": "",
    "Edm.Decimal": 0,
    "Edm.Int32": 0,
    "Edm.Int64": 0,
    "Edm.Boolean": False,
    "Edm.Guid": str(catalog.EMPTY_GUID),
}


def _map_lookup(
    f: FieldMapping,
    side: Side,
    raw: FieldValue,
    resolved: Mapping[LookupKey, str],
    mappings: MappingSet,
    direction: Direction,
) -> WriteValue | Unresolved:
    assert f.lookup is not None
    empty: WriteValue = None if side == "bc" else ""
    if not (isinstance(raw, str) and raw.strip()):
        return empty
    key_value = normalise_key(side, raw)
    for target in f.lookup.mappings:
        found = resolved.get(LookupKey(target, side, key_value))
        if found is None:
            continue
        if side == "bc":
            return Ref(mappings.get(target).dataverse_table, found)
        return found
    if direction in _clear_directions(f):
        return empty
    targets = "/".join(f.lookup.mappings)
    where = "a Dataverse row" if side == "bc" else "a Business Central record"
    return Unresolved(
        f,
        raw,
        f"{f.name(side)} {raw} must be coupled to {where} ({targets})",
        retryable=True,
    )


def _clear_directions(f: FieldMapping) -> tuple[Direction, ...]:
    assert f.lookup is not None
    return f.lookup.clear_on_failure


def _transform(f: FieldMapping, side: Side, raw: FieldValue) -> FieldValue | Unresolved:
    t = f.transform
    value = apply_rules(t.rules_for(direction_of(side)), raw)
    if t.option_map:
        translated = options.translate(
            t.option_map,
            value,
            source=side,
            equal=lambda a, b: same_value(a, b, code=t.code),
        )
        if isinstance(translated, options.NoOption):
            return Unresolved(
                f, raw, f"{f.name(side)} value {raw!r} has no option mapping", retryable=False
            )
        value = translated
    if isinstance(value, str):
        value = _transform_text(value, t)
        if t.max_length is not None:
            value = value[: t.max_length]
    return value


def _is_empty(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip() == "")


def _as_number(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def same_value(a: object, b: object, *, code: bool = False) -> bool:
    """Whether two field values mean the same to the user.

    Blank text and null are the same (BC has no null text, Dataverse has no
    empty one); numbers compare by value whatever their JSON type; GUIDs and
    Code fields ignore case."""
    if isinstance(a, Ref) or isinstance(b, Ref):
        a = a.id if isinstance(a, Ref) else a
        b = b.id if isinstance(b, Ref) else b
    if _is_empty(a) and _is_empty(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (a == b and type(a) is type(b))
    if isinstance(a, str) and isinstance(b, str):
        if code or (_looks_like_guid(a) and _looks_like_guid(b)):
            return a.strip().upper() == b.strip().upper()
        return a == b
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None and not (isinstance(a, str) and isinstance(b, str)):
        return na == nb
    return a == b


def _looks_like_guid(text: str) -> bool:
    return len(text) == 36 and text.count("-") == 4


def changes(
    mapped: Mapped, destination_side: Side, current: Mapping[str, FieldValue] | None
) -> dict[str, WriteValue]:
    """The payload to write: every value for a create (``current`` None),
    only the differing ones for an update."""
    payload: dict[str, WriteValue] = {}
    for f, value in mapped.values:
        name = write_name(f, destination_side, value)
        if name is None:
            continue
        if current is not None:
            existing = current.get(read_name(f, destination_side) or "")
            # The destination is the source of the rules' own way: it holds
            # the value already when the rules make of it what it is sent.
            rules = f.transform.rules_for(direction_of(destination_side))
            if holds_already(existing, value, f.transform, rules=rules):
                continue
        payload[name] = value
    return payload


def holds_already(
    existing: object, value: object, transform: Transform, *, rules: Sequence[Rule] = ()
) -> bool:
    """Whether a destination value ``existing`` already says what the mapped
    ``value`` says: the same value, or a longer text whose first ``max_length``
    characters are it. The source can hold no more than ``max_length``: a
    value cut to fit on its way there must not come back and cut the longer
    original it was taken from.

    ``rules`` are the transformation rules of the other way, which the value
    came through from ``existing`` (a bidirectional field whose rules apply
    towards the source): ``existing`` holds it when the rules, and the cut to
    ``max_length``, make ``value`` of it. The value is then the rules' own
    work coming back, not a change; writing it would change the original,
    and a rule that is not idempotent would send it round for ever."""
    if same_value(existing, value, code=transform.code):
        return True
    if rules and isinstance(existing, FieldValue):
        made = apply_rules(rules, existing)
        if isinstance(made, str):
            made = _transform_text(made, transform)
            if transform.max_length is not None:
                made = made[: transform.max_length]
        if same_value(made, value, code=transform.code):
            return True
    limit = transform.max_length
    if limit is None or not (isinstance(existing, str) and isinstance(value, str)):
        return False
    # Longer than the limit as it is, or as it is sent: upper-casing can
    # lengthen a text ('ß' becomes 'SS').
    shaped = _transform_text(existing, transform)
    return max(len(existing), len(shaped)) > limit and same_value(
        shaped[:limit], value, code=transform.code
    )


def _transform_text(text: str, transform: Transform) -> str:
    if transform.trim:
        text = text.strip()
    if transform.code:
        text = text.strip().upper()
    return text


def sent_values(payload: Mapping[str, WriteValue]) -> dict[str, FieldValue]:
    """What an announced create keeps of its payload: the values a read of the
    new record returns under the same names (lookup binds are read back as
    other fields)."""
    return {name: value for name, value in payload.items() if not isinstance(value, Ref)}


def identifies(sent: Mapping[str, FieldValue]) -> bool:
    """Whether sent values can tell a record apart: some text that is not
    blank and not an empty GUID (numbers, flags and defaults are shared by many)."""
    return any(isinstance(v, str) and v.strip() and v.strip("0-{} ") != "" for v in sent.values())


def looks_sent(sent: Mapping[str, FieldValue], fields: Mapping[str, FieldValue]) -> bool:
    """Whether a record could be the one a create of ``sent`` made.

    Lenient on purpose: a blank sent value may have been filled in (a BC
    number series), and text may come back in another case or trimmed. Taking
    a user's identical record for tablesync's own only holds it back a moment;
    the opposite mistake creates a duplicate."""
    return all(
        _is_empty(value) or same_value(value, fields.get(name), code=True)
        for name, value in sent.items()
    )


def edited_since(
    sent: Mapping[str, FieldValue],
    fields: Mapping[str, FieldValue],
    written: Sequence[Mapping[str, FieldValue]] = (),
) -> frozenset[str]:
    """The fields of a record tablesync created with ``sent`` that hold
    another value now (``fields``) than the create or any of tablesync's
    later updates of it (``written``: their images) left: a user changed them."""

    def ours(name: str, value: FieldValue) -> bool:
        now = fields.get(name)
        return same_value(value, now, code=True) or any(
            name in image and same_value(image[name], now, code=True) for image in written
        )

    return frozenset(
        name for name, value in sent.items() if not _is_empty(value) and not ours(name, value)
    )


def written_image(
    mapping: TableMapping, side: Side, mapped: Mapped, current: Mapping[str, FieldValue]
) -> dict[str, FieldValue]:
    """What the record on ``side``, read as ``current`` now, holds in each of
    the mapping's fields once a write of ``mapped`` is made: the written
    values where the write sets them, its present values elsewhere."""
    image: dict[str, FieldValue] = {}
    for f in mapping.enabled_fields():
        name = read_name(f, side)
        if name is not None:
            image[name] = current.get(name)
    for f, value in mapped.values:
        name = read_name(f, side)
        if name is not None:
            image[name] = value.id if isinstance(value, Ref) else value
    return image


def not_written_back(
    mapped: Mapped,
    side: Side,
    fields: Mapping[str, FieldValue],
    images: Sequence[Mapping[str, FieldValue]],
) -> Mapped:
    """``mapped`` (a record of ``side`` read as ``fields``, mapped towards the
    other side) without the values whose field on ``side`` holds exactly what
    a write of tablesync's left there (``images``, from ``written_image``):
    such a value is tablesync's own, not a user's change, and syncing it back
    would overwrite a newer change made on the other side since."""
    if not images:
        return mapped

    def ours(f: FieldMapping) -> bool:
        name = read_name(f, side)
        if name is None:
            return False
        return any(
            name in image and same_value(fields.get(name), image[name], code=f.transform.code)
            for image in images
        )

    return Mapped(
        tuple((f, v) for f, v in mapped.values if not ours(f)),
        tuple(u for u in mapped.unresolved if not ours(u.field)),
    )


def echo_of_earlier_write(
    mapping: TableMapping,
    side: Side,
    fields: Mapping[str, FieldValue],
    images: Sequence[Mapping[str, FieldValue]],
) -> bool:
    """Whether a record of ``side`` read as ``fields`` is what an earlier one
    of tablesync's announced writes left on it, and not what the latest left
    (``images`` in the order the writes were announced, the latest last).

    Such a version is older than the latest write: that write's echo is still
    to come, and must still be known as tablesync's when it does, or it would
    be taken for a user's change and written over newer ones."""
    if len(images) < 2:
        return False

    def left_by(image: Mapping[str, FieldValue]) -> bool:
        names = [(f, read_name(f, side)) for f in mapping.enabled_fields()]
        return all(
            same_value(fields.get(name), image[name], code=f.transform.code)
            for f, name in names
            if name is not None and name in image
        )

    return not left_by(images[-1]) and any(left_by(image) for image in images[:-1])
