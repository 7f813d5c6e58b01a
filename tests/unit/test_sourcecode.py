"""The pure core stays pure: no I/O library is imported below core/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "services" / "tablesync" / "core"
FORBIDDEN = {
    "aiokafka",
    "asyncpg",
    "httpx",
    "structlog",
    "fastavro",
    "starlette",
    "uvicorn",
    "yaml",
    "typer",
    "rich",
    "prometheus_client",
    "pydantic",
    "pydantic_settings",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
            if node.module.startswith("tablesync.") and not node.module.startswith(
                ("tablesync.core", "tablesync.errors")
            ):
                found.add(node.module)
    return found


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_module_imports_no_io_library(path: Path) -> None:
    imported = _imports(path)
    bad = sorted(imported & FORBIDDEN) + sorted(m for m in imported if m.startswith("tablesync."))
    assert not bad, f"{path.name} imports {bad}"


def test_the_check_catches_an_io_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import asyncpg\nfrom tablesync.adapters.kafka import Topics\n")
    assert {"asyncpg", "tablesync.adapters.kafka"} <= _imports(module)
