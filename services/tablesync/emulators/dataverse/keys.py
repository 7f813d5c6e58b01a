"""Addressing Dataverse rows: ``set(<guid>)``, ``set(<key>=<value>,…)`` by alternate key,
and entity references (``/set(…)``, a full URL, or ``$<Content-ID>`` in a change set)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit
from uuid import UUID

from tablesync.core.catalog import FieldDef
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import Params, TableSpec, ident, sql_type
from tablesync.emulators.common.values import convert, parse_guid

__all__ = ["KeyRef", "parse_key", "parse_reference", "split_segment"]

_GUID_RE = re.compile(
    r"\{?[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}?"
)
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True, slots=True)
class KeyRef:
    """A row of ``spec``: by primary key (``id``) or by alternate key values."""

    spec: TableSpec
    id: UUID | None = None
    alternate: tuple[tuple[FieldDef, object], ...] = ()
    text: str = ""
    """The key as the URL wrote it, for ``OData-EntityId``."""

    def predicate(self, params: Params, qualifier: str = "") -> str:
        if self.id is not None:
            return f"{qualifier}{ident(self.spec.entity.key)} = {params.add(self.id, 'uuid')}"
        parts = []
        for field, value in self.alternate:
            column = qualifier + ident(field.name)
            placeholder = params.add(value, sql_type(field))
            if field.edm_type == "Edm.String":
                column, placeholder = self.spec.text_expr(column), self.spec.text_expr(placeholder)
            parts.append(f"{column} = {placeholder}")
        return " AND ".join(parts)

    def describe(self) -> str:
        logical = self.spec.entity.logical_name
        if self.id is not None:
            return f"{logical} With Id = {self.id} Does Not Exist"
        return f"A record with the specified key values does not exist in {logical} entity"


def split_segment(path: str) -> tuple[str, str | None, str | None]:
    """``set(key)/rest`` → (set, key text or None, rest or None), honouring quotes in keys."""
    head, paren, tail = path.partition("(")
    if not paren:
        name, _, rest = head.partition("/")
        return name, None, rest or None
    quoted = False
    for index, ch in enumerate(tail):
        if ch == "'":
            quoted = not quoted
        elif ch == ")" and not quoted:
            rest = tail[index + 1 :]
            if rest and not rest.startswith("/"):
                break
            return head, tail[:index], rest[1:] or None
    raise ApiProblem(Kind.BAD_QUERY, f"Bad Request - Error in query syntax: '{path}'.")


def _split_pairs(text: str) -> list[str]:
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == "'":
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return items


def _key_value(field: FieldDef, text: str) -> object:
    text = text.strip()
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return convert(field, text[1:-1].replace("''", "'"))
    if _GUID_RE.fullmatch(text):
        return convert(field, text.strip("{}"))
    if _NUMBER_RE.fullmatch(text):
        return convert(field, int(text) if "." not in text else float(text))
    raise ApiProblem(Kind.BAD_QUERY, f"Bad Request - Error in query syntax: key value '{text}'.")


def parse_key(spec: TableSpec, text: str) -> KeyRef:
    """The row ``set(text)`` addresses; ApiProblem when ``text`` is no key of ``spec``."""
    entity = spec.entity
    stripped = text.strip()
    if "=" not in stripped:
        return KeyRef(spec, id=parse_guid(stripped, f"the key of {entity.entity_set}"), text=text)
    pairs: dict[str, str] = {}
    for item in _split_pairs(stripped):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or not _NAME_RE.fullmatch(name):
            raise ApiProblem(Kind.BAD_QUERY, f"Bad Request - Error in query syntax: '{text}'.")
        pairs[name] = value
    if set(pairs) == {entity.key}:
        return KeyRef(spec, id=parse_guid(pairs[entity.key].strip(), entity.key), text=text)
    for key in entity.alternate_keys:
        if set(key.fields) == set(pairs):
            values = tuple(
                (entity.fields[name], _key_value(entity.fields[name], pairs[name]))
                for name in key.fields
            )
            return KeyRef(spec, alternate=values, text=text)
    known = "; ".join(",".join(k.fields) for k in entity.alternate_keys) or "none"
    raise ApiProblem(
        Kind.BAD_QUERY,
        f"The key '{text}' is not a key of {entity.entity_set}: give the primary key "
        f"({entity.key}) or an alternate key (alternate keys: {known}).",
    )


def parse_reference(text: str, references: Mapping[str, str]) -> tuple[str, str]:
    """``(entity set, key text)`` of an ``@odata.bind`` / ``@odata.id`` value."""
    original = text
    if text.startswith("$") and text[1:] in references:
        text = references[text[1:]]
    if "://" in text:
        text = urlsplit(text).path
    text = unquote(text)
    marker = text.find("/api/data/")
    if marker >= 0:
        # Skip /api/data/v9.x/
        text = text[marker:].split("/", 4)[-1]
    text = text.lstrip("/")
    name, key, rest = split_segment(text)
    if key is None or rest is not None or not _NAME_RE.fullmatch(name):
        raise ApiProblem(
            Kind.BAD_VALUE,
            f"The entity reference '{original}' is not of the form /<entityset>(<key>).",
        )
    return name, key
