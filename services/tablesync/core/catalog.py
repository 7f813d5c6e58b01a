"""The entity sets tablesync syncs, as each API publishes them: the shared contract.

For Business Central the names are those of API v2.0 (``customers``, ``vendors``,
``contacts``, ``currencies``, ``items``, ``unitsOfMeasure``, ``paymentTerms``,
``shipmentMethods``; the resource pages under
``dev-itpro/api-reference/v2.0/resources/``) plus ``salespeople``, which BC has no
standard API for: it is a custom API page (publisher ``tablesync``, group
``integration``, version ``v1.0``) whose route ``Entity.api_route`` records. The URL of
a BC entity set is ``<bc root>/api/<api_route or "v2.0">/companies(<id>)/<entity_set>``.

For Dataverse the names are the logical names of the Web API v9.2 (``accounts``,
``contacts``, ``systemusers``, ``transactioncurrencies``, ``products``, ``uoms``,
``uomschedules``). Lookups are read back as
``_<attribute>_value`` and written through a single-valued navigation property
(``"<navigation>@odata.bind": "/<entity_set>(<id>)"``); a polymorphic lookup
(``parentcustomerid``) has one navigation property per target table.

Simplifications, kept on both the emulators and the sync:

- BC company contacts are not modelled. A person contact's ``companyNumber`` and
  ``companyName`` name the customer or vendor it belongs to, and
  ``contactBusinessRelation`` says which (``Customer`` or ``Vendor``).
- Only the fields listed here exist; the real APIs have more.
- ``required`` means the API refuses a create without the field. Dataverse enforces
  only system-required columns, so most Dataverse tables have none.
- ``computed_from`` fields are maintained by the server: the non-empty values of the
  named fields joined by one space (Dataverse ``fullname``).
- BC strings, numbers and GUIDs are never null: an unset string reads ``""``, an unset
  GUID ``00000000-0000-0000-0000-000000000000``, an unset date ``0001-01-01``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from types import MappingProxyType
from typing import Literal, TypeAlias
from uuid import UUID

from tablesync.core.events import Side

__all__ = [
    "CATALOG",
    "EMPTY_GUID",
    "AlternateKey",
    "DefaultValue",
    "EdmType",
    "Entity",
    "FieldDef",
    "Lookup",
    "LookupDefault",
    "LookupTarget",
    "OnDelete",
    "entities",
    "entity",
]

EdmType: TypeAlias = Literal[
    "Edm.Guid",
    "Edm.String",
    "Edm.Int32",
    "Edm.Int64",
    "Edm.Decimal",
    "Edm.Boolean",
    "Edm.DateTimeOffset",
    "Edm.Date",
]
DefaultValue: TypeAlias = str | int | bool | Decimal | UUID | date | None
OnDelete: TypeAlias = Literal["restrict", "remove_link", "cascade"]
LookupDefault: TypeAlias = Literal["caller", "base_currency"]

EMPTY_GUID = UUID(int=0)
"""BC's value for a GUID field that is not set."""


@dataclass(frozen=True, slots=True)
class FieldDef:
    """One property as the API reads and writes it."""

    name: str
    edm_type: EdmType
    max_length: int | None = None
    read_only: bool = False
    """The API refuses a write that sets it (keys, stamps, computed values)."""
    required: bool = False
    """The API refuses a create without it."""
    nullable: bool = True
    default: DefaultValue = None
    """The value a create that omits the field stores."""
    options: tuple[str, ...] = ()
    """The allowed values of a BC enum (empty: any value of the type)."""
    computed_from: tuple[str, ...] = ()
    """The server keeps this field equal to the non-empty values of these, space-joined."""
    lookup: str | None = None
    """For a Dataverse ``_x_value`` property: the lookup attribute ``x`` it reads."""


@dataclass(frozen=True, slots=True)
class LookupTarget:
    """A table a lookup can point at, and the navigation property that binds to it."""

    entity_set: str
    logical_name: str
    navigation: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """A Dataverse lookup column: read as ``value_field``, written by ``@odata.bind``."""

    attribute: str
    value_field: str
    targets: tuple[LookupTarget, ...]
    writable: bool = True
    on_delete: OnDelete = "restrict"
    """What deleting the target does to this row: refuse, clear the lookup, delete the row."""
    default: LookupDefault | None = None
    """What a create that does not bind it stores: the calling user, or the base currency."""

    @property
    def polymorphic(self) -> bool:
        return len(self.targets) > 1

    def target_for_navigation(self, navigation: str) -> LookupTarget | None:
        return next((t for t in self.targets if t.navigation == navigation), None)

    def target_for_set(self, entity_set: str) -> LookupTarget | None:
        return next((t for t in self.targets if t.entity_set == entity_set), None)


