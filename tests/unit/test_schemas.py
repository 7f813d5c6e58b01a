"""Every schema version: examples round-trip, and each version stays readable
by and of its predecessor (sentry-kafka-schemas style)."""

from __future__ import annotations

import copy
import io
import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer

from tablesync.adapters.avro import Codec, SchemaRegistry
from tablesync.adapters.avro.codec import _from_record
from tablesync.adapters.avro.compat import compatibility_problems

SCHEMAS = Path(__file__).resolve().parents[2] / "services" / "tablesync" / "schemas"
REGISTRY = SchemaRegistry.load(SCHEMAS / "avro")
CODEC = Codec(REGISTRY)


def _timestamp_fields(schema: dict[str, Any]) -> set[str]:
    found = set()
    for f in schema["fields"]:
        types = f["type"] if isinstance(f["type"], list) else [f["type"]]
        if any(isinstance(t, dict) and t.get("logicalType") == "timestamp-micros" for t in types):
            found.add(f["name"])
    return found


def _example_record(raw_schema: dict[str, Any], path: Path) -> dict[str, Any]:
    record = json.loads(path.read_text())
    for name in _timestamp_fields(raw_schema):
        if record.get(name) is not None:
            record[name] = datetime.fromisoformat(record[name])
    return record


def _examples() -> list[tuple[str, int, Path]]:
    found = []
    for entry in REGISTRY.entries:
        directory = SCHEMAS / "examples" / entry.name / f"v{entry.version}"
        found.extend((entry.name, entry.version, p) for p in sorted(directory.glob("*.json")))
    return found


def _raw(name: str, version: int) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SCHEMAS / "avro" / f"{name}.v{version}.avsc").read_text())
    return data


def test_every_schema_has_an_example() -> None:
    named = {(n, v) for n, v, _ in _examples()}
    missing = [(e.name, e.version) for e in REGISTRY.entries if (e.name, e.version) not in named]
    assert not missing, f"schemas without an example: {missing}"


def test_every_schema_is_listed_on_a_topic() -> None:
    listed = "\n".join(p.read_text() for p in (SCHEMAS / "topics").glob("*.yaml"))
    unlisted = [e.name for e in REGISTRY.entries if f"name: {e.name}," not in listed]
    assert not unlisted, f"schemas no topic declares: {unlisted}"


@pytest.mark.parametrize(("name", "version", "path"), _examples(), ids=str)
def test_example_round_trips(name: str, version: int, path: Path) -> None:
    record = _example_record(_raw(name, version), path)
    event = _from_record(name, record)
    assert CODEC.decode(CODEC.encode(event)) == event


@pytest.mark.parametrize(("name", "version", "path"), _examples(), ids=str)
def test_example_resolves_under_every_other_version(name: str, version: int, path: Path) -> None:
    writer = next(e for e in REGISTRY.versions(name) if e.version == version)
    record = CODEC.to_avro(_from_record(name, _example_record(_raw(name, version), path)))
    buf = io.BytesIO()
    schemaless_writer(buf, writer.parsed, record)
    for reader in REGISTRY.versions(name):
        buf.seek(0)
        schemaless_reader(buf, writer.parsed, reader.parsed)


@pytest.mark.parametrize("name", sorted({e.name for e in REGISTRY.entries}))
def test_each_version_is_compatible_with_its_predecessor(name: str) -> None:
    versions = [e.version for e in REGISTRY.versions(name)]
    assert versions == list(range(1, len(versions) + 1)), f"{name}: versions must be 1..N"
    for old, new in itertools.pairwise(versions):
        assert compatibility_problems(_raw(name, old), _raw(name, new)) == []


def test_a_field_added_without_default_is_caught() -> None:
    old = _raw("RecordChanged", 1)
    new = copy.deepcopy(old)
    new["fields"].append({"name": "tenant", "type": "string"})
    assert compatibility_problems(old, new) == ["field 'tenant' added without a default"]
    new["fields"][-1]["default"] = ""
    assert compatibility_problems(old, new) == []


def test_a_removed_required_field_and_a_narrowed_type_are_caught() -> None:
    old = _raw("JobFinished", 1)
    new = copy.deepcopy(old)
    new["fields"] = [f for f in new["fields"] if f["name"] != "job_id"]
    for f in new["fields"]:
        if f["name"] == "inserted":
            f["type"] = "int"
    problems = compatibility_problems(old, new)
    assert "field 'job_id' removed but had no default" in problems
    assert any("'inserted' changed type" in p for p in problems)


def test_schema_files_parse_with_fastavro() -> None:
    for entry in REGISTRY.entries:
        parse_schema(_raw(entry.name, entry.version))
