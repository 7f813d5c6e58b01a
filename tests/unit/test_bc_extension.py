"""The AL of the salespeople API page that ships in bc/ serves what the catalog
(and so the emulator and the sync) expects of it: its route, entity set and fields."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tablesync.core import catalog

BC = Path(__file__).resolve().parents[2] / "bc"
PAGE = (BC / "SalespersonAPI.Page.al").read_text()


def _property(name: str) -> str:
    found = re.search(rf"^\s*{name}\s*=\s*'([^']*)';", PAGE, re.MULTILINE)
    assert found, f"{name} is not set on the page"
    return found.group(1)


def test_the_page_is_at_the_route_the_catalog_names() -> None:
    entity = catalog.entity("bc", "salespeople")
    route = "/".join(_property(p) for p in ("APIPublisher", "APIGroup", "APIVersion"))
    assert route == entity.api_route
    assert _property("EntitySetName") == entity.entity_set
    assert _property("EntityName") == entity.logical_name
    assert re.search(r"^\s*ODataKeyFields\s*=\s*SystemId;", PAGE, re.MULTILINE)


def test_the_page_has_exactly_the_catalog_s_fields() -> None:
    fields = re.findall(r"^\s*field\(\"?(\w+)\"?;", PAGE, re.MULTILINE)
    assert sorted(fields) == sorted(catalog.entity("bc", "salespeople").fields)


def test_the_app_manifest_covers_the_page_id() -> None:
    manifest = json.loads((BC / "app.json").read_text())
    page_id = int(re.search(r"^page (\d+) ", PAGE, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert any(r["from"] <= page_id <= r["to"] for r in manifest["idRanges"])