@dataclass(frozen=True, slots=True)
class AlternateKey:
    """A Dataverse alternate key: rows are addressable as ``set(field='value')``."""

    name: str
    fields: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Entity:
    """One entity set of one side."""

    side: Side
    entity_set: str
    logical_name: str
    key: str
    modified_field: str
    fields: Mapping[str, FieldDef]
    lookups: Mapping[str, Lookup] = field(default_factory=lambda: MappingProxyType({}))
    """By lookup attribute (``ownerid``); Dataverse only."""
    alternate_keys: tuple[AlternateKey, ...] = ()
    api_route: str | None = None
    """BC: ``publisher/group/version`` of a custom API page; None for the standard v2.0."""
    created_field: str | None = None
    modified_by_field: str | None = None
    version_field: str | None = None
    """Dataverse ``versionnumber``: the row version the ETag carries."""
    number_field: str | None = None
    """BC: the field a number series fills when a create omits it."""

    def field(self, name: str) -> FieldDef:
        try:
            return self.fields[name]
        except KeyError:
            raise KeyError(f"{self.side} {self.entity_set} has no field {name!r}") from None

    def lookup_for_navigation(self, navigation: str) -> tuple[Lookup, LookupTarget] | None:
        """The lookup and target that ``<navigation>@odata.bind`` writes."""
        for lookup in self.lookups.values():
            target = lookup.target_for_navigation(navigation)
            if target is not None:
                return lookup, target
        return None


# ---------------------------------------------------------------- builders

_S: EdmType = "Edm.String"


def _fields(*defs: FieldDef) -> Mapping[str, FieldDef]:
    return MappingProxyType({d.name: d for d in defs})


def _bc_string(name: str, length: int, *, read_only: bool = False) -> FieldDef:
    return FieldDef(name, _S, max_length=length, read_only=read_only, nullable=False, default="")


def _bc_guid(name: str) -> FieldDef:
    return FieldDef(name, "Edm.Guid", nullable=False, default=EMPTY_GUID)


def _bc_decimal(name: str, *, read_only: bool = False) -> FieldDef:
    return FieldDef(name, "Edm.Decimal", read_only=read_only, nullable=False, default=Decimal(0))


def _bc_bool(name: str) -> FieldDef:
    return FieldDef(name, "Edm.Boolean", nullable=False, default=False)


def _bc_enum(name: str, options: tuple[str, ...], *, read_only: bool = False) -> FieldDef:
    return FieldDef(
        name, _S, read_only=read_only, nullable=False, default=options[0], options=options
    )


def _bc_id() -> FieldDef:
    return FieldDef("id", "Edm.Guid", read_only=True, nullable=False)


def _bc_modified() -> FieldDef:
    return FieldDef("lastModifiedDateTime", "Edm.DateTimeOffset", read_only=True, nullable=False)


def _bc_entity(
    entity_set: str,
    logical_name: str,
    defs: Iterable[FieldDef],
    *,
    number_field: str | None = None,
    api_route: str | None = None,
) -> Entity:
    return Entity(
        side="bc",
        entity_set=entity_set,
        logical_name=logical_name,
        key="id",
        modified_field="lastModifiedDateTime",
        fields=_fields(_bc_id(), *defs, _bc_modified()),
        api_route=api_route,
        number_field=number_field,
    )


_BC_ADDRESS = (
    _bc_string("addressLine1", 100),
    _bc_string("addressLine2", 50),
    _bc_string("city", 30),
    _bc_string("state", 30),
    _bc_string("country", 10),
    _bc_string("postalCode", 20),
)

_BC_CURRENCIES = _bc_entity(
    "currencies",
    "currency",
    (
        FieldDef("code", _S, max_length=10, required=True, nullable=False, default=""),
        _bc_string("displayName", 30),
        _bc_string("symbol", 10),
        # The v2.0 page types it as a string ("2:2" is a valid BC value).
        _bc_string("amountDecimalPlaces", 5),
        _bc_decimal("amountRoundingPrecision"),
    ),
)

