"""Dataverse's definitions over the Web API: ``$metadata``, ``EntityDefinitions`` and
``GlobalOptionSetDefinitions``, read-only ("Query table definitions using the Web API",
"Query schema definitions", the ``EntityMetadata``, ``AttributeMetadata`` and
``PicklistAttributeMetadata`` entity types).

Routes (relative to ``/api/data/v9.2``)::

    GET $metadata                                   CSDL of the tables and the definitions
    GET EntityDefinitions                           $select, $filter, $expand=Attributes(…)
    GET EntityDefinitions(LogicalName='account')    or EntityDefinitions(<MetadataId>)
    GET EntityDefinitions(…)/Attributes             $select, $filter
    GET EntityDefinitions(…)/Attributes(LogicalName='name')   or Attributes(<MetadataId>)
    GET EntityDefinitions(…)/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata
                                                    the attributes of one type: $select,
                                                    $filter, $expand=OptionSet,GlobalOptionSet
    GET EntityDefinitions(…)/Attributes(…)/Microsoft.Dynamics.CRM.<type>
    GET GlobalOptionSetDefinitions                  and GlobalOptionSetDefinitions(Name='…')

Definitions are read-only here: the emulator's tables come from the catalog and its
customization file, not from metadata writes. An unknown table is 404 ``0x80041102``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from uuid import UUID

from tablesync.core.filters import Expr, evaluate, parse, properties
from tablesync.emulators.common.csdl import Csdl, property_element
from tablesync.emulators.common.messages import ApiRequest, ApiResponse
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.runtime import Tuning
from tablesync.emulators.common.sql import TableSpec
from tablesync.emulators.dataverse.definitions import (
    Attribute,
    Definitions,
    OptionSet,
    Table,
)
from tablesync.errors import FilterSyntaxError

__all__ = [
    "METADATA_SETS",
    "attribute_json",
    "entity_json",
    "first_segment",
    "handle",
    "metadata_document",
    "option_set_json",
]

NS = "Microsoft.Dynamics.CRM"
METADATA_SETS = frozenset({"EntityDefinitions", "GlobalOptionSetDefinitions", "$metadata"})
_LANGUAGE = 1033
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_KEY_RE = re.compile(rf"(?:(?P<id>{_GUID})|(?P<name>\w+)='(?P<value>[^']*)')")
_SEGMENT_RE = re.compile(r"(?P<name>[A-Za-z.]+)(?:\((?P<key>[^)]*)\))?")
# An enum literal (Microsoft.Dynamics.CRM.AttributeTypeCode'Picklist'): its member's name.
_ENUM_LITERAL = re.compile(r"\bMicrosoft\.Dynamics\.CRM\.\w+'(\w+)'")
_QUERY_OPTIONS = frozenset({"$select", "$filter", "$expand"})
_OPTION_SET_TYPES = frozenset(
    {
        "PicklistAttributeMetadata",
        "StateAttributeMetadata",
        "StatusAttributeMetadata",
        "BooleanAttributeMetadata",
        "MultiSelectPicklistAttributeMetadata",
    }
)
_ATTRIBUTE_TYPES = (
    "StringAttributeMetadata",
    "MemoAttributeMetadata",
    "IntegerAttributeMetadata",
    "BigIntAttributeMetadata",
    "DecimalAttributeMetadata",
    "MoneyAttributeMetadata",
    "BooleanAttributeMetadata",
    "DateTimeAttributeMetadata",
    "UniqueIdentifierAttributeMetadata",
    "PicklistAttributeMetadata",
    "StateAttributeMetadata",
    "StatusAttributeMetadata",
    "LookupAttributeMetadata",
)
_ENUM_TYPE = "EnumAttributeMetadata"
"""The base type of the choice types: a cast to it finds all of them."""


# ---------------------------------------------------------------- JSON shapes


def _label(text: str, owner: UUID | None = None) -> dict[str, object]:
    if not text:
        return {"LocalizedLabels": [], "UserLocalizedLabel": None}
    localized = {
        "Label": text,
        "LanguageCode": _LANGUAGE,
        "IsManaged": False,
        "MetadataId": str(owner) if owner else None,
        "HasChanged": None,
    }
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": dict(localized)}


def _option(value: int, text: str, option_set: OptionSet) -> dict[str, object]:
    option: dict[str, object] = {
        "Value": value,
        "Color": None,
        "IsManaged": False,
        "ExternalValue": None,
        "ParentValues": [],
        "Tag": None,
        "IsHidden": False,
        "MetadataId": None,
        "HasChanged": None,
        "Label": _label(text),
        "Description": _label(""),
    }
    if option_set.option_set_type == "State":
        option["DefaultStatus"] = value + 1
        option["InvariantName"] = text
    if option_set.option_set_type == "Status":
        option["State"] = value - 1
    return option


def option_set_json(option_set: OptionSet) -> dict[str, object]:
    return {
        "MetadataId": str(option_set.metadata_id),
        "HasChanged": None,
        "IsCustomOptionSet": option_set.is_global,
        "IsGlobal": option_set.is_global,
        "IsManaged": False,
        "Name": option_set.name,
        "ExternalTypeName": None,
        "OptionSetType": option_set.option_set_type,
        "IntroducedVersion": "1.0",
        "Description": _label(""),
        "DisplayName": _label(option_set.display_name),
        "Options": [_option(v, t, option_set) for v, t in option_set.options],
    }


def _boolean_option_set(attribute: Attribute) -> dict[str, object]:
    name = f"{attribute.entity_logical_name}_{attribute.logical_name}"
    boolean = OptionSet(name, (), "Boolean")
    return {
        "MetadataId": str(boolean.metadata_id),
        "HasChanged": None,
        "IsCustomOptionSet": attribute.is_custom,
        "IsGlobal": False,
        "IsManaged": False,
        "Name": name,
        "OptionSetType": "Boolean",
        "Description": _label(""),
        "DisplayName": _label(attribute.display_name),
        "TrueOption": _option(1, "Yes", boolean),
        "FalseOption": _option(0, "No", boolean),
    }


def attribute_json(attribute: Attribute) -> dict[str, object]:
    field = attribute.field
    body: dict[str, object] = {
        "@odata.type": f"#{NS}.{attribute.metadata_type}",
        "MetadataId": str(attribute.metadata_id),
        "HasChanged": None,
        "AttributeOf": None,
        "AttributeType": attribute.attribute_type,
        "AttributeTypeName": {"Value": attribute.type_name},
        "ColumnNumber": attribute.column_number,
        "EntityLogicalName": attribute.entity_logical_name,
        "LogicalName": attribute.logical_name,
        "SchemaName": attribute.schema_name,
        "IntroducedVersion": "1.0",
        "IsCustomAttribute": attribute.is_custom,
        "IsManaged": not attribute.is_custom,
        "IsPrimaryId": attribute.is_primary_id,
        "IsPrimaryName": attribute.is_primary_name,
        "IsLogical": False,
        "IsValidForCreate": attribute.valid_for_create,
        "IsValidForUpdate": attribute.valid_for_update,
        "IsValidForRead": True,
        "IsFilterable": True,
        "IsSearchable": True,
        "RequiredLevel": {
            "Value": attribute.required_level,
            "CanBeChanged": attribute.required_level != "SystemRequired",
            "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
        },
        "DisplayName": _label(attribute.display_name, attribute.metadata_id),
        "Description": _label(""),
    }
    kind = attribute.metadata_type
    if kind in ("StringAttributeMetadata", "MemoAttributeMetadata") and field is not None:
        text_format = "Text" if kind == "StringAttributeMetadata" else "TextArea"
        body["MaxLength"] = field.max_length
        body["DatabaseLength"] = (field.max_length or 0) * 2
        body["Format"] = text_format
        body["FormatName"] = {"Value": text_format}
    elif kind == "IntegerAttributeMetadata":
        body.update({"Format": "None", "MinValue": -2_147_483_648, "MaxValue": 2_147_483_647})
    elif kind == "BigIntAttributeMetadata":
        body.update({"MinValue": -(2**63), "MaxValue": 2**63 - 1})
    elif kind == "DecimalAttributeMetadata":
        body.update({"Precision": 2, "MinValue": -100_000_000_000, "MaxValue": 100_000_000_000})
    elif kind == "MoneyAttributeMetadata":
        body.update(
            {
                "Precision": 2,
                "PrecisionSource": 2,
                "MinValue": -922_337_203_685_477,
                "MaxValue": 922_337_203_685_477,
            }
        )
    elif kind == "DateTimeAttributeMetadata":
        body.update({"Format": "DateAndTime", "DateTimeBehavior": {"Value": "UserLocal"}})
    elif kind == "LookupAttributeMetadata" and attribute.lookup is not None:
        body["Targets"] = [t.logical_name for t in attribute.lookup.targets]
        body["Format"] = "None"
    elif kind in ("PicklistAttributeMetadata", "StateAttributeMetadata", "StatusAttributeMetadata"):
        default = attribute.field.default if attribute.field is not None else None
        body["DefaultFormValue"] = default if isinstance(default, int) else -1
    elif kind == "BooleanAttributeMetadata":
        default = attribute.field.default if attribute.field is not None else None
        body["DefaultValue"] = bool(default)
    return body


def entity_json(table: Table, tuning: Tuning) -> dict[str, object]:
    entity = table.spec.entity
    return {
        "MetadataId": str(table.metadata_id),
        "HasChanged": None,
        "LogicalName": entity.logical_name,
        "SchemaName": table.schema_name,
        "EntitySetName": entity.entity_set,
        "LogicalCollectionName": entity.entity_set,
        "CollectionSchemaName": table.schema_name + "s",
        "PrimaryIdAttribute": entity.key,
        "PrimaryNameAttribute": table.primary_name,
        "ObjectTypeCode": table.object_type_code,
        "IsCustomEntity": table.is_custom,
        "IsManaged": not table.is_custom,
        "IsActivity": False,
        "IsIntersect": False,
        "IsValidForAdvancedFind": True,
        "TableType": "Standard",
        "OwnershipType": table.ownership,
        "ChangeTrackingEnabled": entity.entity_set not in tuning.untracked,
        "IntroducedVersion": "1.0",
        "DisplayName": _label(table.display_name, table.metadata_id),
        "DisplayCollectionName": _label(table.display_collection_name, table.metadata_id),
        "Description": _label(""),
    }


# ---------------------------------------------------------------- query options


@dataclass(frozen=True, slots=True)
class _Options:
    select: tuple[str, ...] | None
    filter: Expr | None
    expand: Mapping[str, _Options]


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside parentheses and quotes, each part trimmed."""
    return [p.strip() for p in _split_outside(text, separator)]


