"""A Dataverse write body split into column values and lookup binds, and turned into the
assignments of one statement.

Lookups are written through their navigation property ("Associate table rows on create",
"Associate and disassociate tables on update"):

- ``"<nav>@odata.bind": "/<set>(<id>)"`` (or ``<set>(<id>)``, a full URL, an alternate key
  ``/<set>(<key>='<value>')``, or ``$<Content-ID>`` inside a change set) sets it;
- ``"<nav>@odata.bind": null`` or ``"<nav>": null`` clears it.

The read-only ``_<attr>_value`` property is refused, as Dataverse refuses it. A bind to a
row that does not exist fails the statement with ``ObjectDoesNotExist`` (404).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tablesync.core.catalog import Lookup, LookupTarget
from tablesync.emulators.common.payload import convert_properties
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import Params, TableSpec, ident, sql_type, target_column
from tablesync.emulators.common.writes import Assign, Current
from tablesync.emulators.dataverse.keys import KeyRef, parse_key, parse_reference
from tablesync.emulators.dataverse.specs import BASE_CURRENCY_SQL, spec_for

__all__ = [
    "DUPLICATE_MESSAGE",
    "Bind",
    "Body",
    "check_body_key",
    "key_differs",
    "missing_required",
    "required_problem",
    "split_body",
    "with_key",
    "without_key",
    "write_assigns",
]

_BIND = "@odata.bind"
DUPLICATE_MESSAGE = "A record with matching key values already exists."


@dataclass(frozen=True, slots=True)
class Bind:
    lookup: Lookup
    target: LookupTarget | None
    """None clears the lookup."""
    key: KeyRef | None


@dataclass(frozen=True, slots=True)
class Body:
    values: dict[str, object]
    binds: dict[str, Bind]
    """By lookup attribute."""


def _reference(
    spec: TableSpec, lookup: Lookup, target: LookupTarget, raw: object, refs: Mapping[str, str]
) -> KeyRef:
    if not isinstance(raw, str):
        raise ApiProblem(
            Kind.BAD_VALUE,
            f"The value of '{target.navigation}{_BIND}' must be an entity reference such as "
            f"'/{target.entity_set}(<id>)'.",
        )
    entity_set, key_text = parse_reference(raw, refs)
    if entity_set != target.entity_set:
        raise ApiProblem(
            Kind.BAD_VALUE,
            f"'{target.navigation}{_BIND}' must reference {target.entity_set}, not {entity_set}.",
        )
    target_spec = spec_for(entity_set)
    if target_spec is None:
        raise ApiProblem(Kind.NO_RESOURCE, f"Resource not found for the segment '{entity_set}'.")
    return parse_key(target_spec, key_text)


def split_body(spec: TableSpec, body: Mapping[str, object], refs: Mapping[str, str]) -> Body:
    """The body's values (converted) and binds; ApiProblem naming any bad property."""
    entity = spec.entity
    plain: dict[str, object] = {}
    binds: dict[str, Bind] = {}
    for name, raw in body.items():
        navigation = name[: -len(_BIND)] if name.endswith(_BIND) else None
        if navigation is None and raw is None and entity.lookup_for_navigation(name):
            navigation = name
        if navigation is not None:
            found = entity.lookup_for_navigation(navigation)
            if found is None:
                raise ApiProblem(
                    Kind.UNKNOWN_PROPERTY,
                    f"An undeclared property '{navigation}' which only has property annotations "
                    f"in the payload but no property value was found on type '{spec.type_name}'.",
                )
            lookup, target = found
            if not lookup.writable:
                raise ApiProblem(Kind.READ_ONLY, f"The lookup '{lookup.attribute}' is read-only.")
            if raw is None:
                binds[lookup.attribute] = Bind(lookup, None, None)
            else:
                key = _reference(spec, lookup, target, raw, refs)
                binds[lookup.attribute] = Bind(lookup, target, key)
            continue
        field = entity.fields.get(name)
        if field is not None and field.lookup is not None:
            raise ApiProblem(
                Kind.READ_ONLY,
                f"CRM do not support direct update of Entity Reference properties, Use "
                f"Navigation properties instead ('{name}').",
            )
        plain[name] = raw
    values = convert_properties(spec, plain, writable_read_only=(entity.key,))
    return Body(values, binds)


def required_problem(spec: TableSpec, missing: list[str]) -> ApiProblem:
    return ApiProblem(
        Kind.REQUIRED,
        f"Required field '{missing[0]}' is missing: {spec.entity.logical_name} cannot be "
        "created without it.",
    )


