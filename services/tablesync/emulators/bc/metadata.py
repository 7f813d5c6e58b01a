"""``GET <api root>/$metadata``: the CSDL of the entity sets one BC API route serves.

As BC publishes it ("Business Central API (v2.0)", ``$metadata``): one schema
``Microsoft.NAV`` and container ``NAV``; ``company`` is the entity type of ``companies``
and contains every other entity set of the route through a collection navigation
property of the set's name; each entity type has the key ``id``; an option field is an
``EnumType`` whose members are the option names, encoded as .NET's ``XmlConvert`` does
(``" "`` is ``_x0020_``, ``"Bank Account"`` ``Bank_x0020_Account``).

The document is generated from the same specs the data API reads and writes, so the two
never disagree on a name, a type or a length.
"""

from __future__ import annotations

from collections.abc import Sequence

from tablesync.core.catalog import FieldDef
from tablesync.emulators.common.csdl import Csdl, EnumDef, property_element
from tablesync.emulators.common.messages import ApiResponse
from tablesync.emulators.common.sql import TableSpec

__all__ = ["NAMESPACE", "enum_name", "metadata_document"]

NAMESPACE = "Microsoft.NAV"
_CONTAINER = "NAV"
_COMPANY = "company"
_COMPANY_PROPERTIES = (
    ("id", "Edm.Guid", True),
    ("systemVersion", "Edm.String", False),
    ("timestamp", "Edm.Int64", True),
    ("name", "Edm.String", False),
    ("displayName", "Edm.String", False),
    ("businessProfileId", "Edm.String", False),
    ("systemCreatedAt", "Edm.DateTimeOffset", False),
    ("systemCreatedBy", "Edm.Guid", False),
    ("systemModifiedAt", "Edm.DateTimeOffset", False),
    ("systemModifiedBy", "Edm.Guid", False),
)
"""What ``companies`` answers (``BcService._company_json``)."""


def enum_name(spec: TableSpec, field: FieldDef) -> str:
    """The enum type of an option field: ``customerBlocked``, ``contactType``."""
    return spec.entity.logical_name + field.name[:1].upper() + field.name[1:]


def metadata_document(specs: Sequence[TableSpec]) -> ApiResponse:
    """The ``$metadata`` of one route: ``companies`` and ``specs`` under it."""
    csdl = Csdl(NAMESPACE, _CONTAINER)
    for spec in specs:
        for field in spec.entity.fields.values():
            if field.options:
                csdl.enum(EnumDef(enum_name(spec, field), field.options))
    company = csdl.entity_type(_COMPANY, ("id",))
    for name, type_name, required in _COMPANY_PROPERTIES:
        attrs = {"Nullable": "false"} if required else {}
        property_element(company, name, type_name, **attrs)
    for spec in specs:
        element = company.makeelement(
            "NavigationProperty",
            {
                "Name": spec.entity.entity_set,
                "Type": f"Collection({spec.type_name})",
                "ContainsTarget": "true",
            },
        )
        company.append(element)
    for spec in specs:

        def type_of(field: FieldDef, spec: TableSpec = spec) -> str:
            if field.options:
                return f"{NAMESPACE}.{enum_name(spec, field)}"
            return field.edm_type

        csdl.table(spec, type_of=type_of)
    csdl.entity_set(
        "companies",
        f"{NAMESPACE}.{_COMPANY}",
        [(s.entity.entity_set, s.entity.entity_set) for s in specs],
    )
    for spec in specs:
        csdl.entity_set(spec.entity.entity_set, spec.type_name)
    return csdl.response()
