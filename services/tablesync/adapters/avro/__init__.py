"""Avro single-object encoding of tablesync's events."""

from tablesync.adapters.avro.codec import Codec, SchemaEntry, SchemaRegistry, default_schema_dir

__all__ = ["Codec", "SchemaEntry", "SchemaRegistry", "default_schema_dir"]
