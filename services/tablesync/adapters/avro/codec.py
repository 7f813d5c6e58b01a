"""Events to bytes and back with Avro single-object encoding.

Every message starts with the two marker bytes ``C3 01`` and the 8-byte
CRC-64-AVRO fingerprint of the writer's schema, so a reader can tell versions
apart without a schema registry service. The reader resolves every known
writer version against the newest version of the same record name, which is
how an old event stays readable after the schema grew a field."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, cast

import orjson
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, to_parsing_canonical_form

from tablesync.core import events
from tablesync.core.events import Event
from tablesync.errors import ConfigError, DecodeError

__all__ = ["MAGIC", "Codec", "SchemaEntry", "SchemaRegistry", "default_schema_dir"]

MAGIC = b"\xc3\x01"
_HEADER_LEN = len(MAGIC) + 8
_FILE_NAME = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\.v(?P<version>[1-9][0-9]*)\.avsc$")

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        events.RecordChanged,
        events.SnapshotEnd,
        events.FullSyncRequested,
        events.SyncModifiedRequested,
        events.SyncMappingRequested,
        events.SnapshotRequested,
        events.JobStarted,
        events.JobFinished,
        events.RecordFailed,
    )
}


_FIELD_NAMES: dict[str, tuple[str, ...]] = {
    name: tuple(f.name for f in dataclasses.fields(cls)) for name, cls in _EVENT_TYPES.items()
}


def default_schema_dir() -> Traversable:
    """``schemas/avro`` of the package (package data, so a wheel carries it)."""
    return files("tablesync") / "schemas" / "avro"


@dataclass(frozen=True, slots=True)
class SchemaEntry:
    name: str
    version: int
    fingerprint: bytes
    parsed: Any
    source: Traversable
    # Fields the schema declares ``"tablesync.json": true``: bytes holding a JSON object.
    json_fields: frozenset[str] = frozenset()


class SchemaRegistry:
    """Every ``<Name>.v<N>.avsc`` of a directory, by fingerprint and by name."""

    def __init__(self, entries: list[SchemaEntry]) -> None:
        self._by_fingerprint = {e.fingerprint: e for e in entries}
        self._newest: dict[str, SchemaEntry] = {}
        for entry in sorted(entries, key=lambda e: e.version):
            self._newest[entry.name] = entry
        self.entries = tuple(sorted(entries, key=lambda e: (e.name, e.version)))

    @classmethod
    def load(cls, directory: Traversable | None = None) -> SchemaRegistry:
        directory = directory or default_schema_dir()
        try:
            listed = sorted(directory.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            raise ConfigError(f"cannot list the Avro schemas in {directory}: {exc}") from exc
        entries = [load_schema_file(path) for path in listed if path.name.endswith(".avsc")]
        if not entries:
            raise ConfigError(f"no Avro schemas found in {directory}")
        return cls(entries)

    def by_fingerprint(self, fp: bytes) -> SchemaEntry | None:
        return self._by_fingerprint.get(fp)

    def newest(self, name: str) -> SchemaEntry:
        try:
            return self._newest[name]
        except KeyError:
            raise ConfigError(f"no schema named {name!r} is registered") from None

    def versions(self, name: str) -> list[SchemaEntry]:
        return [e for e in self.entries if e.name == name]


def load_schema_file(path: Traversable) -> SchemaEntry:
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise ConfigError(f"{path}: schema files are named <Name>.v<N>.avsc")
    try:
        raw = json.loads(path.read_text())
        parsed = parse_schema(raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a valid Avro schema: {exc}") from exc
    if raw.get("name") != match["name"]:
        raise ConfigError(f"{path}: record name {raw.get('name')!r} differs from the file name")
    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))
    json_fields = frozenset(f["name"] for f in raw["fields"] if f.get("tablesync.json"))
    return SchemaEntry(match["name"], int(match["version"]), fp, parsed, path, json_fields)


class Codec:
    """Encodes events with the newest schema of their name; decodes any registered version."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or SchemaRegistry.load()

    def to_avro(self, event: Event) -> dict[str, Any]:
        """The Avro record of an event, as the newest schema of its name writes it."""
        entry = self.registry.newest(type(event).__name__)
        record = _to_record(event)
        try:
            for name in entry.json_fields:
                record[name] = orjson.dumps(record[name])
        except TypeError as exc:
            raise DecodeError(f"{entry.name}: cannot encode {name}: {exc}") from exc
        return record

    def encode(self, event: Event) -> bytes:
        entry = self.registry.newest(type(event).__name__)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(entry.fingerprint)
        try:
            schemaless_writer(buf, entry.parsed, self.to_avro(event))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DecodeError(f"{entry.name}: cannot encode: {exc}") from exc
        return buf.getvalue()

    def decode(self, data: bytes) -> Event:
        if len(data) < _HEADER_LEN or data[: len(MAGIC)] != MAGIC:
            raise DecodeError("not an Avro single-object message: missing the C3 01 marker")
        fp = data[len(MAGIC) : _HEADER_LEN]
        writer = self.registry.by_fingerprint(fp)
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {fp.hex()}")
        reader = self.registry.newest(writer.name)
        body = io.BytesIO(data)
        body.seek(_HEADER_LEN)
        try:
            record = schemaless_reader(
                body, writer.parsed, None if reader is writer else reader.parsed
            )
        except Exception as exc:
            # fastavro signals corrupt input with whatever the byte stream
            # provoked (EOFError, UnicodeDecodeError, IndexError, resolution
            # errors...); callers need one exception type with the reason.
            raise DecodeError(
                f"{writer.name} v{writer.version}: undecodable body: {type(exc).__name__}: {exc}"
            ) from exc
        if body.tell() != len(data):
            raise DecodeError(
                f"{writer.name} v{writer.version}: {len(data) - body.tell()} trailing bytes"
            )
        values = cast(dict[str, Any], record)
        for name in reader.json_fields:
            values[name] = _json_object(writer, name, values.get(name))
        return _from_record(writer.name, values)


