"""Dataverse writes on the in-memory tables: what the connector sends, and what the
Dataverse emulator (``emulators/dataverse/service.py``) does with it, in the same order.

Bodies are split and checked by the emulator's own ``split_body`` (values, binds,
read-only lookups); what its SQL does is expressed here in Python, once:

- a bind names an existing row or the write fails with ``ObjectDoesNotExist``
  (``writes._bind_expr``);
- computed columns (``fullname``), the caller as owner / creator / modifier and the
  base currency (``specs.BASE_CURRENCY_SQL``) as ``writes.write_assigns`` sets them;
- alternate keys are unique without regard to case (``schema._table_ddl``'s
  ``lower(...)`` indexes);
- deleting a row that others point at: ``restrict`` refuses, ``remove_link`` clears
  their lookup, ``cascade`` deletes them (the foreign keys of ``schema._foreign_keys``;
  clearing a link leaves the other row's stamp and version as they are, as ``ON
  DELETE SET NULL`` does);
- every row written, its link cleared, or deleted is noted in the change log, as the
  emulator's change tracking trigger notes it (``schema._tracking_ddl``);
- a unit group creates its base unit, and a product needs a unit group and a default
  unit of it (the triggers of ``specs._TRIGGERS``).
"""

from __future__ import annotations

from uuid import UUID

from tablesync.adapters.odata.dataverse import _payload as connector_payload
from tablesync.core.catalog import Entity, Lookup
from tablesync.core.events import FieldValue
from tablesync.core.records import WriteValue
from tablesync.emulators.common.etags import parse_precondition
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.dataverse.keys import KeyRef, parse_key
from tablesync.emulators.dataverse.service import (
    DUPLICATE_MESSAGE,
    IN_USE_MESSAGE,
    STALE_MESSAGE,
    required_problem,
)
from tablesync.emulators.dataverse.specs import (
    INTEGRATION_USER_NAME,
    PRODUCT_UNIT_FOREIGN,
    PRODUCT_UNIT_MISSING,
)
from tablesync.emulators.dataverse.writes import Bind, Body, split_body
from tablesync.emulators.memory.store import Store, Stored, Table

__all__ = ["DataverseWrites"]


def _missing_required(entity: Entity, body: Body) -> list[str]:
    return [
        f.name for f in entity.fields.values() if f.required and body.values.get(f.name) is None
    ]


def _computed(row: dict[str, FieldValue], sources: tuple[str, ...]) -> FieldValue:
    """``NULLIF(concat_ws(' ', NULLIF(a, ''), …), '')``."""
    parts = [str(v) for v in (row.get(s) for s in sources) if v is not None and v != ""]
    return " ".join(parts) or None


