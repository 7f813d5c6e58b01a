"""Business Central writes on the in-memory tables: what the connector sends, and what
the BC emulator (``emulators/bc/service.py``) does with it, in the same order.

The table triggers the emulator writes as SQL (``emulators/bc/rules.py`` and
``ts_next_no`` in ``emulators/common/schema.py``) are expressed once more here, in
Python: each function names the SQL it mirrors. Messages, captions, the local currency
and the number series come from the emulator's own modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from tablesync.adapters.odata.bc import ASSIGNED_IDS_MESSAGE
from tablesync.adapters.odata.bc import _payload as connector_payload
from tablesync.core.catalog import EMPTY_GUID
from tablesync.core.events import FieldValue
from tablesync.core.records import WriteValue
from tablesync.emulators.bc.rules import ID_REFERENCES, relation_message
from tablesync.emulators.bc.service import (
    ETAG_REQUIRED_MESSAGE,
    STALE_MESSAGE,
    duplicate,
    not_found,
    required,
    version_of,
)
from tablesync.emulators.bc.specs import LCY_CODE, NUMBER_SERIES
from tablesync.emulators.bc.style import TABLE_CAPTIONS
from tablesync.emulators.common.etags import parse_precondition
from tablesync.emulators.common.payload import convert_properties
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.values import parse_guid
from tablesync.emulators.memory.store import Store, Stored, Table

__all__ = ["BcWrites"]

Assigned = dict[str, object]
"""Column → converted value, in the order the emulator's statement assigns them."""


def _given(value: object) -> Callable[[], object]:
    return lambda: value


def next_number(entity_set: str, last: int) -> str:
    """The number after ``last`` in ``entity_set``'s series: SQL ``ts_next_no``."""
    prefix, width = NUMBER_SERIES[entity_set]
    digits = str(last + 1)
    return prefix + (digits if len(digits) >= width else digits.zfill(width))