_BC_CUSTOMERS = _bc_entity(
    "customers",
    "customer",
    (
        _bc_string("number", 20),
        _bc_string("displayName", 100),
        _bc_enum("type", ("Company", "Person")),
        *_BC_ADDRESS,
        _bc_string("phoneNumber", 30),
        _bc_string("email", 80),
        _bc_string("website", 80),
        _bc_string("salespersonCode", 20),
        _bc_decimal("balanceDue", read_only=True),
        _bc_decimal("creditLimit"),
        _bc_bool("taxLiable"),
        _bc_guid("taxAreaId"),
        _bc_string("taxAreaDisplayName", 100, read_only=True),
        _bc_string("taxRegistrationNumber", 20),
        _bc_guid("currencyId"),
        _bc_string("currencyCode", 10),
        _bc_guid("paymentTermsId"),
        _bc_guid("shipmentMethodId"),
        _bc_guid("paymentMethodId"),
        _bc_enum("blocked", (" ", "Ship", "Invoice", "All")),
    ),
    number_field="number",
)

_BC_VENDORS = _bc_entity(
    "vendors",
    "vendor",
    (
        _bc_string("number", 20),
        _bc_string("displayName", 100),
        *_BC_ADDRESS,
        _bc_string("phoneNumber", 30),
        _bc_string("email", 80),
        _bc_string("website", 80),
        _bc_string("taxRegistrationNumber", 20),
        _bc_guid("currencyId"),
        _bc_string("currencyCode", 10),
        _bc_string("irs1099Code", 10),
        _bc_guid("paymentTermsId"),
        _bc_guid("paymentMethodId"),
        _bc_bool("taxLiable"),
        _bc_enum("blocked", (" ", "Payment", "All")),
        _bc_decimal("balance", read_only=True),
    ),
    number_field="number",
)

_BC_CONTACTS = _bc_entity(
    "contacts",
    "contact",
    (
        _bc_string("number", 20),
        _bc_enum("type", ("Person", "Company")),
        _bc_string("displayName", 100),
        _bc_string("companyNumber", 20),
        _bc_string("companyName", 100),
        _bc_enum(
            "contactBusinessRelation",
            ("None", "Customer", "Vendor", "Bank Account", "Employee", "Multiple", "Other"),
            read_only=True,
        ),
        *_BC_ADDRESS,
        _bc_string("phoneNumber", 30),
        _bc_string("mobilePhoneNumber", 30),
        _bc_string("email", 80),
        _bc_string("website", 80),
        _bc_string("searchName", 100, read_only=True),
        _bc_bool("privacyBlocked"),
        _bc_string("taxRegistrationNumber", 20),
        FieldDef(
            "lastInteractionDate",
            "Edm.Date",
            read_only=True,
            nullable=False,
            default=date(1, 1, 1),
        ),
    ),
    number_field="number",
)

_BC_SALESPEOPLE = _bc_entity(
    "salespeople",
    "salesperson",
    (
        _bc_string("code", 20),
        _bc_string("name", 50),
        _bc_string("email", 80),
        _bc_string("phoneNo", 30),
        _bc_string("jobTitle", 30),
        _bc_bool("blocked"),
    ),
    number_field="code",
    api_route="tablesync/integration/v1.0",
)


_BC_UNITS_OF_MEASURE = _bc_entity(
    "unitsOfMeasure",
    "unitOfMeasure",
    (
        # The code is the Unit of Measure table's primary key.
        FieldDef("code", _S, max_length=10, required=True, nullable=False, default=""),
        _bc_string("displayName", 50),
        _bc_string("internationalStandardCode", 10),
        _bc_string("symbol", 10),
    ),
)

_BC_PAYMENT_TERMS = _bc_entity(
    "paymentTerms",
    "paymentTerm",
    (
        FieldDef("code", _S, max_length=10, required=True, nullable=False, default=""),
        _bc_string("displayName", 100),
        # Date formulas ("30D", "CM+10D"), written and read as text.
        _bc_string("dueDateCalculation", 32),
        _bc_string("discountDateCalculation", 32),
        _bc_decimal("discountPercent"),
        _bc_bool("calculateDiscountOnCreditMemos"),
    ),
)

_BC_SHIPMENT_METHODS = _bc_entity(
    "shipmentMethods",
    "shipmentMethod",
    (
        FieldDef("code", _S, max_length=10, required=True, nullable=False, default=""),
        _bc_string("displayName", 50),
    ),
)