class DataverseWrites:
    """Creates, updates, upserts and deletes as ``DataverseService`` performs them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.integration_user = store.new_id()
        first, last = INTEGRATION_USER_NAME
        # DataverseService.prepare: the application user the connector calls as.
        self._insert(
            store.table("systemusers"),
            Body(
                {
                    "systemuserid": UUID(self.integration_user),
                    "firstname": first,
                    "lastname": last,
                    "internalemailaddress": "tablesync-integration@cronus.example",
                    "accessmode": 4,
                },
                {},
            ),
            self.integration_user,
        )

    def caller(self, user_id: str | None) -> str:
        """The user a write is made as: ``MSCRMCallerID`` checks of ``DataverseService._caller``."""
        if user_id is None:
            return self.integration_user
        key = str(UUID(user_id))
        found = self.store.tables["systemusers"].rows.get(key)
        if found is None:
            raise ApiProblem(Kind.NOT_FOUND, f"systemuser With Id = {key} Does Not Exist")
        if found.values["isdisabled"]:
            raise ApiProblem(
                Kind.BAD_REQUEST,
                f"The user with SystemUserId = {key} is disabled and cannot be impersonated.",
            )
        return key

    # ------------------------------------------------------------ pieces of one write

    def _find(self, key: KeyRef) -> tuple[Table, Stored | None]:
        table = self.store.tables[key.spec.entity.entity_set]
        if key.id is not None:
            return table, table.rows.get(str(key.id))
        for candidate in table.rows.values():
            if all(
                _same(candidate.values.get(field.name), self.store.json(field, value))
                for field, value in key.alternate
            ):
                return table, candidate
        return table, None

    def _bind(self, row: dict[str, FieldValue], targets: dict[str, str], bind: Bind) -> None:
        lookup = bind.lookup
        if bind.target is None or bind.key is None:
            row[lookup.value_field] = None
            targets.pop(lookup.attribute, None)
            return
        table, found = self._find(bind.key)
        if found is None:
            raise ApiProblem(Kind.RELATION, bind.key.describe())
        row[lookup.value_field] = found.values[table.spec.entity.key]
        if lookup.polymorphic:
            targets[lookup.attribute] = bind.target.entity_set

    def _base_currency(self) -> FieldValue:
        """``BASE_CURRENCY_SQL``: the first currency created at rate 1."""
        rates = [
            (str(r.values["createdon"]), key)
            for key, r in self.store.tables["transactioncurrencies"].rows.items()
            if r.values["exchangerate"] == 1
        ]
        return min(rates)[1] if rates else None

    def _fill(
        self,
        table: Table,
        row: dict[str, FieldValue],
        targets: dict[str, str],
        body: Body,
        caller: str,
        creating: bool,
    ) -> None:
        """The assignments of ``writes.write_assigns`` but the stamps and the version."""
        entity = table.spec.entity
        store = self.store
        for name, value in body.values.items():
            row[name] = store.json(entity.fields[name], value)
        for bind in body.binds.values():
            self._bind(row, targets, bind)
        for field in entity.fields.values():
            if field.computed_from and (creating or set(field.computed_from) & set(body.values)):
                row[field.name] = _computed(row, field.computed_from)
        for lookup in entity.lookups.values():
            if lookup.attribute in body.binds or lookup.default is None or lookup.polymorphic:
                continue
            if lookup.attribute == "modifiedby":
                row[lookup.value_field] = caller
            elif creating:
                row[lookup.value_field] = (
                    caller if lookup.default == "caller" else self._base_currency()
                )

    def _check_keys(self, table: Table, key: str, row: dict[str, FieldValue]) -> None:
        """Alternate keys stay unique, compared as ``lower(...)`` as their indexes do."""
        for alternate in table.spec.entity.alternate_keys:
            values = [row.get(f) for f in alternate.fields]
            if any(v is None for v in values):
                continue
            for other, candidate in table.rows.items():
                if other != key and all(
                    _same(candidate.values.get(f), v)
                    for f, v in zip(alternate.fields, values, strict=True)
                ):
                    raise ApiProblem(Kind.DUPLICATE, DUPLICATE_MESSAGE)

    def _check_units(self, table: Table, row: dict[str, FieldValue]) -> None:
        """``specs._PRODUCT_UNITS``: a product's unit group and a default unit of it."""
        if table.spec.entity.entity_set != "products":
            return
        group, unit = row.get("_defaultuomscheduleid_value"), row.get("_defaultuomid_value")
        if group is None:
            raise ApiProblem(Kind.REQUIRED, PRODUCT_UNIT_MISSING.format("defaultuomscheduleid"))
        if unit is None:
            raise ApiProblem(Kind.REQUIRED, PRODUCT_UNIT_MISSING.format("defaultuomid"))
        found = self.store.tables["uoms"].rows.get(str(unit))
        if found is None or found.values.get("_uomscheduleid_value") != group:
            raise ApiProblem(Kind.BAD_VALUE, PRODUCT_UNIT_FOREIGN)

    def _base_unit(self, group: Stored, caller: str) -> None:
        """``specs._BASE_UNIT``: the unit a new unit group comes with."""
        values = group.values
        self._insert(
            self.store.table("uoms"),
            Body(
                {
                    "name": values["baseuomname"],
                    "quantity": 1,
                    "isschedulebaseuom": True,
                    "_uomscheduleid_value": values["uomscheduleid"],
                },
                {},
            ),
            caller,
        )

    def _insert(self, table: Table, body: Body, caller: str) -> Stored:
        entity = table.spec.entity
        store = self.store
        given = body.values.get(entity.key)
        key = str(given) if given is not None else store.new_id()
        row = dict(table.defaults)
        targets: dict[str, str] = {}
        self._fill(table, row, targets, body, caller, creating=True)
        row[entity.key] = key
        stamp = store.now()
        text = store.stamp_text(stamp)
        row["createdon"] = row["modifiedon"] = text
        if key in table.rows:
            raise ApiProblem(Kind.DUPLICATE, DUPLICATE_MESSAGE)
        self._check_keys(table, key, row)
        self._check_units(table, row)
        version, etag = store.next_version()
        row["versionnumber"] = version
        stored = Stored(row, stamp, version, etag, targets)
        table.rows[key] = stored
        store.note_change(entity.entity_set, key)
        if entity.entity_set == "uomschedules":
            self._base_unit(stored, caller)
        return stored

    def _update(self, table: Table, stored: Stored, body: Body, caller: str) -> Stored:
        store = self.store
        row = dict(stored.values)
        targets = dict(stored.targets)
        self._fill(table, row, targets, body, caller, creating=False)
        stamp = store.now()
        row["modifiedon"] = store.stamp_text(stamp)
        key = str(stored.values[table.spec.entity.key])
        self._check_keys(table, key, row)
        self._check_units(table, row)
        version, etag = store.next_version()
        row["versionnumber"] = version
        stored.values, stored.targets = row, targets
        stored.stamp, stored.version, stored.etag = stamp, version, etag
        store.note_change(table.spec.entity.entity_set, key)
        return stored

    def _missing_or_stale(self, key: KeyRef, stored: Stored | None) -> ApiProblem:
        if stored is None:
            return ApiProblem(Kind.NOT_FOUND, key.describe())
        return ApiProblem(Kind.STALE, STALE_MESSAGE)

    def _body(self, table: Table, key: KeyRef | None, values: dict[str, WriteValue]) -> Body:
        body = split_body(table.spec, connector_payload(values), {})
        given = body.values.get(table.spec.entity.key)
        if key is not None and key.id is not None and given is not None and given != key.id:
            # DataverseService._check_body_key
            raise ApiProblem(
                Kind.BAD_VALUE,
                f"The key in the payload ({given}) differs from the key in the URL ({key.id}).",
            )
        return body

    def _upsert(self, table: Table, key: KeyRef, body: Body, caller: str) -> Stored:
        """``PATCH set(id)`` without conditions: ``DataverseService._upsert``."""
        entity = table.spec.entity
        values = dict(body.values)
        if key.id is not None:
            values.setdefault(entity.key, key.id)
        creating = Body(values, body.binds)
        _, stored = self._find(key)
        if stored is not None:
            return self._update(table, stored, body, caller)
        missing = _missing_required(entity, creating)
        if missing:
            raise required_problem(table.spec, missing)
        return self._insert(table, creating, caller)

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
        table = self.store.table(entity_set)
        if record_id is None:
            # POST <set>
            body = self._body(table, None, values)
            missing = _missing_required(table.spec.entity, body)
            if missing:
                raise required_problem(table.spec, missing)
            return self._insert(table, body, self.caller(caller))
        key = parse_key(table.spec, record_id)
        body = self._body(table, key, values)
        # ``PATCH set(id)`` with ``If-None-Match: *``: ``DataverseService._patch``.
        if only_new and self._find(key)[1] is not None:
            raise ApiProblem(Kind.DUPLICATE, DUPLICATE_MESSAGE)
        return self._upsert(table, key, body, self.caller(caller))

    def update(
        self,
        entity_set: str,
        record_id: str,
        values: dict[str, WriteValue],
        etag: str | None,
        caller: str | None,
    ) -> Stored:
        """``PATCH set(id)`` with ``If-Match: <etag>``, ``*`` when none is known."""
        table = self.store.table(entity_set)
        key = parse_key(table.spec, record_id)
        body = self._body(table, key, values)
        condition = parse_precondition(etag or "*")
        user = self.caller(caller)
        if condition is None:
            return self._upsert(table, key, body, user)
        _, stored = self._find(key)
        if stored is None or not (
            condition.any or stored.version in {int(t) for t in condition.tags if t.isdigit()}
        ):
            raise self._missing_or_stale(key, stored)
        return self._update(table, stored, body, user)

    def delete(self, entity_set: str, record_id: str, etag: str | None) -> None:
        """``DELETE set(id)``, with ``If-Match`` only when an ETag is given."""
        table = self.store.table(entity_set)
        key = parse_key(table.spec, record_id)
        condition = parse_precondition(etag) if etag else None
        _, stored = self._find(key)
        if stored is None or not (
            condition is None
            or condition.any
            or stored.version in {int(t) for t in condition.tags if t.isdigit()}
        ):
            raise self._missing_or_stale(key, stored)
        doomed = self._cascade(entity_set, str(stored.values[table.spec.entity.key]))
        for (doomed_set, doomed_key), _ in doomed.items():
            for lookup, referrer, row in self._referrers(doomed_set, doomed_key):
                if (referrer, str(row.values[self._key_of(referrer)])) in doomed:
                    continue
                if lookup.on_delete == "restrict":
                    raise ApiProblem(Kind.IN_USE, IN_USE_MESSAGE)
        for (doomed_set, doomed_key), _ in doomed.items():
            for lookup, referrer, row in self._referrers(doomed_set, doomed_key):
                if lookup.on_delete == "remove_link":
                    row.values = {**row.values, lookup.value_field: None}
                    row.targets.pop(lookup.attribute, None)
                    self.store.note_change(referrer, str(row.values[self._key_of(referrer)]))
        for doomed_set, doomed_key in doomed:
            self.store.tables[doomed_set].rows.pop(doomed_key, None)
            self.store.note_change(doomed_set, doomed_key, deleted=True)

    # ------------------------------------------------------------ references

    def _key_of(self, entity_set: str) -> str:
        return self.store.tables[entity_set].spec.entity.key

    def _referrers(self, entity_set: str, key: str) -> list[tuple[Lookup, str, Stored]]:
        """Rows whose writable lookup points at ``entity_set(key)``."""
        found = []
        for name, table in self.store.tables.items():
            for lookup in table.spec.entity.lookups.values():
                if not lookup.writable or lookup.target_for_set(entity_set) is None:
                    continue
                for row in table.rows.values():
                    if row.values.get(lookup.value_field) != key:
                        continue
                    if lookup.polymorphic and row.targets.get(lookup.attribute) != entity_set:
                        continue
                    found.append((lookup, name, row))
        return found

    def _cascade(self, entity_set: str, key: str) -> dict[tuple[str, str], None]:
        """The row and every row an ``on_delete="cascade"`` lookup deletes with it."""
        doomed: dict[tuple[str, str], None] = {(entity_set, key): None}
        pending = [(entity_set, key)]
        while pending:
            current = pending.pop()
            for lookup, referrer, row in self._referrers(*current):
                if lookup.on_delete != "cascade":
                    continue
                item = (referrer, str(row.values[self._key_of(referrer)]))
                if item not in doomed:
                    doomed[item] = None
                    pending.append(item)
        return doomed


def _same(held: FieldValue, wanted: FieldValue) -> bool:
    """Equality as Dataverse's collation sees it: text without regard to case."""
    if isinstance(held, str) and isinstance(wanted, str):
        return held.lower() == wanted.lower()
    return held == wanted
