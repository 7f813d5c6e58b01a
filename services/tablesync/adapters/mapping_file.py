"""Mapping documents from YAML files, with errors that name the file, the line and the reason."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from tablesync.adapters.mapping_model import (
    FieldMappingModel,
    MappingFileModel,
    MatchModel,
    TableMappingModel,
)
from tablesync.core.mapping_load import TableInfoSource, build_mappings, catalog_tables
from tablesync.core.mappings import MappingSet
from tablesync.errors import MappingError

__all__ = [
    "MappingFileInvalid",
    "MappingProblem",
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


def load_mapping_file(
    path: Path | Traversable, tables: TableInfoSource | None = None
) -> tuple[dict[str, Any], MappingSet]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise MappingError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_mapping_text(text, source=str(path), tables=tables)


def parse_mapping_text(
    text: str, *, source: str = "<text>", tables: TableInfoSource | None = None
) -> tuple[dict[str, Any], MappingSet]:
    """The document and its validated mappings, against ``tables`` (the built-in
    catalog by default; ``core.described`` adds what the services' metadata says).
    ``MappingFileInvalid`` lists every problem of the file's structure (keys,
    types, allowed words), or else the first one of its content (fields,
    filters, lookups, order), each with ``source``, the line and the reason."""
    try:
        document = yaml.safe_load(text)
        node = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise MappingFileInvalid(
            [MappingProblem(where, None, None, f"not valid YAML: {exc}", ())]
        ) from exc
    if not isinstance(document, dict):
        raise MappingFileInvalid(
            [
                MappingProblem(
                    source, None, None, "expected a document with a 'mappings' section", ()
                )
            ]
        )
    try:
        MappingFileModel.model_validate(document)
    except ValidationError as exc:
        raise MappingFileInvalid(_structure_problems(exc, document, node, source)) from exc
    try:
        return document, build_mappings(
            document, tables if tables is not None else catalog_tables()
        )
    except MappingError as exc:
        problem = MappingProblem(
            _where(source, node, exc.path), exc.mapping, exc.field, exc.reason, exc.path
        )
        raise MappingFileInvalid([problem]) from exc


@dataclass(frozen=True, slots=True)
class MappingProblem:
    """One thing wrong in a mappings file: where (``file:line``), in which
    mapping and field, and why."""

    where: str
    mapping: str | None
    field: str | None
    reason: str
    path: tuple[str | int, ...]

    def __str__(self) -> str:
        what = ".".join(p for p in (self.mapping, self.field) if p)
        return f"{self.where}: {what}: {self.reason}" if what else f"{self.where}: {self.reason}"


class MappingFileInvalid(MappingError):
    """A mappings file was refused; ``problems`` has each reason with its line."""

    def __init__(self, problems: list[MappingProblem]) -> None:
        first = problems[0]
        super().__init__(first.reason, mapping=first.mapping, field=first.field, path=first.path)
        self.args = ("\n".join(str(p) for p in problems),)
        self.problems = problems

    def __str__(self) -> str:
        return str(self.args[0])


def _where(source: str, node: yaml.Node | None, path: tuple[str | int, ...]) -> str:
    line = _line_of(node, path)
    return f"{source}:{line}" if line else source


def _structure_problems(
    exc: ValidationError, document: dict[str, Any], node: yaml.Node | None, source: str
) -> list[MappingProblem]:
    """pydantic's errors as problems of the document: one per place, the
    alternatives of a union tried there said together."""
    said: dict[tuple[str | int, ...], list[ErrorDetails]] = {}
    for error in exc.errors():
        path, tagged = _document_path(document, error)
        if tagged and error["loc"][-1] == "[key]":
            said.setdefault(path, []).append({**error, "type": "mapping_name"})
        else:
            said.setdefault(path, []).append(error)
    problems: list[MappingProblem] = []
    for path, errors in said.items():
        mapping = str(path[1]) if len(path) > 1 and path[0] == "mappings" else None
        problems.append(
            MappingProblem(
                _where(source, node, path),
                mapping,
                _field_label(document, path),
                _reason(errors, path),
                path,
            )
        )
    return sorted(problems, key=lambda p: _line_of(node, p.path) or 0)


def _document_path(document: Any, error: ErrorDetails) -> tuple[tuple[str | int, ...], bool]:
    """The part of pydantic's ``loc`` that names places in the document (the
    rest names union members or a dict's key); True when something was cut."""
    loc = error["loc"]
    path: list[str | int] = []
    here = document
    for i, step in enumerate(loc):
        last = i == len(loc) - 1
        if step == "[key]":
            return tuple(path), True
        found, child = _child_value(here, step)
        if found:
            here = child
        elif error["type"] == "missing" and last:
            path.append(step)
            return tuple(path), False
        else:
            return tuple(path), True
        path.append(step)
    return tuple(path), False


def _child_value(here: Any, step: str | int) -> tuple[bool, Any]:
    if isinstance(here, dict) and step in here:
        return True, here[step]
    if isinstance(here, list) and isinstance(step, int) and 0 <= step < len(here):
        return True, here[step]
    return False, None


_KNOWN_KEYS: dict[int, type[BaseModel]] = {
    0: MappingFileModel,
    2: TableMappingModel,
}


def _known_keys(parent: tuple[str | int, ...]) -> list[str]:
    if len(parent) == 4 and parent[2] == "fields":
        model: type[BaseModel] = FieldMappingModel
    elif len(parent) == 4 and parent[2] == "match":
        model = MatchModel
    elif len(parent) in _KNOWN_KEYS:
        model = _KNOWN_KEYS[len(parent)]
    else:
        return []
    return list(model.model_fields)


def _reason(errors: list[ErrorDetails], path: tuple[str | int, ...]) -> str:
    """What is wrong at ``path``: several errors there are the alternatives of a union."""
    first = errors[0]
    key = path[-1] if path else "the document"
    if first["type"] == "extra_forbidden":
        return f"unknown key {key!r} (known: {', '.join(_known_keys(path[:-1]))})"
    if first["type"] == "missing":
        return f"{key} is required"
    if first["type"] == "mapping_name":
        return "mapping names are upper-case letters, digits and _ (at most 30)"
    said = " or ".join(dict.fromkeys(_lower(e["msg"]) for e in errors)).replace(
        " or expected ", " or "
    )
    # Inside a field mapping or match entry the label names the entry, not the key.
    named = f"{key}: " if len(path) > 3 else ""
    return f"{named}{said}; got {first['input']!r}"


def _lower(message: str) -> str:
    if message.startswith("Input should be "):
        return "expected " + message.removeprefix("Input should be ")
    return message[:1].lower() + message[1:]


def _field_label(document: dict[str, Any], path: tuple[str | int, ...]) -> str | None:
    """The field a problem is in: a field mapping's ``bc<->dataverse``, or the key."""
    if len(path) >= 4 and path[2] == "fields" and isinstance(path[3], int):
        try:
            raw = document["mappings"][path[1]]["fields"][path[3]]
        except (KeyError, IndexError, TypeError):
            return None
        if isinstance(raw, dict):
            return f"{raw.get('bc') or '(constant)'}<->{raw.get('dataverse') or '(constant)'}"
        return f"fields[{path[3]}]"
    if len(path) >= 3:
        return str(path[2])
    return None


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