_BC_ITEMS = _bc_entity(
    "items",
    "item",
    (
        _bc_string("number", 20),
        _bc_string("displayName", 100),
        _bc_string("displayName2", 50),
        _bc_enum("type", ("Inventory", "Service", "Non-Inventory")),
        _bc_guid("itemCategoryId"),
        _bc_string("itemCategoryCode", 20),
        _bc_bool("blocked"),
        _bc_string("gtin", 14),
        _bc_decimal("inventory", read_only=True),
        _bc_decimal("unitPrice"),
        _bc_bool("priceIncludesTax"),
        _bc_decimal("unitCost"),
        _bc_guid("taxGroupId"),
        _bc_string("taxGroupCode", 20),
        _bc_guid("baseUnitOfMeasureId"),
        _bc_string("baseUnitOfMeasureCode", 10),
        _bc_guid("generalProductPostingGroupId"),
        _bc_string("generalProductPostingGroupCode", 20),
        _bc_guid("inventoryPostingGroupId"),
        _bc_string("inventoryPostingGroupCode", 20),
    ),
    number_field="number",
)


def _dv_system_fields() -> tuple[FieldDef, ...]:
    return (
        FieldDef("createdon", "Edm.DateTimeOffset", read_only=True, nullable=False),
        FieldDef("modifiedon", "Edm.DateTimeOffset", read_only=True, nullable=False),
        FieldDef("_createdby_value", "Edm.Guid", read_only=True, lookup="createdby"),
        FieldDef("_modifiedby_value", "Edm.Guid", read_only=True, lookup="modifiedby"),
        FieldDef("versionnumber", "Edm.Int64", read_only=True, nullable=False),
    )


def _user_lookup(attribute: str, *, writable: bool, default: LookupDefault | None) -> Lookup:
    return Lookup(
        attribute=attribute,
        value_field=f"_{attribute}_value",
        targets=(LookupTarget("systemusers", "systemuser", attribute),),
        writable=writable,
        default=default,
    )


def _dv_system_lookups() -> tuple[Lookup, ...]:
    return (
        _user_lookup("createdby", writable=False, default="caller"),
        _user_lookup("modifiedby", writable=False, default="caller"),
    )


def _lookup_field(lookup: Lookup) -> FieldDef:
    return FieldDef(lookup.value_field, "Edm.Guid", read_only=True, lookup=lookup.attribute)


def _dv_entity(
    entity_set: str,
    logical_name: str,
    defs: Iterable[FieldDef],
    lookups: Iterable[Lookup] = (),
    alternate_keys: tuple[AlternateKey, ...] = (),
) -> Entity:
    key = f"{logical_name}id"
    own = tuple(lookups)
    return Entity(
        side="dataverse",
        entity_set=entity_set,
        logical_name=logical_name,
        key=key,
        modified_field="modifiedon",
        fields=_fields(
            FieldDef(key, "Edm.Guid", nullable=False),
            *defs,
            *(_lookup_field(lk) for lk in own),
            *_dv_system_fields(),
        ),
        lookups=MappingProxyType({lk.attribute: lk for lk in (*own, *_dv_system_lookups())}),
        alternate_keys=alternate_keys,
        created_field="createdon",
        modified_by_field="_modifiedby_value",
        version_field="versionnumber",
    )


def _dv_string(
    name: str,
    length: int,
    *,
    required: bool = False,
    read_only: bool = False,
    computed_from: tuple[str, ...] = (),
) -> FieldDef:
    return FieldDef(
        name,
        _S,
        max_length=length,
        required=required,
        read_only=read_only,
        computed_from=computed_from,
    )


def _dv_state() -> tuple[FieldDef, ...]:
    return (
        FieldDef("statecode", "Edm.Int32", nullable=False, default=0),
        FieldDef("statuscode", "Edm.Int32", nullable=False, default=1),
    )


_DV_ADDRESS = (
    _dv_string("address1_line1", 250),
    _dv_string("address1_line2", 250),
    _dv_string("address1_city", 80),
    _dv_string("address1_stateorprovince", 50),
    _dv_string("address1_postalcode", 20),
    _dv_string("address1_country", 80),
)

_OWNER = Lookup(
    attribute="ownerid",
    value_field="_ownerid_value",
    targets=(LookupTarget("systemusers", "systemuser", "ownerid"),),
    default="caller",
)
_CURRENCY = Lookup(
    attribute="transactioncurrencyid",
    value_field="_transactioncurrencyid_value",
    targets=(
        LookupTarget("transactioncurrencies", "transactioncurrency", "transactioncurrencyid"),
    ),
    default="base_currency",
)

