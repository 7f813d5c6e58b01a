"""What the suite syncs: its own mappings document, and the fields it changes
and compares.

Both mappings create records both ways (``sync_only_coupled: false``) and
propagate deletions (``deletion: delete``), so every record in scope on
either side must end with exactly one coupled counterpart. The conflict
policies are ones a test can check: CUSTOMER sends BC's values
(``send_to_integration``), CONTACTS takes Dataverse's
(``get_from_integration``). Every mapped field is bidirectional, so after
settling both sides hold the same values whichever side wrote last."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tablesync.core.events import Side

__all__ = [
    "CONTACTS",
    "CUSTOMER",
    "MAPPINGS_DOCUMENT",
    "TABLES",
    "Field",
    "Table",
    "conflict_winner",
]

MAPPINGS_DOCUMENT: dict[str, Any] = {
    "mappings": {
        "CUSTOMER": {
            "bc_table": "customers",
            "dataverse_table": "accounts",
            "direction": "bidirectional",
            "sync_only_coupled": False,
            "table_filter": "blocked eq ' '",
            "integration_table_filter": "statecode eq 0 and customertypecode eq 3",
            "bc_key": "number",
            "match": [{"bc": "number", "dataverse": "accountnumber"}],
            "update_conflict": "send_to_integration",
            "deletion": "delete",
            "fields": [
                {"bc": "number", "dataverse": "accountnumber", "code": True, "max_length": 20},
                {"bc": "displayName", "dataverse": "name", "max_length": 100},
                {"bc": "city", "dataverse": "address1_city", "max_length": 30},
                {"bc": "phoneNumber", "dataverse": "telephone1", "max_length": 30},
                {"bc": "email", "dataverse": "emailaddress1", "max_length": 80},
                {"bc": "website", "dataverse": "websiteurl", "max_length": 80},
                {"dataverse": "customertypecode", "constant": 3, "on_create_only": True},
            ],
        },
        "CONTACTS": {
            "bc_table": "contacts",
            "dataverse_table": "contacts",
            "direction": "bidirectional",
            "depends_on": ["CUSTOMER"],
            "sync_only_coupled": False,
            "table_filter": "type eq 'Person' and companyNumber ne ''",
            "integration_table_filter": "statecode eq 0 and _parentcustomerid_value ne null",
            "update_conflict": "get_from_integration",
            "deletion": "delete",
            "fields": [
                {
                    "bc": "displayName",
                    "dataverse": "lastname",
                    "direction": "to_integration",
                    "max_length": 50,
                },
                {
                    "bc": "displayName",
                    "dataverse": "fullname",
                    "direction": "from_integration",
                    "max_length": 100,
                },
                {"bc": "email", "dataverse": "emailaddress1", "max_length": 80},
                {"bc": "phoneNumber", "dataverse": "telephone1", "max_length": 30},
                {"bc": "mobilePhoneNumber", "dataverse": "mobilephone", "max_length": 30},
                {"bc": "city", "dataverse": "address1_city", "max_length": 30},
                {"bc": "companyNumber", "dataverse": "parentcustomerid", "lookup": ["CUSTOMER"]},
                {"bc": "type", "constant": "Person", "on_create_only": True},
            ],
        },
    }
}


@dataclass(frozen=True)
class Field:
    """One value as each side names it; ``dv_also`` are Dataverse fields that
    must show the same value (a contact's fullname is made of its lastname
    when it has no first name)."""

    name: str
    bc: str
    dv: str
    dv_also: tuple[str, ...] = ()

    def on(self, side: Side) -> str:
        return self.bc if side == "bc" else self.dv


@dataclass(frozen=True)
class Table:
    mapping: str
    bc_set: str
    dv_set: str
    bc_filter: str
    dv_filter: str
    marker: Field
    """Set once at creation and never changed by the suite: tells records
    apart, and two records with one marker on a side are a duplicate."""
    editable: tuple[Field, ...]

    def entity_set(self, side: Side) -> str:
        return self.bc_set if side == "bc" else self.dv_set

    def filter(self, side: Side) -> str:
        return self.bc_filter if side == "bc" else self.dv_filter

    def marker_of(self, side: Side, row: dict[str, Any]) -> str:
        value = row.get(self.marker.on(side))
        return value.strip().lower() if isinstance(value, str) else ""


def _mapping(name: str) -> dict[str, Any]:
    mapping: dict[str, Any] = MAPPINGS_DOCUMENT["mappings"][name]
    return mapping


CUSTOMER = Table(
    mapping="CUSTOMER",
    bc_set="customers",
    dv_set="accounts",
    bc_filter=_mapping("CUSTOMER")["table_filter"],
    dv_filter=_mapping("CUSTOMER")["integration_table_filter"],
    marker=Field("number", "number", "accountnumber"),
    editable=(
        Field("name", "displayName", "name"),
        Field("city", "city", "address1_city"),
        Field("phone", "phoneNumber", "telephone1"),
        Field("email", "email", "emailaddress1"),
        Field("web", "website", "websiteurl"),
    ),
)

CONTACTS = Table(
    mapping="CONTACTS",
    bc_set="contacts",
    dv_set="contacts",
    bc_filter=_mapping("CONTACTS")["table_filter"],
    dv_filter=_mapping("CONTACTS")["integration_table_filter"],
    marker=Field("email", "email", "emailaddress1"),
    editable=(
        Field("name", "displayName", "lastname", dv_also=("fullname",)),
        Field("phone", "phoneNumber", "telephone1"),
        Field("mobile", "mobilePhoneNumber", "mobilephone"),
        Field("city", "city", "address1_city"),
    ),
)

TABLES = (CUSTOMER, CONTACTS)


def conflict_winner(table: Table) -> Side:
    policy = _mapping(table.mapping)["update_conflict"]
    return "bc" if policy == "send_to_integration" else "dataverse"
