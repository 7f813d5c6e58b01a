"""Mapping documents: the defaults load in dependency order; every invalid
mapping is refused with a message naming the mapping, field and line."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tablesync.adapters.mapping_file import (
    default_mapping_file,
    load_mapping_file,
    parse_mapping_text,
)
from tablesync.core.mapping_load import build_mappings, catalog_tables
from tablesync.errors import MappingError

DEFAULT = default_mapping_file()
BC_FIVE = ("CURRENCY", "SALESPEOPLE", "VENDOR", "CUSTOMER", "CONTACTS")


def _doc() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT.read_text())
    return data


def _refused(doc: dict[str, Any]) -> MappingError:
    with pytest.raises(MappingError) as info:
        build_mappings(doc, catalog_tables())
    return info.value


def test_defaults_load_in_bc_dependency_order() -> None:
    _, mappings = load_mapping_file(DEFAULT)
    names = mappings.names()
    assert [n for n in names if n in BC_FIVE] == list(BC_FIVE)
    # Each new mapping where its lookups put it.
    assert names.index("UNIT_OF_MEASURE") < names.index("BASE_UNIT") < names.index("ITEM_PRODUCT")
    assert names == (*BC_FIVE, "UNIT_OF_MEASURE", "BASE_UNIT", "ITEM_PRODUCT")
    customer = mappings.get("CUSTOMER")
    pairs = {(f.bc, f.dataverse) for f in customer.fields}
    for bc, dv in [
        ("number", "accountnumber"),
        ("displayName", "name"),
        ("addressLine1", "address1_line1"),
        ("city", "address1_city"),
        ("postalCode", "address1_postalcode"),
        ("country", "address1_country"),
        ("phoneNumber", "telephone1"),
        ("email", "emailaddress1"),
        ("website", "websiteurl"),
        ("currencyCode", "transactioncurrencyid"),
        ("salespersonCode", "ownerid"),
        (None, "customertypecode"),
    ]:
        assert (bc, dv) in pairs
    assert customer.direction == "bidirectional"
    assert mappings.get("CURRENCY").direction == "to_integration"
    assert mappings.get("SALESPEOPLE").direction == "from_integration"


def test_unknown_field_names_mapping_field_and_line() -> None:
    text = DEFAULT.read_text().replace(
        "{bc: city, dataverse: address1_city, max_length: 30}",
        "{bc: town, dataverse: address1_city, max_length: 30}",
        1,
    )
    with pytest.raises(MappingError) as info:
        parse_mapping_text(text, source="m.yaml")
    message = str(info.value)
    assert "'town' is not a field of vendors" in message
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "bc: town" in row)
    assert f"m.yaml:{line}" in message
    assert info.value.mapping == "VENDOR"


def test_bad_filter_names_the_position() -> None:
    doc = _doc()
    doc["mappings"]["CUSTOMER"]["table_filter"] = "blocked eq ' ' and"
    error = _refused(doc)
    assert error.mapping == "CUSTOMER" and error.field == "table_filter"
    assert "position 18" in str(error)


def test_filter_on_unknown_property_is_refused() -> None:
    doc = _doc()
    doc["mappings"]["CUSTOMER"]["integration_table_filter"] = "statuscode eq 0 and nmae eq 'x'"
    error = _refused(doc)
    assert "nmae" in str(error) and error.field == "integration_table_filter"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["mappings"]["CUSTOMER"].update(direction="sideways"),
            "direction must be one of",
        ),
        (
            lambda d: d["mappings"]["CUSTOMER"].update(bc_table="clients"),
            "unknown Business Central entity set 'clients'",
        ),
        (lambda d: d["mappings"]["CUSTOMER"].update(depends_on=["CONTACTS"]), "cycle"),
        (lambda d: d["mappings"]["CUSTOMER"].update(depends_on=["NOPE"]), "unknown mapping 'NOPE'"),
        (
            lambda d: d["mappings"]["CUSTOMER"].update(update_conflict="coin"),
            "update_conflict must be one of",
        ),
        (lambda d: d["mappings"]["CUSTOMER"].update(deletion="shred"), "deletion must be one of"),
        (lambda d: d["mappings"]["CUSTOMER"].update(colour="blue"), "unknown key(s) colour"),
        (lambda d: d["mappings"]["CUSTOMER"].update(fields=[]), "fields is a non-empty list"),
        (lambda d: d["mappings"]["CURRENCY"].update(depends_on=["CUSTOMER"]), "cycle"),
    ],
)
def test_invalid_mapping_is_refused(change: Any, expected: str) -> None:
    doc = copy.deepcopy(_doc())
    change(doc)
    assert expected in str(_refused(doc))


def test_lookups_place_a_mapping_without_depends_on() -> None:
    doc = copy.deepcopy(_doc())
    for body in doc["mappings"].values():
        body.pop("depends_on", None)
    names = build_mappings(doc, catalog_tables()).names()
    assert names.index("CONTACTS") > max(names.index("CUSTOMER"), names.index("VENDOR"))
    assert names.index("CUSTOMER") > max(names.index("CURRENCY"), names.index("SALESPEOPLE"))


def test_a_lookup_cycle_is_refused_naming_it() -> None:
    doc = copy.deepcopy(_doc())
    doc["mappings"]["CURRENCY"]["depends_on"] = ["CONTACTS"]
    assert "CURRENCY -> CONTACTS -> CUSTOMER -> CURRENCY" in str(_refused(doc))


def _customer_field(doc: dict[str, Any], **field: Any) -> MappingError:
    doc["mappings"]["CUSTOMER"]["fields"].append(field)
    return _refused(doc)


def test_field_rules() -> None:
    assert "read-only" in str(
        _customer_field(
            _doc(), bc="balanceDue", dataverse="creditlimit", direction="from_integration"
        )
    )
    assert "is a lookup" in str(
        _customer_field(_doc(), bc="currencyCode", dataverse="transactioncurrencyid")
    )
    assert "exactly one field" in str(
        _customer_field(_doc(), bc="city", dataverse="name", constant="x")
    )
    assert "never applies" in str(_refused(_set_direction(_doc(), "CURRENCY", "from_integration")))
    assert "one-to-one" in str(
        _customer_field(
            _doc(), bc="type", dataverse="fax", option_map={"Company": "x", "Person": "x"}
        )
    )
    assert "max_length is a positive integer" in str(
        _customer_field(_doc(), bc="city", dataverse="fax", max_length=0)
    )


def _set_direction(doc: dict[str, Any], mapping: str, direction: str) -> dict[str, Any]:
    doc["mappings"][mapping]["fields"][0]["direction"] = direction
    return doc


def test_no_mappings_is_refused() -> None:
    assert "non-empty 'mappings'" in str(_refused({"mappings": {}}))
    with pytest.raises(MappingError, match="not valid YAML"):
        parse_mapping_text("mappings: [", source="x.yaml")


def test_match_fields_take_a_priority_of_zero_or_more() -> None:
    doc = _doc()
    doc["mappings"]["CUSTOMER"]["match"] = [
        {"bc": "number", "dataverse": "accountnumber", "priority": 1},
        {"bc": "displayName", "dataverse": "name", "priority": 2, "case_sensitive": True},
    ]
    match = build_mappings(copy.deepcopy(doc), catalog_tables()).get("CUSTOMER").match
    assert [(m.bc, m.priority, m.case_sensitive) for m in match] == [
        ("number", 1, False),
        ("displayName", 2, True),
    ]
    for wrong in (-1, "1", True, 1.5):
        doc["mappings"]["CUSTOMER"]["match"][1]["priority"] = wrong
        error = _refused(copy.deepcopy(doc))
        assert "match priority is a whole number" in str(error)
        assert error.path[-1] == "priority"


def _name_field(doc: dict[str, Any], **options: Any) -> int:
    """Gives CUSTOMER's displayName <-> name mapping ``options``; its index."""
    fields = doc["mappings"]["CUSTOMER"]["fields"]
    (at,) = [i for i, f in enumerate(fields) if f.get("bc") == "displayName"]
    fields[at].update(options)
    return int(at)