_DV_CURRENCIES = _dv_entity(
    "transactioncurrencies",
    "transactioncurrency",
    (
        _dv_string("isocurrencycode", 5, required=True),
        _dv_string("currencyname", 100, required=True),
        _dv_string("currencysymbol", 10, required=True),
        FieldDef("exchangerate", "Edm.Decimal", required=True),
        FieldDef("currencyprecision", "Edm.Int32", nullable=False, default=2),
        *_dv_state(),
    ),
)

_DV_USERS = _dv_entity(
    "systemusers",
    "systemuser",
    (
        _dv_string("fullname", 200, read_only=True, computed_from=("firstname", "lastname")),
        _dv_string("firstname", 64),
        _dv_string("lastname", 64, required=True),
        _dv_string("internalemailaddress", 100),
        _dv_string("mobilephone", 64),
        _dv_string("title", 128),
        _dv_string("domainname", 1024),
        FieldDef("azureactivedirectoryobjectid", "Edm.Guid"),
        FieldDef("isdisabled", "Edm.Boolean", nullable=False, default=False),
        FieldDef("islicensed", "Edm.Boolean", nullable=False, default=False),
        # 0 Read-Write, 1 Administrative, 2 Read, 3 Support User, 4 Non-interactive.
        FieldDef("accessmode", "Edm.Int32", nullable=False, default=0),
    ),
)

# BC's "CDS Company" table (ExternalName bcbi_company): the BC companies one
# environment syncs with, each synced row stamped through a bcbi_companyid lookup.
_DV_COMPANIES = _dv_entity(
    "bcbi_companies",
    "bcbi_company",
    (
        _dv_string("bcbi_name", 30, required=True),
        _dv_string("bcbi_externalid", 36),
        *_dv_state(),
    ),
    lookups=(_OWNER,),
)
_COMPANY = Lookup(
    attribute="bcbi_companyid",
    value_field="_bcbi_companyid_value",
    targets=(LookupTarget("bcbi_companies", "bcbi_company", "bcbi_companyid"),),
    on_delete="remove_link",
)

_DV_ACCOUNTS = _dv_entity(
    "accounts",
    "account",
    (
        _dv_string("name", 160),
        _dv_string("accountnumber", 20),
        _dv_string("telephone1", 50),
        _dv_string("fax", 50),
        _dv_string("emailaddress1", 100),
        _dv_string("websiteurl", 200),
        *_DV_ADDRESS,
        _dv_string("address1_primarycontactname", 100),
        _dv_string("description", 2000),
        FieldDef("creditlimit", "Edm.Decimal"),
        FieldDef("customertypecode", "Edm.Int32"),
        # The three choices BC's integration maps to Payment Terms, Shipment
        # Method and Shipping Agent, with the options a new org has.
        FieldDef("paymenttermscode", "Edm.Int32", options=("1", "2", "3", "4")),
        FieldDef("address1_freighttermscode", "Edm.Int32", options=("1", "2")),
        FieldDef(
            "address1_shippingmethodcode", "Edm.Int32", options=tuple(str(v) for v in range(1, 8))
        ),
        *_dv_state(),
    ),
    lookups=(
        _OWNER,
        _CURRENCY,
        Lookup(
            attribute="primarycontactid",
            value_field="_primarycontactid_value",
            targets=(LookupTarget("contacts", "contact", "primarycontactid"),),
            on_delete="remove_link",
        ),
        _COMPANY,
    ),
    alternate_keys=(AlternateKey("accountnumber", ("accountnumber",)),),
)

_DV_CONTACTS = _dv_entity(
    "contacts",
    "contact",
    (
        _dv_string("firstname", 50),
        _dv_string("lastname", 50),
        _dv_string("fullname", 160, read_only=True, computed_from=("firstname", "lastname")),
        _dv_string("emailaddress1", 100),
        _dv_string("telephone1", 50),
        _dv_string("mobilephone", 50),
        *_DV_ADDRESS,
        _dv_string("jobtitle", 100),
        *_dv_state(),
    ),
    lookups=(
        Lookup(
            attribute="parentcustomerid",
            value_field="_parentcustomerid_value",
            targets=(
                LookupTarget("accounts", "account", "parentcustomerid_account"),
                LookupTarget("contacts", "contact", "parentcustomerid_contact"),
            ),
            on_delete="remove_link",
        ),
        _OWNER,
        _CURRENCY,
        _COMPANY,
    ),
)

