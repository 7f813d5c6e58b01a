"""``tablesync mappings validate`` and ``mappings schema``: a file is checked
with no database or broker, each refusal names the file, the line and the
reason and exits 2; the JSON Schema editors use is the one the package ships,
and it holds the same file structure the loader does."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from tablesync.adapters.mapping_file import default_mapping_file, load_mapping_file
from tablesync.adapters.mapping_model import json_schema
from tablesync.cli.main import app
from tablesync.core.mapping_load import _FIELD_KEYS, _MAPPING_KEYS

DEFAULT = default_mapping_file().read_text()

# Nothing answers on these: a command that tried the state database or the
# broker would fail.
NO_SERVERS = {
    "TABLESYNC_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
    "TABLESYNC_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
}


def _validate(path: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["mappings", "validate", str(path)], env=NO_SERVERS)
    return result.exit_code, result.stdout, result.stderr


def _line_of(text: str, needle: str) -> int:
    return next(i for i, row in enumerate(text.splitlines(), 1) if needle in row)


def test_the_default_mappings_are_valid_without_database_or_broker(tmp_path: Path) -> None:
    path = tmp_path / "mappings.yaml"
    path.write_text(DEFAULT)
    code, out, err = _validate(path)
    assert code == 0, err
    _, mappings = load_mapping_file(default_mapping_file())
    names = mappings.names()
    assert f"{path}: {len(names)} valid mappings: {' -> '.join(names)}" in out


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        pytest.param(
            "    bc_key: number\n    match:\n      - {bc: number, dataverse: accountnumber}\n"
            "    update_conflict: send_to_integration",
            "    bc_key: number\n    colour: blue\n    match:\n"
            "      - {bc: number, dataverse: accountnumber}\n"
            "    update_conflict: send_to_integration",
            "CUSTOMER.colour: unknown key 'colour' (known: bc_table, dataverse_table",
            id="unknown key",
        ),
        pytest.param(
            "{bc: city, dataverse: address1_city, max_length: 30}",
            "{bc: town, dataverse: address1_city, max_length: 30}",
            "VENDOR.town<->address1_city: 'town' is not a field of vendors",
            id="unknown field",
        ),
        pytest.param(
            "table_filter: \"blocked eq ' '\"",
            "table_filter: \"blocked eq ' ' and\"",
            "CUSTOMER.table_filter: table_filter: ",
            id="bad filter",
        ),
        pytest.param(
            "lookup: SALESPEOPLE, direction: to_integration,",
            "lookup: SALESMEN, direction: to_integration,",
            "CUSTOMER.salespersonCode<->ownerid: lookup through unknown mapping 'SALESMEN'",
            id="lookup without its target mapping",
        ),
    ],
)
def test_validate_refuses_with_file_line_and_reason(
    tmp_path: Path, old: str, new: str, reason: str
) -> None:
    assert old in DEFAULT
    text = DEFAULT.replace(old, new, 1)
    path = tmp_path / "mappings.yaml"
    path.write_text(text)
    changed = next(row for row in new.splitlines() if row not in old.splitlines())
    line = _line_of(text, changed.strip())

    code, out, err = _validate(path)

    assert code == 2, out
    assert f"{path}:{line}: {reason}" in err, err
    assert out == ""


def test_a_bad_filter_says_where_in_the_expression(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(DEFAULT.replace("\"blocked eq ' '\"", "\"blocked eq ' ' and\"", 1))
    code, _, err = _validate(path)
    assert code == 2
    assert "position 18" in err


def test_every_structural_problem_is_listed_in_line_order(tmp_path: Path) -> None:
    text = DEFAULT.replace(
        "    direction: bidirectional\n", "    direction: sideways\n", 1
    ).replace(
        "{bc: website, dataverse: websiteurl, max_length: 80}",
        "{bc: website, dataverse: websiteurl, max_length: '80', colour: red}",
        1,
    )
    path = tmp_path / "m.yaml"
    path.write_text(text)
    code, _, err = _validate(path)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert lines[0].startswith(f"{path}:{_line_of(text, 'direction: sideways')}: VENDOR.direction")
    website = _line_of(text, "bc: website")
    assert (
        f"{path}:{website}: VENDOR.website<->websiteurl: max_length: expected a valid integer"
        in err
    )
    assert f"{path}:{website}: VENDOR.website<->websiteurl: unknown key 'colour'" in err


def test_unreadable_and_non_yaml_files_exit_2(tmp_path: Path) -> None:
    code, _, err = _validate(tmp_path / "missing.yaml")
    assert code == 2 and "cannot read" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("mappings:\n  CURRENCY: [\n")
    code, _, err = _validate(broken)
    assert code == 2 and f"{broken}:3: not valid YAML" in err


def test_schema_is_printed_and_shipped_beside_the_default_mappings() -> None:
    result = CliRunner().invoke(app, ["mappings", "schema"], env=NO_SERVERS)
    assert result.exit_code == 0
    printed = json.loads(result.stdout)
    assert printed == json_schema()
    shipped = json.loads((default_mapping_file().parent / "schema.json").read_text())
    assert shipped == printed, "regenerate with: tablesync mappings schema > .../schema.json"
    assert DEFAULT.startswith("# yaml-language-server: $schema=schema.json\n")


def test_schema_accepts_the_defaults_and_refuses_what_validate_refuses() -> None:
    validator = jsonschema.Draft202012Validator(json_schema())
    document = yaml.safe_load(DEFAULT)
    assert not list(validator.iter_errors(document))
    document["mappings"]["CUSTOMER"]["colour"] = "blue"
    document["mappings"]["CURRENCY"]["fields"][0]["colour"] = "red"
    document["mappings"]["VENDOR"]["bc_table"] = "clients"
    document["mappings"]["CONTACTS"]["direction"] = "sideways"
    paths = {tuple(e.absolute_path) for e in validator.iter_errors(document)}
    assert paths == {
        ("mappings", "CUSTOMER"),
        ("mappings", "CURRENCY", "fields", 0),
        ("mappings", "VENDOR", "bc_table"),
        ("mappings", "CONTACTS", "direction"),
    }


def test_the_schema_has_the_keys_the_loader_knows() -> None:
    schema = json_schema()
    assert set(schema["$defs"]["TableMappingModel"]["properties"]) == _MAPPING_KEYS
    assert set(schema["$defs"]["FieldMappingModel"]["properties"]) == _FIELD_KEYS


def test_the_shipped_defaults_are_printed_to_start_a_file_from() -> None:
    result = CliRunner().invoke(app, ["mappings", "default"], env=NO_SERVERS)
    assert result.exit_code == 0
    assert result.stdout == DEFAULT
