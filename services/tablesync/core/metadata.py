"""What the services say of their tables and fields, and how a mapping stands against it.

The descriptions come from each service's own metadata, read as Microsoft documents it:

- Business Central: the CSDL document ``GET <api root>/$metadata`` of one API route
  ("Business Central API (v2.0)", OData v4 CSDL XML). Entity sets are those of the
  container and the collection navigation properties ``company`` contains
  (``ContainsTarget="true"``); a property's type is its EDM type or, for an option
  field, an ``EnumType`` whose members are the option names encoded as .NET's
  ``XmlConvert`` does (``_x0020_`` is a space). CSDL says nothing of which fields a create
  requires; the key and what the ``Org.OData.Core.V1`` annotations mark computed or
  read-only count as read-only.
- Dataverse: ``EntityDefinitions`` with their ``Attributes`` ("Query table definitions
  using the Web API"; the ``EntityMetadata`` and ``AttributeMetadata`` entity types), the
  details of the derived types merged in by logical name: ``MaxLength`` of
  ``StringAttributeMetadata``/``MemoAttributeMetadata``, the ``OptionSet`` or
  ``GlobalOptionSet`` of ``PicklistAttributeMetadata`` (and State, Status), the
  ``Targets`` of ``LookupAttributeMetadata``.

``check_mapping`` holds a mapping against those descriptions. Nothing here does I/O.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tablesync.core.events import FieldValue, Side
from tablesync.core.mappings import TableMapping

__all__ = [
    "FieldInfo",
    "MetadataInvalid",
    "Option",
    "Problem",
    "TableInfo",
    "check_mapping",
    "decode_xml_name",
    "find_table",
    "parse_attribute",
    "parse_csdl",
    "parse_entity_definition",
    "parse_lookup_navigations",
    "with_navigations",
]

_EDMX = "{http://docs.oasis-open.org/odata/ns/edmx}"
_EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
_CORE = "Org.OData.Core.V1"
_REQUIRED_LEVELS = frozenset({"SystemRequired", "ApplicationRequired"})
_XML_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


class MetadataInvalid(ValueError):
    """A metadata document that is not what the documentation describes."""


@dataclass(frozen=True, slots=True)
class Option:
    """One choice of an option field: BC's enum member name, Dataverse's integer value."""

    value: int | str
    label: str


@dataclass(frozen=True, slots=True)
class FieldInfo:
    name: str
    type: str
    """BC: the EDM type (``Edm.String``) or ``Enum``; Dataverse: the attribute type
    (``String``, ``Picklist``, ``Lookup``)."""
    max_length: int | None = None
    creatable: bool = True
    updatable: bool = True
    required: bool = False
    key: bool = False
    custom: bool = False
    options: tuple[Option, ...] = ()
    targets: tuple[str, ...] = ()
    """The tables a Dataverse lookup refers to."""
    enum: str | None = None
    """The BC enum type or the Dataverse option set name."""
    navigation: str | None = None
    """A Dataverse lookup's single-valued navigation property (``<navigation>@odata.bind``),
    where the ``$metadata`` document was read."""

    @property
    def read_only(self) -> bool:
        return not (self.creatable or self.updatable)

    def allows(self, value: FieldValue) -> bool:
        """Whether ``value`` is one of the options (always, for a field without)."""
        if not self.options:
            return True
        text = str(value).lower() if isinstance(value, bool) else str(value)
        return any(str(o.value) == text for o in self.options)


@dataclass(frozen=True, slots=True)
class TableInfo:
    side: Side
    name: str
    """BC: the entity type (``customer``); Dataverse: the logical name (``account``)."""
    entity_set: str
    key: str | None
    fields: tuple[FieldInfo, ...]
    custom: bool = False
    primary_name: str | None = None
    route: str | None = None
    """BC: the API route the set is served on (``v2.0``, ``contoso/projects/v1.0``)."""
    detailed: bool = True
    """False when lengths, options and targets were not asked for (a listing)."""

    def field(self, name: str) -> FieldInfo | None:
        return next((f for f in self.fields if f.name == name), None)


def decode_xml_name(name: str) -> str:
    """An ``XmlConvert``-encoded name as text: ``Bank_x0020_Account`` → ``Bank Account``."""
    return _XML_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name)


# ---------------------------------------------------------------- BC: CSDL


def _qualified(schema: ET.Element, name: str) -> list[str]:
    names = [f"{schema.get('Namespace', '')}.{name}"]
    alias = schema.get("Alias")
    if alias:
        names.append(f"{alias}.{name}")
    return names


def _annotated_read_only(annotations: Iterable[ET.Element]) -> bool:
    for annotation in annotations:
        term = annotation.get("Term", "")
        if term.endswith(("Core.V1.Computed", "Core.Computed")) and annotation.get(
            "Bool", "true"
        ) in ("true", "True"):
            return True
        if term.endswith(("Core.V1.Permissions", "Core.Permissions")):
            member = annotation.get("EnumMember", "")
            if member.endswith("/Read") or member.endswith(".Read"):
                return True
    return False


def _max_length(text: str | None) -> int | None:
    if text is None or not text.isdigit():
        return None  # absent, or "max"
    return int(text)


def parse_csdl(document: str | bytes, *, route: str, custom: bool = False) -> list[TableInfo]:
    """The entity sets a BC ``$metadata`` document describes, served on ``route``."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise MetadataInvalid(f"$metadata of {route} is not XML: {exc}") from None
    if root.tag != f"{_EDMX}Edmx":
        raise MetadataInvalid(f"$metadata of {route} is not an edmx:Edmx document")
    schemas = root.findall(f"{_EDMX}DataServices/{_EDM}Schema")
    enums: dict[str, tuple[Option, ...]] = {}
    types: dict[str, ET.Element] = {}
    # Annotations given apart from the property: Target="Namespace.type/property".
    outside: dict[str, list[ET.Element]] = {}
    for schema in schemas:
        for enum in schema.findall(f"{_EDM}EnumType"):
            members = tuple(
                Option(decode_xml_name(m.get("Name", "")), decode_xml_name(m.get("Name", "")))
                for m in enum.findall(f"{_EDM}Member")
            )
            for name in _qualified(schema, enum.get("Name", "")):
                enums[name] = members
        for entity_type in schema.findall(f"{_EDM}EntityType"):
            for name in _qualified(schema, entity_type.get("Name", "")):
                types[name] = entity_type
        for group in schema.findall(f"{_EDM}Annotations"):
            outside.setdefault(group.get("Target", ""), []).extend(
                group.findall(f"{_EDM}Annotation")
            )
    sets: dict[str, str] = {}
    for schema in schemas:
        for container in schema.findall(f"{_EDM}EntityContainer"):
            for element in container.findall(f"{_EDM}EntitySet"):
                sets.setdefault(element.get("Name", ""), element.get("EntityType", ""))
    for type_name in list(sets.values()):
        parent = types.get(type_name)
        if parent is None:
            continue
        for navigation in parent.findall(f"{_EDM}NavigationProperty"):
            target = navigation.get("Type", "")
            if navigation.get("ContainsTarget") == "true" and target.startswith("Collection("):
                sets.setdefault(navigation.get("Name", ""), target[len("Collection(") : -1])
    tables = []
    for entity_set, type_name in sets.items():
        declared = types.get(type_name)
        if declared is None:
            raise MetadataInvalid(
                f"$metadata of {route}: entity set {entity_set} has the undeclared type {type_name}"
            )
        tables.append(_csdl_table(entity_set, type_name, declared, enums, outside, route, custom))
    return tables


