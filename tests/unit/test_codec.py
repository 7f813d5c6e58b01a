"""The Avro single-object codec: versions told apart, bad input named."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastavro import schemaless_writer
from hypothesis import given
from hypothesis import strategies as st

from tablesync.adapters.avro import Codec, SchemaRegistry, default_schema_dir
from tablesync.adapters.avro.codec import MAGIC
from tablesync.core.events import JobStarted, RecordChanged
from tablesync.errors import DecodeError

CODEC = Codec()
NOW = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)


def _changed(**fields: object) -> RecordChanged:
    return RecordChanged(
        side="bc",
        table="customers",
        record_id="5d115c9c-44e3-ea11-bb43-000d3a2feca1",
        op="upsert",
        modified_at=NOW,
        captured_at=NOW,
        fields=dict(fields),  # type: ignore[arg-type]
    )


def test_header_is_the_single_object_marker_and_the_schema_fingerprint() -> None:
    data = CODEC.encode(_changed(name="x"))
    entry = CODEC.registry.newest("RecordChanged")
    assert data[:2] == MAGIC == b"\xc3\x01"
    assert data[2:10] == entry.fingerprint


def test_corrupted_body_raises_decode_error_with_reason() -> None:
    data = bytearray(CODEC.encode(_changed(name="Adatum")))
    data[12:] = b"\xff" * (len(data) - 12)
    with pytest.raises(DecodeError, match="RecordChanged v1: undecodable body"):
        CODEC.decode(bytes(data))


def test_truncated_and_padded_messages_are_refused() -> None:
    data = CODEC.encode(_changed(name="Adatum"))
    with pytest.raises(DecodeError, match="undecodable body"):
        CODEC.decode(data[:-3])
    with pytest.raises(DecodeError, match="trailing bytes"):
        CODEC.decode(data + b"\x00")


def test_missing_marker_is_refused() -> None:
    with pytest.raises(DecodeError, match="missing the C3 01 marker"):
        CODEC.decode(b'{"json": "not avro"}')
    with pytest.raises(DecodeError, match="missing the C3 01 marker"):
        CODEC.decode(b"")


def test_unknown_fingerprint_is_named() -> None:
    data = MAGIC + bytes.fromhex("0102030405060708") + b"\x00"
    with pytest.raises(DecodeError, match="unknown schema fingerprint 0102030405060708"):
        CODEC.decode(data)


def test_missing_required_field_is_named(tmp_path: Path) -> None:
    # An older writer that lacked `kind`, read by the current schema, where
    # `kind` has no default: the reader cannot fill it in.
    shutil.copy(default_schema_dir() / "JobStarted.v1.avsc", tmp_path / "JobStarted.v2.avsc")
    older = json.loads((default_schema_dir() / "JobStarted.v1.avsc").read_text())
    older["fields"] = [f for f in older["fields"] if f["name"] != "kind"]
    (tmp_path / "JobStarted.v1.avsc").write_text(json.dumps(older))
    registry = SchemaRegistry.load(tmp_path)
    v1 = registry.versions("JobStarted")[0]
    buf = io.BytesIO()
    buf.write(MAGIC + v1.fingerprint)
    schemaless_writer(
        buf,
        v1.parsed,
        {
            "job_id": "j",
            "run_id": None,
            "mapping": "M",
            "direction": "to_integration",
            "started_at": NOW,
        },
    )
    with pytest.raises(DecodeError, match="kind"):
        Codec(registry).decode(buf.getvalue())


def test_older_version_is_read_with_the_newest_reader(tmp_path: Path) -> None:
    shutil.copy(default_schema_dir() / "JobStarted.v1.avsc", tmp_path / "JobStarted.v1.avsc")
    newer = json.loads((default_schema_dir() / "JobStarted.v1.avsc").read_text())
    newer["fields"].append({"name": "origin", "type": "string", "default": "cli"})
    (tmp_path / "JobStarted.v2.avsc").write_text(json.dumps(newer))
    old_codec = Codec(SchemaRegistry.load(default_schema_dir()))
    new_codec = Codec(SchemaRegistry.load(tmp_path))
    event = JobStarted("j", "CUSTOMER", "to_integration", "full", NOW)
    assert new_codec.decode(old_codec.encode(event)) == event


def test_encoding_an_invalid_value_is_refused() -> None:
    with pytest.raises(DecodeError, match="RecordChanged: cannot encode"):
        CODEC.encode(_changed(blob=object()))


field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    # Fields come from JSON APIs: JSON has no NaN or infinity.
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)


@given(st.dictionaries(st.text(max_size=20), field_values, max_size=20), st.binary(max_size=64))
def test_any_record_round_trips_and_any_bytes_decode_or_raise_decode_error(
    fields: dict[str, object], junk: bytes
) -> None:
    event = _changed(**fields)
    assert CODEC.decode(CODEC.encode(event)) == event
    for data in (junk, MAGIC + CODEC.encode(event)[2:10] + junk):
        with contextlib.suppress(DecodeError):
            CODEC.decode(data)