_DV_UOM_SCHEDULES = _dv_entity(
    "uomschedules",
    "uomschedule",
    (
        _dv_string("name", 200, required=True),
        # Creating a unit group creates its base unit, named so.
        _dv_string("baseuomname", 100, required=True),
        _dv_string("description", 2000),
        *_dv_state(),
    ),
)

_UOM_SCHEDULE = LookupTarget("uomschedules", "uomschedule", "uomscheduleid")

_DV_UOMS = _dv_entity(
    "uoms",
    "uom",
    (
        _dv_string("name", 100, required=True),
        FieldDef("quantity", "Edm.Decimal", required=True),
        FieldDef("isschedulebaseuom", "Edm.Boolean", read_only=True, nullable=False, default=False),
    ),
    lookups=(
        Lookup(
            attribute="uomscheduleid",
            value_field="_uomscheduleid_value",
            targets=(_UOM_SCHEDULE,),
            on_delete="cascade",
        ),
        Lookup(
            attribute="baseuom",
            value_field="_baseuom_value",
            targets=(LookupTarget("uoms", "uom", "baseuom"),),
            on_delete="remove_link",
        ),
    ),
)

_DV_PRODUCTS = _dv_entity(
    "products",
    "product",
    (
        _dv_string("name", 100, required=True),
        _dv_string("productnumber", 100, required=True),
        _dv_string("description", 2000),
        FieldDef("price", "Edm.Decimal"),
        FieldDef("standardcost", "Edm.Decimal"),
        FieldDef("currentcost", "Edm.Decimal"),
        FieldDef("stockvolume", "Edm.Decimal"),
        FieldDef("stockweight", "Edm.Decimal"),
        FieldDef("quantityonhand", "Edm.Decimal"),
        _dv_string("vendorname", 100),
        _dv_string("vendorpartnumber", 100),
        # 1 Sales Inventory, 2 Miscellaneous Charges, 3 Services, 4 Flat Fees.
        FieldDef("producttypecode", "Edm.Int32", nullable=False, default=1),
        # Decimal places a quantity of the product may have (0-5).
        FieldDef("quantitydecimal", "Edm.Int32", required=True),
        # 1 Product, 2 Product Family, 3 Product Bundle.
        FieldDef("productstructure", "Edm.Int32", nullable=False, default=1),
        # 0 Active, 1 Retired, 2 Draft, 3 Under Revision.
        *_dv_state(),
    ),
    lookups=(
        # The product's navigation properties keep the schema names' casing.
        Lookup(
            attribute="defaultuomscheduleid",
            value_field="_defaultuomscheduleid_value",
            targets=(LookupTarget("uomschedules", "uomschedule", "DefaultUoMScheduleId"),),
        ),
        Lookup(
            attribute="defaultuomid",
            value_field="_defaultuomid_value",
            targets=(LookupTarget("uoms", "uom", "DefaultUoMId"),),
        ),
        Lookup(
            attribute="transactioncurrencyid",
            value_field="_transactioncurrencyid_value",
            targets=(
                LookupTarget(
                    "transactioncurrencies", "transactioncurrency", "TransactionCurrencyId"
                ),
            ),
            default="base_currency",
        ),
    ),
)

CATALOG: Mapping[tuple[Side, str], Entity] = MappingProxyType(
    {
        (e.side, e.entity_set): e
        for e in (
            _BC_CURRENCIES,
            _BC_SALESPEOPLE,
            _BC_UNITS_OF_MEASURE,
            _BC_PAYMENT_TERMS,
            _BC_SHIPMENT_METHODS,
            _BC_ITEMS,
            _BC_VENDORS,
            _BC_CUSTOMERS,
            _BC_CONTACTS,
            _DV_CURRENCIES,
            _DV_USERS,
            _DV_COMPANIES,
            _DV_UOM_SCHEDULES,
            _DV_UOMS,
            _DV_PRODUCTS,
            _DV_ACCOUNTS,
            _DV_CONTACTS,
        )
    }
)
"""Every entity set by (side, entity set name), each side in dependency order."""


def entity(side: Side, entity_set: str) -> Entity:
    """The entity set ``entity_set`` of ``side``; KeyError naming the known sets otherwise."""
    try:
        return CATALOG[(side, entity_set)]
    except KeyError:
        known = ", ".join(name for s, name in CATALOG if s == side)
        raise KeyError(f"{side} has no entity set {entity_set!r} (known: {known})") from None


def entities(side: Side) -> tuple[Entity, ...]:
    """The entity sets of ``side`` in dependency order (lookup targets first)."""
    return tuple(e for (s, _), e in CATALOG.items() if s == side)