def _csdl_table(
    entity_set: str,
    type_name: str,
    entity_type: ET.Element,
    enums: Mapping[str, tuple[Option, ...]],
    outside: Mapping[str, list[ET.Element]],
    route: str,
    custom: bool,
) -> TableInfo:
    keys = [ref.get("Name", "") for ref in entity_type.findall(f"{_EDM}Key/{_EDM}PropertyRef")]
    fields = []
    for prop in entity_type.findall(f"{_EDM}Property"):
        name = prop.get("Name", "")
        type_ = prop.get("Type", "")
        annotations = [*prop.findall(f"{_EDM}Annotation"), *outside.get(f"{type_name}/{name}", ())]
        read_only = name in keys or _annotated_read_only(annotations)
        options = enums.get(type_, ())
        fields.append(
            FieldInfo(
                name=name,
                type="Enum" if type_ in enums else type_,
                max_length=_max_length(prop.get("MaxLength")),
                creatable=not read_only,
                updatable=not read_only,
                key=name in keys,
                options=options,
                enum=type_ if type_ in enums else None,
            )
        )
    return TableInfo(
        side="bc",
        name=entity_type.get("Name", ""),
        entity_set=entity_set,
        key=keys[0] if len(keys) == 1 else None,
        fields=tuple(fields),
        custom=custom,
        route=route,
    )


# ---------------------------------------------------------------- Dataverse: JSON