_SCALARS = frozenset({type(None), bool, int, float, str})


def _json_object(entry: SchemaEntry, name: str, raw: object) -> dict[str, Any]:
    try:
        value = orjson.loads(raw) if isinstance(raw, bytes | str) else None
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{entry.name} v{entry.version}: {name} is not JSON: {exc}") from exc
    # orjson makes values of exactly these types, so comparing types is the isinstance test.
    if not isinstance(value, dict) or not all(type(v) in _SCALARS for v in value.values()):
        raise DecodeError(f"{entry.name} v{entry.version}: {name} is not a JSON object of scalars")
    return value


def _field_names(cls: type[Any]) -> tuple[str, ...]:
    # dataclasses.fields() walks a class's fields on every call: the event
    # types' names are taken once.
    if _EVENT_TYPES.get(cls.__name__) is cls:
        return _FIELD_NAMES[cls.__name__]
    return tuple(f.name for f in dataclasses.fields(cls))


def _to_record(event: Event) -> dict[str, Any]:
    record: dict[str, Any] = {}
    for name in _field_names(type(event)):
        value = getattr(event, name)
        record[name] = list(value) if isinstance(value, tuple) else value
    return record


def _from_record(name: str, record: dict[str, Any]) -> Event:
    cls = _EVENT_TYPES.get(name)
    if cls is None:
        raise DecodeError(f"schema {name} has no event type in this build")
    kwargs = {}
    for field_name in _field_names(cls):
        if field_name not in record:
            continue
        value = record[field_name]
        kwargs[field_name] = tuple(value) if isinstance(value, list) else value
    try:
        return cast(Event, cls(**kwargs))
    except TypeError as exc:
        raise DecodeError(f"{name}: required field missing: {exc}") from exc
