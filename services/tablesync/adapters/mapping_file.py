"""Mapping documents from YAML files, with errors that name the line."""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from tablesync.core.mapping_load import build_mappings, catalog_tables
from tablesync.core.mappings import MappingSet
from tablesync.errors import MappingError

__all__ = [
    "configured_mapping_file",
    "default_mapping_file",
    "load_mapping_file",
    "parse_mapping_text",
]


def default_mapping_file() -> Traversable:
    """BC's default Dataverse mappings, shipped as package data."""
    return files("tablesync") / "mappings" / "default.yaml"


def configured_mapping_file(configured: Path | None) -> Path | Traversable:
    """The file ``TABLESYNC_SYNC__MAPPING_FILE`` names, or the shipped default."""
    return configured if configured is not None else default_mapping_file()


def load_mapping_file(path: Path | Traversable) -> tuple[dict[str, Any], MappingSet]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise MappingError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_mapping_text(text, source=str(path))


def parse_mapping_text(text: str, *, source: str = "<text>") -> tuple[dict[str, Any], MappingSet]:
    """The document and its validated mappings; a refusal names ``source`` and the line."""
    try:
        document = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise MappingError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise MappingError(f"{source}: expected a document with a 'mappings' section")
    try:
        return document, build_mappings(document, catalog_tables())
    except MappingError as exc:
        line = _line_of(node, exc.path)
        where = f"{source}:{line}" if line else source
        raise MappingError(
            f"{where}: {exc}", mapping=exc.mapping, field=exc.field, path=exc.path
        ) from exc


def _line_of(node: yaml.Node | None, path: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the deepest node of ``path`` that exists."""
    line = None
    for step in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        node = _child(node, step)
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _child(node: yaml.Node, step: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(step):
                found: yaml.Node = value
                return found
    if isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
        child: yaml.Node = node.value[step]
        return child
    return None