@pytest.mark.parametrize(
    ("options", "path", "says"),
    [
        (
            {
                "transformation_rules": ["trim", "shout"],
                "transformation_direction": "to_integration",
            },
            ("transformation_rules", 1, "type"),
            "transformation_rules[1]: unknown transformation rule 'shout'",
        ),
        (
            {
                "transformation_rules": [{"type": "regex_replace", "pattern": "[a-"}],
                "transformation_direction": "to_integration",
            },
            ("transformation_rules", 0, "pattern"),
            "transformation_rules[0]: pattern '[a-' is not a regular expression",
        ),
        (
            {
                "transformation_rules": [{"type": "substring", "start": -2}],
                "transformation_direction": "to_integration",
            },
            ("transformation_rules", 0, "start"),
            "start is a whole number, 1 or more; got -2",
        ),
        (
            {
                "transformation_rules": [{"type": "lookup_table", "pairs": ["US", "USA"]}],
                "transformation_direction": "to_integration",
            },
            ("transformation_rules", 0, "pairs"),
            "pairs is a list of [value, becomes] pairs",
        ),
        (
            {"transformation_rules": "uppercase", "transformation_direction": "to_integration"},
            ("transformation_rules",),
            "transformation_rules is a list of rules",
        ),
        (
            {"transformation_rules": ["uppercase"]},
            ("transformation_direction",),
            "a bidirectional field applies its transformation_rules one way only",
        ),
        (
            {"transformation_rules": ["uppercase"], "transformation_direction": "sideways"},
            ("transformation_direction",),
            "transformation_direction must be one of to_integration, from_integration",
        ),
        (
            {
                "direction": "to_integration",
                "transformation_rules": ["uppercase"],
                "transformation_direction": "from_integration",
            },
            ("transformation_direction",),
            "its rules would never apply",
        ),
        (
            {"transformation_direction": "to_integration"},
            ("transformation_direction",),
            "transformation_direction only applies with transformation_rules",
        ),
        ({"enabled": "no"}, ("enabled",), "enabled is true or false"),
        ({"not_null": 1}, ("not_null",), "not_null is true or false"),
    ],
)
def test_a_bad_field_option_names_mapping_field_and_rule(
    options: dict[str, Any], path: tuple[str | int, ...], says: str
) -> None:
    doc = _doc()
    at = _name_field(doc, **options)
    error = _refused(doc)
    assert error.mapping == "CUSTOMER" and error.field == "displayName<->name"
    assert error.path == ("mappings", "CUSTOMER", "fields", at, *path)
    assert says in str(error)
    assert str(error).startswith("CUSTOMER.displayName<->name: ")