def _label(value: Any) -> str:
    if isinstance(value, dict):
        localized = value.get("UserLocalizedLabel")
        if isinstance(localized, dict) and isinstance(localized.get("Label"), str):
            return str(localized["Label"])
    return ""


def _options(option_set: Any) -> tuple[Option, ...]:
    if not isinstance(option_set, dict):
        return ()
    found = []
    for option in option_set.get("Options") or ():
        if isinstance(option, dict) and isinstance(option.get("Value"), int):
            found.append(Option(int(option["Value"]), _label(option.get("Label"))))
    return tuple(found)


def _managed(value: Any) -> Any:
    # RequiredLevel and the like are BooleanManagedProperty / *ManagedProperty objects.
    return value.get("Value") if isinstance(value, dict) else value


def parse_attribute(attribute: Mapping[str, Any]) -> FieldInfo:
    """One ``AttributeMetadata`` (with its derived type's properties, where read)."""
    name = attribute.get("LogicalName")
    if not isinstance(name, str) or not name:
        raise MetadataInvalid(f"an attribute without LogicalName: {sorted(attribute)}")
    type_ = attribute.get("AttributeType")
    type_name = _managed(attribute.get("AttributeTypeName"))
    # AttributeType is "Virtual" for kinds it has no code for (multi-select choices):
    # AttributeTypeName tells them apart.
    if (not isinstance(type_, str) or type_ == "Virtual") and isinstance(type_name, str):
        type_ = type_name.removesuffix("Type")
    option_set = attribute.get("GlobalOptionSet") or attribute.get("OptionSet")
    max_length = attribute.get("MaxLength")
    targets = attribute.get("Targets")
    enum = option_set.get("Name") if isinstance(option_set, dict) else None
    return FieldInfo(
        name=name,
        type=type_ if isinstance(type_, str) else "",
        max_length=max_length if isinstance(max_length, int) else None,
        creatable=attribute.get("IsValidForCreate") is not False,
        updatable=attribute.get("IsValidForUpdate") is not False,
        required=_managed(attribute.get("RequiredLevel")) in _REQUIRED_LEVELS,
        key=attribute.get("IsPrimaryId") is True,
        custom=attribute.get("IsCustomAttribute") is True,
        options=_options(option_set),
        targets=tuple(t for t in targets if isinstance(t, str))
        if isinstance(targets, list)
        else (),
        enum=enum if isinstance(enum, str) else None,
    )


def parse_entity_definition(
    definition: Mapping[str, Any],
    attributes: Sequence[Mapping[str, Any]] | None = None,
    *,
    detailed: bool = True,
) -> TableInfo:
    """One ``EntityMetadata``; its attributes are ``attributes`` when given, else its
    expanded ``Attributes``."""
    logical = definition.get("LogicalName")
    entity_set = definition.get("EntitySetName")
    if not isinstance(logical, str) or not isinstance(entity_set, str):
        raise MetadataInvalid(
            f"a table definition without LogicalName or EntitySetName: {sorted(definition)}"
        )
    listed = attributes if attributes is not None else definition.get("Attributes") or ()
    primary_id = definition.get("PrimaryIdAttribute")
    primary_name = definition.get("PrimaryNameAttribute")
    fields = tuple(parse_attribute(a) for a in listed if isinstance(a, Mapping))
    if isinstance(primary_id, str):
        fields = tuple(replace(f, key=True) if f.name == primary_id else f for f in fields)
    return TableInfo(
        side="dataverse",
        name=logical,
        entity_set=entity_set,
        key=primary_id if isinstance(primary_id, str) else None,
        fields=fields,
        custom=definition.get("IsCustomEntity") is True,
        primary_name=primary_name if isinstance(primary_name, str) else None,
        detailed=detailed,
    )


def parse_lookup_navigations(document: str | bytes) -> dict[str, dict[str, str]]:
    """Dataverse's ``$metadata``: per entity type (the table's logical name), each lookup's
    single-valued navigation property by lookup attribute, from the navigation property's
    ``ReferentialConstraint`` on ``_<attribute>_value``. The name is the lookup's schema
    name, case kept (``new_AccountId``), and is what ``@odata.bind`` takes."""
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise MetadataInvalid(f"Dataverse $metadata is not XML: {exc}") from None
    found: dict[str, dict[str, str]] = {}
    for entity_type in root.iter(f"{_EDM}EntityType"):
        for navigation in entity_type.findall(f"{_EDM}NavigationProperty"):
            for constraint in navigation.findall(f"{_EDM}ReferentialConstraint"):
                prop = constraint.get("Property", "")
                if prop.startswith("_") and prop.endswith("_value"):
                    found.setdefault(entity_type.get("Name", ""), {})[prop[1:-6]] = navigation.get(
                        "Name", ""
                    )
    return found