def _split_outside(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` outside parentheses and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _options(query: Mapping[str, str], type_name: str) -> _Options:
    for name in query:
        if name.startswith("$") and name not in _QUERY_OPTIONS:
            raise ApiProblem(
                Kind.BAD_QUERY,
                f"The query parameter '{name}' is not supported on definitions of {type_name}; "
                "use $select, $filter and $expand.",
            )
    select = None
    if "$select" in query:
        select = tuple(_split(query["$select"], ","))
        if not all(select):
            raise ApiProblem(Kind.BAD_QUERY, f"Syntax error in $select '{query['$select']}'.")
    expr = None
    if "$filter" in query:
        text = query["$filter"]
        try:
            expr = parse(_ENUM_LITERAL.sub(r"'\1'", text))
        except FilterSyntaxError as exc:
            raise ApiProblem(
                Kind.BAD_QUERY,
                f"Syntax error in $filter at position {exc.position} in '{text}': {exc.reason}.",
            ) from None
    expand: dict[str, _Options] = {}
    if query.get("$expand"):
        for item in _split(query["$expand"], ","):
            match = re.fullmatch(r"(\w+)(?:\((.*)\))?", item, re.DOTALL)
            if match is None:
                raise ApiProblem(Kind.BAD_QUERY, f"Syntax error in $expand near '{item}'.")
            inner: dict[str, str] = {}
            for part in _split(match[2] or "", ";"):
                if not part:
                    continue
                name, equals, value = part.partition("=")
                if not equals:
                    raise ApiProblem(Kind.BAD_QUERY, f"Syntax error in $expand near '{part}'.")
                inner[name.strip()] = value.strip()
            expand[match[1]] = _options(inner, match[1])
    return _Options(select, expr, expand)


def _unknown(name: str, type_name: str) -> ApiProblem:
    return ApiProblem(
        Kind.UNKNOWN_PROPERTY,
        f"Could not find a property named '{name}' on type '{NS}.{type_name}'.",
    )


def _shape(
    body: dict[str, object], options: _Options, type_name: str, always: Sequence[str]
) -> dict[str, object]:
    if options.select is None:
        return body
    for name in options.select:
        if name not in body:
            raise _unknown(name, type_name)
    keep = {*always, *options.select}
    return {k: v for k, v in body.items() if k in keep}


def _matches(body: Mapping[str, object], options: _Options, type_name: str) -> bool:
    if options.filter is None:
        return True
    for name in properties(options.filter):
        if name not in body:
            raise _unknown(name, type_name)
    return evaluate(options.filter, body)


# ---------------------------------------------------------------- routing


def _key(text: str, what: str, names: Sequence[str]) -> tuple[str, str]:
    """A definition's key: ``("MetadataId", guid)`` or ``(name, value)`` of an allowed name."""
    match = _KEY_RE.fullmatch(text.strip())
    if match is None or (match["name"] is not None and match["name"] not in names):
        raise ApiProblem(
            Kind.BAD_QUERY,
            f"Bad key '{text}' for {what}: use the MetadataId or "
            + " or ".join(f"{n}='<value>'" for n in names)
            + ".",
        )
    if match["id"] is not None:
        return "MetadataId", match["id"].lower()
    return match["name"], match["value"]


def _entity_not_found(name: str) -> ApiProblem:
    return ApiProblem(
        Kind.NO_METADATA,
        f"The entity with a name = '{name}' with namemapping = 'Logical' was not found in the "
        "MetadataCache.",
    )


def _find_table(definitions: Definitions, key_text: str) -> Table:
    name, value = _key(key_text, "EntityDefinitions", ("LogicalName",))
    if name == "MetadataId":
        table = definitions.table_by_id(UUID(value))
        if table is None:
            raise ApiProblem(
                Kind.NO_METADATA, f"Could not find an entity with MetadataId = {value}."
            )
        return table
    table = definitions.table(value)
    if table is None:
        raise _entity_not_found(value)
    return table


def _find_attribute(table: Table, key_text: str) -> Attribute:
    name, value = _key(key_text, "Attributes", ("LogicalName",))
    found = (
        next((a for a in table.attributes if str(a.metadata_id) == value), None)
        if name == "MetadataId"
        else table.attribute(value)
    )
    if found is None:
        raise ApiProblem(
            Kind.NO_METADATA,
            f"Could not find an attribute with {name} = '{value}' on entity "
            f"'{table.logical_name}'.",
        )
    return found


def _cast(segment: str) -> str:
    """The attribute type a ``Microsoft.Dynamics.CRM.<type>`` segment casts to."""
    kind = segment.removeprefix(f"{NS}.")
    if segment == kind or (kind not in _ATTRIBUTE_TYPES and kind != _ENUM_TYPE):
        raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{segment}'.")
    return kind


def _of_type(attribute: Attribute, kind: str | None) -> bool:
    if kind is None:
        return True
    if kind == _ENUM_TYPE:
        return attribute.option_set is not None
    return attribute.metadata_type == kind


@dataclass(frozen=True, slots=True)
class _Context:
    request: ApiRequest
    definitions: Definitions
    tuning: Tuning

    def url(self, fragment: str) -> str:
        return f"{self.request.service_root}/$metadata#{fragment}"


def _attribute_body(attribute: Attribute, options: _Options, type_name: str) -> dict[str, object]:
    body = attribute_json(attribute)
    for name in options.expand:
        if name == "OptionSet" and type_name in _OPTION_SET_TYPES:
            if attribute.metadata_type == "BooleanAttributeMetadata":
                body["OptionSet"] = _boolean_option_set(attribute)
            else:
                option_set = attribute.option_set
                body["OptionSet"] = option_set_json(option_set) if option_set else None
        elif name == "GlobalOptionSet" and type_name in _OPTION_SET_TYPES:
            option_set = attribute.option_set
            global_set = option_set if option_set is not None and option_set.is_global else None
            body["GlobalOptionSet"] = option_set_json(global_set) if global_set else None
        else:
            raise _unknown(name, type_name)
    always = ("@odata.type", "MetadataId", *options.expand)
    return _shape(body, options, type_name, always)


def _attributes(table: Table, options: _Options, kind: str | None) -> list[dict[str, object]]:
    type_name = kind or "AttributeMetadata"
    chosen = []
    for attribute in table.attributes:
        if not _of_type(attribute, kind):
            continue
        if _matches(attribute_json(attribute), options, type_name):
            chosen.append(_attribute_body(attribute, options, type_name))
    return chosen


def _entity_body(context: _Context, table: Table, options: _Options) -> dict[str, object]:
    body = entity_json(table, context.tuning)
    for name, inner in options.expand.items():
        if name != "Attributes":
            raise _unknown(name, "EntityMetadata")
        body["Attributes"] = _attributes(table, inner, None)
    return _shape(body, options, "EntityMetadata", ("MetadataId", *options.expand))


def _select_suffix(query: Mapping[str, str]) -> str:
    return f"({query['$select']})" if "$select" in query else ""


def _entity_definitions(context: _Context, rest: list[str]) -> ApiResponse:
    request = context.request
    head = _SEGMENT_RE.fullmatch(rest[0])
    assert head is not None
    if head["key"] is None:
        if len(rest) > 1:
            raise ApiProblem(Kind.BAD_QUERY, "EntityDefinitions needs a key before its members.")
        options = _options(request.query, "EntityMetadata")
        value = [
            _entity_body(context, t, options)
            for t in context.definitions.tables
            if _matches(entity_json(t, context.tuning), options, "EntityMetadata")
        ]
        context_url = context.url("EntityDefinitions" + _select_suffix(request.query))
        return ApiResponse.json(200, {"@odata.context": context_url, "value": value})
    table = _find_table(context.definitions, head["key"])
    if len(rest) == 1:
        options = _options(request.query, "EntityMetadata")
        body = {
            "@odata.context": context.url(
                f"EntityDefinitions{_select_suffix(request.query)}/$entity"
            ),
            **_entity_body(context, table, options),
        }
        return ApiResponse.json(200, body)
    member = _SEGMENT_RE.fullmatch(rest[1])
    if member is None or member["name"] != "Attributes":
        raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{rest[1]}'.")
    if len(rest) > 3:
        raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{rest[3]}'.")
    kind = _cast(rest[2]) if len(rest) == 3 else None
    type_name = kind or "AttributeMetadata"
    options = _options(request.query, type_name)
    base = f"EntityDefinitions({table.metadata_id})/Attributes"
    if member["key"] is None:
        fragment = base + (f"/{NS}.{kind}" if kind else "") + _select_suffix(request.query)
        value = _attributes(table, options, kind)
        return ApiResponse.json(200, {"@odata.context": context.url(fragment), "value": value})
    attribute = _find_attribute(table, member["key"])
    if not _of_type(attribute, kind):
        raise ApiProblem(
            Kind.NO_RESOURCE,
            f"The attribute '{attribute.logical_name}' is a {attribute.metadata_type}, "
            f"not a {kind}.",
        )
    fragment = base + (f"/{NS}.{kind}" if kind else "") + "/$entity"
    body = {
        "@odata.context": context.url(fragment),
        **_attribute_body(attribute, options, type_name),
    }
    return ApiResponse.json(200, body)


def _option_set_body(option_set: OptionSet, options: _Options) -> dict[str, object]:
    body: dict[str, object] = {
        "@odata.type": f"#{NS}.OptionSetMetadata",
        **option_set_json(option_set),
    }
    if options.expand:
        raise _unknown(next(iter(options.expand)), "OptionSetMetadataBase")
    return _shape(body, options, "OptionSetMetadataBase", ("@odata.type", "MetadataId"))


def _global_option_sets(context: _Context, rest: list[str]) -> ApiResponse:
    request = context.request
    head = _SEGMENT_RE.fullmatch(rest[0])
    assert head is not None
    if len(rest) > 1:
        raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{rest[1]}'.")
    options = _options(request.query, "OptionSetMetadataBase")
    sets = context.definitions.option_sets
    if head["key"] is None:
        value = [
            _option_set_body(o, options)
            for o in sets
            if _matches(option_set_json(o), options, "OptionSetMetadataBase")
        ]
        fragment = "GlobalOptionSetDefinitions" + _select_suffix(request.query)
        return ApiResponse.json(200, {"@odata.context": context.url(fragment), "value": value})
    name, value_text = _key(head["key"], "GlobalOptionSetDefinitions", ("Name",))
    found = next(
        (
            o
            for o in sets
            if (str(o.metadata_id) == value_text if name == "MetadataId" else o.name == value_text)
        ),
        None,
    )
    if found is None:
        raise ApiProblem(
            Kind.NO_METADATA, f"Could not find an option set with {name} = '{value_text}'."
        )
    body = {
        "@odata.context": context.url("GlobalOptionSetDefinitions/$entity"),
        **_option_set_body(found, options),
    }
    return ApiResponse.json(200, body)


def handle(
    request: ApiRequest,
    definitions: Definitions,
    tuning: Tuning,
    document: Callable[[], ApiResponse],
) -> ApiResponse:
    """A request for a definition (its first segment is in ``METADATA_SETS``)."""
    if request.method != "GET":
        raise ApiProblem(
            Kind.NOT_SUPPORTED,
            f"'{request.method}' on definitions is not supported by this emulator: its tables "
            "and columns are the catalog's and those of its customization file.",
        )
    path = request.path.rstrip("/")
    if path == "$metadata":
        return document()
    rest = _split_path(path)
    context = _Context(request, definitions, tuning)
    head = _SEGMENT_RE.fullmatch(rest[0])
    if head is None:
        raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{rest[0]}'.")
    if head["name"] == "EntityDefinitions":
        return _entity_definitions(context, rest)
    return _global_option_sets(context, rest)


def _split_path(path: str) -> list[str]:
    """Path segments; a slash inside a key's quotes does not split."""
    return _split_outside(path, "/")


def first_segment(path: str) -> str:
    return path.split("/", 1)[0].split("(", 1)[0]


# ---------------------------------------------------------------- $metadata


_ENTITY_METADATA_PROPERTIES = (
    ("LogicalName", "Edm.String"),
    ("SchemaName", "Edm.String"),
    ("EntitySetName", "Edm.String"),
    ("PrimaryIdAttribute", "Edm.String"),
    ("PrimaryNameAttribute", "Edm.String"),
    ("ObjectTypeCode", "Edm.Int32"),
    ("IsCustomEntity", "Edm.Boolean"),
    ("ChangeTrackingEnabled", "Edm.Boolean"),
)
_ATTRIBUTE_METADATA_PROPERTIES = (
    ("LogicalName", "Edm.String"),
    ("SchemaName", "Edm.String"),
    ("EntityLogicalName", "Edm.String"),
    ("AttributeType", "Edm.String"),
    ("IsCustomAttribute", "Edm.Boolean"),
    ("IsPrimaryId", "Edm.Boolean"),
    ("IsPrimaryName", "Edm.Boolean"),
    ("IsValidForCreate", "Edm.Boolean"),
    ("IsValidForUpdate", "Edm.Boolean"),
    ("IsValidForRead", "Edm.Boolean"),
)


def _definition_types(csdl: Csdl) -> None:
    for name, base, extra in (
        ("MetadataBase", None, (("HasChanged", "Edm.Boolean"),)),
        ("EntityMetadata", f"{NS}.MetadataBase", _ENTITY_METADATA_PROPERTIES),
        ("AttributeMetadata", f"{NS}.MetadataBase", _ATTRIBUTE_METADATA_PROPERTIES),
        (
            "OptionSetMetadataBase",
            f"{NS}.MetadataBase",
            (("Name", "Edm.String"), ("IsGlobal", "Edm.Boolean"), ("OptionSetType", "Edm.String")),
        ),
        ("OptionSetMetadata", f"{NS}.OptionSetMetadataBase", ()),
    ):
        element = csdl.entity_type(
            name, ("MetadataId",) if base is None else (), base_type=base, abstract=base is None
        )
        if base is None:
            property_element(element, "MetadataId", "Edm.Guid", Nullable="false")
        for prop, type_name in extra:
            property_element(element, prop, type_name)
        if name == "EntityMetadata":
            ET.SubElement(
                element,
                "NavigationProperty",
                {"Name": "Attributes", "Type": f"Collection({NS}.AttributeMetadata)"},
            )
    csdl.entity_type(_ENUM_TYPE, base_type=f"{NS}.AttributeMetadata")
    for kind in _ATTRIBUTE_TYPES:
        base = _ENUM_TYPE if kind in _OPTION_SET_TYPES else "AttributeMetadata"
        element = csdl.entity_type(kind, base_type=f"{NS}.{base}")
        if kind in ("StringAttributeMetadata", "MemoAttributeMetadata"):
            property_element(element, "MaxLength", "Edm.Int32")
        if kind == "LookupAttributeMetadata":
            property_element(element, "Targets", "Collection(Edm.String)")
        if base == _ENUM_TYPE:
            for nav in ("OptionSet", "GlobalOptionSet"):
                ET.SubElement(
                    element,
                    "NavigationProperty",
                    {"Name": nav, "Type": f"{NS}.OptionSetMetadata"},
                )
    csdl.entity_set("EntityDefinitions", f"{NS}.EntityMetadata")
    csdl.entity_set("GlobalOptionSetDefinitions", f"{NS}.OptionSetMetadataBase")


def metadata_document(specs: Sequence[TableSpec]) -> ApiResponse:
    """``$metadata``: each table's entity type (key, properties, lookup navigation
    properties), its entity set, and the definition types the metadata routes serve."""
    csdl = Csdl(NS, "System", alias="mscrm")
    sets = {s.entity.logical_name: s for s in specs}
    for spec in specs:
        element = csdl.table(spec)
        entity = spec.entity
        for lookup in entity.lookups.values():
            for target in lookup.targets:
                target_spec = sets.get(target.logical_name)
                nav = ET.SubElement(
                    element,
                    "NavigationProperty",
                    {"Name": target.navigation, "Type": f"{NS}.{target.logical_name}"},
                )
                if target_spec is not None and not lookup.polymorphic:
                    ET.SubElement(
                        nav,
                        "ReferentialConstraint",
                        {
                            "Property": lookup.value_field,
                            "ReferencedProperty": target_spec.entity.key,
                        },
                    )
    _definition_types(csdl)
    for spec in specs:
        bindings = [
            (t.navigation, t.entity_set) for lk in spec.entity.lookups.values() for t in lk.targets
        ]
        csdl.entity_set(spec.entity.entity_set, spec.type_name, bindings)
    return csdl.response()