class BcWrites:
    """Creates, updates and deletes as ``BcService`` performs them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.series = dict.fromkeys(NUMBER_SERIES, 0)
        """Entity set → last number given (the emulator's ``_number_series.last_no``)."""

    def continue_series(self, entity_set: str) -> None:
        """Continues ``entity_set``'s number series after the highest number
        its rows hold (rows loaded from elsewhere: the series' own state is
        not something the API shows)."""
        series = NUMBER_SERIES.get(entity_set)
        number = self.store.table(entity_set).spec.entity.number_field
        if series is None or number is None:
            return
        prefix, _ = series
        for stored in self.store.table(entity_set).rows.values():
            value = stored.values.get(number)
            if (
                isinstance(value, str)
                and value.startswith(prefix)
                and value[len(prefix) :].isdigit()
            ):
                self.series[entity_set] = max(self.series[entity_set], int(value[len(prefix) :]))

    # ------------------------------------------------------------ rules

    def _relation(self, entity_set: str, field: str, value: object, related: str) -> ApiProblem:
        table = TABLE_CAPTIONS[entity_set][0]
        return ApiProblem(Kind.RELATION, relation_message(table, field, value, related))

    def _first(self, entity_set: str, name: str, value: object) -> Stored | None:
        return next((row for _, row in self.store.tables[entity_set].where(name, value)), None)

    def _currency(
        self,
        entity_set: str,
        values: Mapping[str, object],
        assigns: dict[str, Callable[[], object]],
    ) -> None:
        """``currencyCode`` and ``currencyId`` set each other: rules ``_currency``."""
        if "currencyCode" in values:
            code = values["currencyCode"]

            def currency_id() -> object:
                if code in ("", LCY_CODE):
                    return EMPTY_GUID
                found = self._first("currencies", "code", code)
                if found is None:
                    raise self._relation(entity_set, "Currency Code", code, "Currency")
                return found.values["id"]

            assigns["currencyId"] = currency_id
        elif "currencyId" in values:
            given = values["currencyId"]

            def currency_code() -> object:
                if given == EMPTY_GUID:
                    return ""
                found = self.store.tables["currencies"].rows.get(str(given))
                if found is None:
                    raise self._relation(entity_set, "Currency Id", given, "Currency")
                return found.values["code"]

            assigns["currencyCode"] = currency_code

    def _unit_of_measure(
        self, values: Mapping[str, object], assigns: dict[str, Callable[[], object]]
    ) -> None:
        """An item's base unit code and id set each other: rules ``_unit_of_measure``."""
        if "baseUnitOfMeasureCode" in values:
            code = values["baseUnitOfMeasureCode"]

            def unit_id() -> object:
                if code == "":
                    return EMPTY_GUID
                found = self._first("unitsOfMeasure", "code", code)
                if found is None:
                    raise self._relation("items", "Base Unit of Measure", code, "Unit of Measure")
                return found.values["id"]

            assigns["baseUnitOfMeasureId"] = unit_id
        elif "baseUnitOfMeasureId" in values:
            given = values["baseUnitOfMeasureId"]

            def unit_code() -> object:
                if given == EMPTY_GUID:
                    return ""
                found = self.store.tables["unitsOfMeasure"].rows.get(str(given))
                if found is None:
                    raise self._relation(
                        "items", "Base Unit of Measure Id", given, "Unit of Measure"
                    )
                return found.values["code"]

            assigns["baseUnitOfMeasureCode"] = unit_code

    def _id_reference(self, entity_set: str, name: str, given: object) -> Callable[[], object]:
        """Payment terms and shipment method ids name a record: rules ``_id_reference``."""
        caption, related_set, related = ID_REFERENCES[name]

        def checked() -> object:
            if given == EMPTY_GUID or str(given) in self.store.tables[related_set].rows:
                return given
            raise self._relation(entity_set, caption, given, related)

        return checked

    def _salesperson(self, values: Mapping[str, object]) -> Callable[[], object]:
        """A customer's ``salespersonCode`` names a salesperson: rules ``_salesperson``."""
        code = values["salespersonCode"]

        def checked() -> object:
            if code == "" or self._first("salespeople", "code", code) is not None:
                return code
            raise self._relation("customers", "Salesperson Code", code, "Salesperson/Purchaser")

        return checked

    def _contact(
        self,
        values: Mapping[str, object],
        assigns: dict[str, Callable[[], object]],
        creating: bool,
    ) -> None:
        """A contact's company is a customer or vendor; ``searchName`` is the upper-cased
        ``displayName``: rules ``_contact``."""
        if creating or "companyNumber" in values:
            number = values.get("companyNumber", "")

            def company() -> tuple[str, Stored | None]:
                if number == "":
                    return "None", None
                customer = self._first("customers", "number", number)
                if customer is not None:
                    return "Customer", customer
                vendor = self._first("vendors", "number", number)
                if vendor is not None:
                    return "Vendor", vendor
                raise self._relation("contacts", "Company No.", number, "Customer/Vendor")

            assigns["contactBusinessRelation"] = lambda: company()[0]
            if "companyName" not in values:

                def company_name() -> object:
                    found = company()[1]
                    return "" if found is None else found.values["displayName"]

                assigns["companyName"] = company_name
        if creating or "displayName" in values:
            name = values.get("displayName", "")
            assigns["searchName"] = lambda: str(name).upper()

    def _assigns(self, table: Table, values: dict[str, object], creating: bool) -> Assigned:
        """Every column the write sets, the rules' checks made: rules ``write_assigns``
        (the number, stamp and version are the caller's)."""
        entity = table.spec.entity
        entity_set = entity.entity_set
        number = entity.number_field
        numbered = creating and number is not None and not values.get(number)
        assigns = {
            name: _given(value)
            for name, value in values.items()
            if not (numbered and name == number)
        }
        if entity_set in ("customers", "vendors"):
            self._currency(entity_set, values, assigns)
            for name in ID_REFERENCES:
                if name in values and name in entity.fields:
                    assigns[name] = self._id_reference(entity_set, name, values[name])
        if entity_set == "items":
            self._unit_of_measure(values, assigns)
        if entity_set == "customers" and "salespersonCode" in values:
            assigns["salespersonCode"] = self._salesperson(values)
        if entity_set == "contacts":
            self._contact(values, assigns, creating)
        # The statement evaluates its assignments in order: the first refusal wins.
        return {name: make() for name, make in assigns.items()}

    def _check_unique(
        self, table: Table, key: str, row: dict[str, FieldValue], given: dict[str, object]
    ) -> None:
        """The number (code) stays unique: the emulator's unique indexes."""
        spec = table.spec
        for column in (spec.entity.number_field, *spec.unique_columns):
            if column and any(other != key for other, _ in table.where(column, row[column])):
                raise duplicate(spec, given)

    # ------------------------------------------------------------ writes

    def create(
        self,
        entity_set: str,
        values: dict[str, WriteValue],
        record_id: str | None,
        caller: str | None,
        *,
        only_new: bool = False,
    ) -> Stored:
        if record_id is not None:
            # The connector refuses it without sending anything.
            raise ApiProblem(Kind.BAD_REQUEST, ASSIGNED_IDS_MESSAGE)
        table = self.store.table(entity_set)
        spec = table.spec
        entity = spec.entity
        converted = convert_properties(spec, connector_payload(values))
        blank = required(spec, converted)
        if blank is not None:
            raise blank
        assigned = self._assigns(table, converted, creating=True)
        number = entity.number_field
        numbered = number is not None and number not in assigned
        if numbered:
            assert number is not None
            assigned[number] = next_number(entity_set, self.series[entity_set])
        store = self.store
        key = store.new_id()
        stamp = store.now()
        assigned[entity.key] = key
        assigned[entity.modified_field] = stamp
        row = dict(table.defaults)
        for name, value in assigned.items():
            row[name] = store.json(entity.fields[name], value)
        self._check_unique(table, key, row, converted)
        if numbered:
            self.series[entity_set] += 1
        version, etag = store.next_version()
        stored = Stored(row, stamp, version, etag)
        table.rows[key] = stored
        return stored

    def _precondition(self, etag: str | None) -> list[int] | None:
        """The versions the connector's ``If-Match`` allows (``*`` when it knows no ETag);
        None for any: ``BcService._precondition``."""
        condition = parse_precondition(etag or "*")
        if condition is None:
            raise ApiProblem(Kind.ETAG_REQUIRED, ETAG_REQUIRED_MESSAGE)
        if condition.any:
            return None
        versions = [v for v in (version_of(t) for t in condition.tags) if v is not None]
        if not versions:
            raise ApiProblem(Kind.ETAG_REQUIRED, ETAG_REQUIRED_MESSAGE)
        return versions

    def _target(self, table: Table, record_id: str, versions: list[int] | None) -> Stored:
        key = parse_guid(record_id, f"the key of {table.spec.entity.entity_set}")
        stored = table.rows.get(str(key))
        if stored is None:
            raise not_found(table.spec, key)
        if versions is not None and stored.version not in versions:
            raise ApiProblem(Kind.STALE, STALE_MESSAGE)
        return stored

    def update(
        self,
        entity_set: str,
        record_id: str,
        values: dict[str, WriteValue],
        etag: str | None,
        caller: str | None,
    ) -> Stored:
        table = self.store.table(entity_set)
        spec = table.spec
        entity = spec.entity
        parse_guid(record_id, f"the key of {entity_set}")
        versions = self._precondition(etag)
        converted = convert_properties(spec, connector_payload(values))
        stored = self._target(table, record_id, versions)
        assigned = self._assigns(table, converted, creating=False)
        store = self.store
        stamp = store.now()
        row = dict(stored.values)
        for name, value in assigned.items():
            row[name] = store.json(entity.fields[name], value)
        row[entity.modified_field] = store.stamp_text(stamp)
        self._check_unique(table, str(row[entity.key]), row, converted)
        stored.values = row
        stored.stamp = stamp
        stored.version, stored.etag = store.next_version()
        return stored

    def delete(self, entity_set: str, record_id: str, etag: str | None) -> None:
        table = self.store.table(entity_set)
        parse_guid(record_id, f"the key of {entity_set}")
        versions = self._precondition(etag)
        stored = self._target(table, record_id, versions)
        del table.rows[str(stored.values[table.spec.entity.key])]
