"""CSDL XML (``$metadata``, OData 4.0 EDMX) built with ElementTree, so every name and value
the document carries is escaped.

Both services describe their tables with it: one ``EntityType`` per table spec (its key,
its properties with their EDM types, ``Nullable="false"`` and ``MaxLength`` where the
catalog has them), one ``EntitySet`` per entity set in the ``EntityContainer``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from tablesync.core.catalog import FieldDef
from tablesync.emulators.common.messages import ApiResponse
from tablesync.emulators.common.sql import TableSpec

__all__ = [
    "EDMX_NS",
    "EDM_NS",
    "Csdl",
    "EnumDef",
    "encode_name",
    "property_element",
]

EDMX_NS = "http://docs.oasis-open.org/odata/ns/edmx"
EDM_NS = "http://docs.oasis-open.org/odata/ns/edm"
_CONTENT_TYPE = "application/xml"
_SIMPLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def encode_name(text: str) -> str:
    """``text`` as an OData SimpleIdentifier, as .NET's ``XmlConvert.EncodeName`` spells it:
    each character a name may not hold becomes ``_xHHHH_`` (``" "`` → ``_x0020_``)."""
    if _SIMPLE.fullmatch(text):
        return text
    out = []
    for index, char in enumerate(text):
        allowed = char.isascii() and (char.isalpha() or char == "_" or (index and char.isdigit()))
        out.append(char if allowed else f"_x{ord(char):04X}_")
    return "".join(out)


@dataclass(frozen=True, slots=True)
class EnumDef:
    name: str
    members: tuple[str, ...]
    """Member names as the values read; encoded with ``encode_name`` in the document."""


def property_element(parent: ET.Element, name: str, type_name: str, **attrs: str) -> ET.Element:
    return ET.SubElement(parent, "Property", {"Name": name, "Type": type_name, **attrs})


def _field_attrs(field: FieldDef) -> dict[str, str]:
    attrs: dict[str, str] = {}
    if not field.nullable:
        attrs["Nullable"] = "false"
    if field.max_length is not None:
        attrs["MaxLength"] = str(field.max_length)
    if field.edm_type == "Edm.Decimal":
        attrs["Scale"] = "Variable"
    return attrs


@dataclass(slots=True)
class Csdl:
    """One schema: its enum types, entity types and entity container."""

    namespace: str
    container: str
    alias: str | None = None
    _types: list[ET.Element] = field(default_factory=list)
    _sets: list[ET.Element] = field(default_factory=list)

    def enum(self, enum: EnumDef) -> None:
        element = ET.Element("EnumType", {"Name": enum.name})
        for value, member in enumerate(enum.members):
            ET.SubElement(element, "Member", {"Name": encode_name(member), "Value": str(value)})
        self._types.append(element)

    def entity_type(
        self,
        name: str,
        key: Sequence[str] = (),
        base_type: str | None = None,
        abstract: bool = False,
    ) -> ET.Element:
        attrs = {"Name": name}
        if base_type:
            attrs["BaseType"] = base_type
        if abstract:
            attrs["Abstract"] = "true"
        element = ET.Element("EntityType", attrs)
        if key:
            key_element = ET.SubElement(element, "Key")
            for part in key:
                ET.SubElement(key_element, "PropertyRef", {"Name": part})
        self._types.append(element)
        return element

    def table(
        self,
        spec: TableSpec,
        fields: Iterable[FieldDef] | None = None,
        type_of: Callable[[FieldDef], str] | None = None,
    ) -> ET.Element:
        """The entity type of ``spec``: its key and each of ``fields`` (all by default)."""
        element = self.entity_type(spec.entity.logical_name, (spec.entity.key,))
        for f in fields if fields is not None else spec.entity.fields.values():
            type_name = type_of(f) if type_of is not None else f.edm_type
            property_element(element, f.name, type_name, **_field_attrs(f))
        return element

    def entity_set(
        self, name: str, entity_type: str, bindings: Iterable[tuple[str, str]] = ()
    ) -> None:
        element = ET.Element("EntitySet", {"Name": name, "EntityType": entity_type})
        for path, target in bindings:
            ET.SubElement(element, "NavigationPropertyBinding", {"Path": path, "Target": target})
        self._sets.append(element)

    def render(self) -> bytes:
        attrs = {"Namespace": self.namespace, "xmlns": EDM_NS}
        if self.alias:
            attrs["Alias"] = self.alias
        schema = ET.Element("Schema", attrs)
        schema.extend(self._types)
        container = ET.SubElement(schema, "EntityContainer", {"Name": self.container})
        container.extend(self._sets)
        root = ET.Element("edmx:Edmx", {"Version": "4.0", "xmlns:edmx": EDMX_NS})
        services = ET.SubElement(root, "edmx:DataServices")
        services.append(schema)
        body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        return body

    def response(self) -> ApiResponse:
        return ApiResponse(
            200, self.render(), [("content-type", _CONTENT_TYPE), ("odata-version", "4.0")]
        )