def missing_required(spec: TableSpec, body: Body) -> list[str]:
    """The required fields a create with ``body`` would leave empty."""
    return [
        f.name
        for f in spec.entity.fields.values()
        if f.required and body.values.get(f.name) is None
    ]


def check_body_key(key: KeyRef, body: Body) -> None:
    """Refuses a body whose primary key is not the one that addresses the row."""
    given = body.values.get(key.spec.entity.key)
    if given is not None and key.id is not None and given != key.id:
        raise ApiProblem(
            Kind.BAD_VALUE,
            f"The key in the payload ({given}) differs from the key in the URL ({key.id}).",
        )


def with_key(key: KeyRef, body: Body) -> Body:
    """The body of a create at ``key``: the key's values unless the body has its own."""
    values = dict(body.values)
    if key.id is not None:
        values.setdefault(key.spec.entity.key, key.id)
    for field, value in key.alternate:
        values.setdefault(field.name, value)
    return Body(values, body.binds)


def without_key(key: KeyRef, body: Body) -> Body:
    """``body`` without the alternate key's columns."""
    names = {f.name for f, _ in key.alternate}
    return Body({k: v for k, v in body.values.items() if k not in names}, body.binds)


def key_differs(key: KeyRef, body: Body) -> bool:
    """Whether ``body`` moves the row to other alternate key values than ``key`` names."""
    return any(
        field.name in body.values and body.values[field.name] != value
        for field, value in key.alternate
    )


def _bind_expr(bind: Bind, params: Params) -> str:
    key = bind.key
    target = bind.target
    assert key is not None and target is not None
    target_spec = key.spec
    table = target_spec.table
    pk = ident(target_spec.entity.key)
    fail = f"ts_raise('relation', {params.add(key.describe(), 'text')})::uuid"
    if key.id is not None:
        value = params.add(key.id, "uuid")
        exists = f"EXISTS (SELECT 1 FROM {table} WHERE {pk} = {value})"
        return f"CASE WHEN {exists} THEN {value} ELSE {fail} END"
    where = key.predicate(params)
    return f"COALESCE((SELECT {pk} FROM {table} WHERE {where}), {fail})"


def _bind_assigns(bind: Bind, params: Params) -> list[Assign]:
    lookup = bind.lookup
    value = None if bind.target is None else _bind_expr(bind, params)
    if not lookup.polymorphic:
        return [Assign(lookup.value_field, value or "NULL")]
    assigns = []
    for target in lookup.targets:
        chosen = bind.target is not None and target.entity_set == bind.target.entity_set
        assigns.append(
            Assign(target_column(lookup, target.entity_set), value if chosen and value else "NULL")
        )
    return assigns


def _computed(
    spec: TableSpec, name: str, sources: tuple[str, ...], given: Mapping[str, str]
) -> Assign:
    def render(current: Current) -> str:
        parts = ", ".join(f"NULLIF({given.get(s) or current(s)}, '')" for s in sources)
        return f"NULLIF(concat_ws(' ', {parts}), '')"

    return Assign(name, render)


def write_assigns(
    spec: TableSpec, body: Body, params: Params, caller: str, *, creating: bool
) -> list[Assign]:
    """The assignments of a create (``creating``) or of an update / upsert.

    ``caller`` is the placeholder of the calling user's id. Assignments that only a create
    makes (``createdon``, ``createdby``, defaults) are marked ``on_update=False`` so one
    list serves both arms of an upsert.
    """
    entity = spec.entity
    placeholders = {
        name: params.add(value, sql_type(entity.fields[name]))
        for name, value in body.values.items()
    }
    assigns = [Assign(name, placeholder) for name, placeholder in placeholders.items()]
    for bind in body.binds.values():
        assigns.extend(_bind_assigns(bind, params))
    for field in entity.fields.values():
        if field.computed_from and (creating or set(field.computed_from) & set(placeholders)):
            assigns.append(_computed(spec, field.name, field.computed_from, placeholders))
    for lookup in entity.lookups.values():
        if lookup.attribute in body.binds or lookup.default is None or lookup.polymorphic:
            continue
        if lookup.attribute == "modifiedby":
            assigns.append(Assign(lookup.value_field, caller))
        elif lookup.default == "caller":
            assigns.append(Assign(lookup.value_field, caller, on_update=False))
        else:
            assigns.append(Assign(lookup.value_field, f"({BASE_CURRENCY_SQL})", on_update=False))
    stamp = spec.stamp_expr()
    assigns.append(Assign("createdon", stamp, on_update=False))
    assigns.append(Assign("modifiedon", stamp))
    assigns.append(Assign("versionnumber", "nextval('ts_version')"))
    return assigns