def with_navigations(table: TableInfo, navigations: Mapping[str, Mapping[str, str]]) -> TableInfo:
    """``table`` with its lookups' navigation properties from ``parse_lookup_navigations``."""
    known = navigations.get(table.name, {})
    if table.side != "dataverse" or not known:
        return table
    fields = tuple(
        replace(f, navigation=known[f.name]) if f.name in known else f for f in table.fields
    )
    return replace(table, fields=fields)


def find_table(tables: Iterable[TableInfo], name: str) -> TableInfo | None:
    """The table whose entity set, or else whose name, is ``name``."""
    listed = list(tables)
    return next((t for t in listed if t.entity_set == name), None) or next(
        (t for t in listed if t.name == name), None
    )


# ---------------------------------------------------------------- the check


@dataclass(frozen=True, slots=True)
class Problem:
    """One way a mapping disagrees with a service's metadata."""

    mapping: str
    side: Side
    table: str
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"{self.table}.{self.field}" if self.field else self.table
        return f"{self.mapping}: {self.side} {where}: {self.message}"


_SIDES: tuple[Side, ...] = ("bc", "dataverse")


def check_mapping(
    mapping: TableMapping, bc_tables: Iterable[TableInfo], dv_tables: Iterable[TableInfo]
) -> list[Problem]:
    """What of ``mapping`` the services' metadata contradicts: tables and fields they do
    not have, a ``max_length`` above the destination column's, a write to a read-only
    column, option map pairs and constants outside a column's options."""
    tables: dict[Side, TableInfo | None] = {
        "bc": find_table(bc_tables, mapping.bc_table),
        "dataverse": find_table(dv_tables, mapping.dataverse_table),
    }
    problems: dict[Problem, None] = {}

    def problem(side: Side, name: str | None, message: str) -> None:
        problems.setdefault(Problem(mapping.name, side, mapping.table(side), name, message))

    def column(side: Side, name: str, what: str = "") -> FieldInfo | None:
        table = tables[side]
        if table is None:
            return None
        info = table.field(name)
        if info is None:
            problem(side, name, f"the service has no such field{what}")
        return info

    for side in _SIDES:
        if tables[side] is None:
            problem(side, None, "the service has no such table")
    if mapping.bc_key:
        column("bc", mapping.bc_key, " (bc_key)")
    for match in mapping.match:
        column("bc", match.bc, " (match)")
        column("dataverse", match.dataverse, " (match)")
    # A disabled field mapping writes nothing: what its columns allow is not its concern.
    for f in mapping.enabled_fields():
        infos: dict[Side, FieldInfo] = {}
        for side in _SIDES:
            name = f.name(side)
            info = column(side, name) if name is not None else None
            if info is not None:
                infos[side] = info
        for direction in mapping.directions():
            if f.direction not in ("bidirectional", direction):
                continue
            destination: Side = "dataverse" if direction == "to_integration" else "bc"
            source: Side = "bc" if destination == "dataverse" else "dataverse"
            target = infos.get(destination)
            if target is None or (f.name(source) is None and not f.has_constant):
                continue
            _check_write(problem, destination, target, on_create_only=f.on_create_only)
            limit = f.transform.max_length
            if limit is not None and target.max_length is not None and limit > target.max_length:
                problem(
                    destination,
                    target.name,
                    f"max_length {limit} is larger than the column's {target.max_length}",
                )
            if f.has_constant and not target.allows(f.constant):
                problem(
                    destination, target.name, f"constant {f.constant!r} is not one of its options"
                )
        for pair in f.transform.option_map:
            for side, value in zip(_SIDES, pair, strict=True):
                known = infos.get(side)
                if known is not None and not known.allows(value):
                    choices = ", ".join(repr(o.value) for o in known.options)
                    problem(
                        side,
                        known.name,
                        f"option_map value {value!r} is not one of its options ({choices})",
                    )
    return list(problems)


def _check_write(
    problem: Callable[[Side, str | None, str], None],
    side: Side,
    target: FieldInfo,
    *,
    on_create_only: bool,
) -> None:
    if target.read_only:
        problem(side, target.name, "the column is read-only, and the mapping writes it")
    elif on_create_only and not target.creatable:
        problem(side, target.name, "the column cannot be set on create, and the mapping does")