def test_rules_on_a_constant_or_a_lookup_are_refused() -> None:
    doc = _doc()
    fields = doc["mappings"]["CUSTOMER"]["fields"]
    (constant,) = [i for i, f in enumerate(fields) if f.get("dataverse") == "customertypecode"]
    fields[constant]["transformation_rules"] = ["trim"]
    assert "a constant is written as it is" in str(_refused(doc))
    doc = _doc()
    fields = doc["mappings"]["CUSTOMER"]["fields"]
    (lookup,) = [i for i, f in enumerate(fields) if f.get("bc") == "currencyCode"]
    fields[lookup].update(transformation_rules=["trim"], transformation_direction="to_integration")
    assert "a lookup's value is a reference" in str(_refused(doc))


def test_a_one_way_field_applies_its_rules_its_own_way() -> None:
    doc = _doc()
    _name_field(doc, direction="from_integration", transformation_rules=["title_case"])
    name = next(
        f
        for f in build_mappings(doc, catalog_tables()).get("CUSTOMER").fields
        if f.bc == "displayName"
    )
    assert name.transform.rules_direction == "from_integration"
    assert name.enabled


def test_a_bad_rule_in_a_file_names_its_line() -> None:
    text = DEFAULT.read_text().replace(
        "      - {bc: displayName, dataverse: name, max_length: 100}\n      - {bc: addressLine1",
        "      - bc: displayName\n"
        "        dataverse: name\n"
        "        transformation_direction: to_integration\n"
        "        transformation_rules:\n"
        "          - trim\n"
        "          - {type: regex_replace, pattern: '(unclosed'}\n"
        "      - {bc: addressLine1",
        1,
    )
    assert "(unclosed" in text
    with pytest.raises(MappingError) as info:
        parse_mapping_text(text, source="m.yaml")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "(unclosed" in row)
    assert f"m.yaml:{line}" in str(info.value)
    assert "is not a regular expression" in str(info.value)


def test_a_match_on_a_disabled_field_mapping_is_refused() -> None:
    doc = _doc()
    match = doc["mappings"]["CUSTOMER"]["match"]
    match.append({"bc": "displayName", "dataverse": "name"})
    at = len(match) - 1
    _name_field(doc, enabled=False)
    error = _refused(doc)
    assert error.path == ("mappings", "CUSTOMER", "match", at)
    assert "match field displayName=name is a disabled field mapping's pair" in str(error)
