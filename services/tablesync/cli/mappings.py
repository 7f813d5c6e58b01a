"""``tablesync mappings``: list, show, validate, load and change integration table mappings."""

from __future__ import annotations

import json
import sys
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import cast

import typer
import yaml

from tablesync.adapters.mapping_file import (
    MappingFileInvalid,
    configured_mapping_file,
    default_mapping_file,
    load_mapping_file,
)
from tablesync.adapters.mapping_model import json_schema
from tablesync.adapters.odata.described import read_tables
from tablesync.cli.catalog import connectors
from tablesync.cli.common import EXIT_USAGE, fail, load_settings, print_json, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import render
from tablesync.core import filters
from tablesync.core.described import described_tables, outside_catalog
from tablesync.core.mapping_diff import MappingChange, diff_mappings
from tablesync.core.mapping_load import TableInfoSource
from tablesync.core.mappings import MAPPING_DIRECTIONS, MappingSet, TableMapping
from tablesync.core.metadata import FieldInfo, Problem, TableInfo, check_mapping, find_table
from tablesync.core.options import propose
from tablesync.core.transformation import describe
from tablesync.errors import ApiError, CommandRefused, MappingError
from tablesync.settings import Settings

app = typer.Typer(help="Integration table mappings.", invoke_without_command=True)


def _summary(m: TableMapping) -> dict[str, object]:
    return {
        "mapping": m.name,
        "bc_table": m.bc_table,
        "dataverse_table": m.dataverse_table,
        "direction": m.direction,
        "sync_only_coupled": m.sync_only_coupled,
        "table_filter": filters.to_odata(m.table_filter) if m.table_filter else "",
        "integration_table_filter": (
            filters.to_odata(m.integration_table_filter) if m.integration_table_filter else ""
        ),
        "depends_on": list(m.depends_on),
        "update_conflict": m.update_conflict,
        "deletion": m.deletion,
    }


def _detail(m: TableMapping) -> dict[str, object]:
    return {
        **_summary(m),
        "bc_key": m.bc_key,
        "match": [{"bc": f.bc, "dataverse": f.dataverse} for f in m.match],
        "fields": [
            {
                "bc": f.bc,
                "dataverse": f.dataverse,
                "direction": f.direction,
                **({"constant": f.constant} if f.has_constant else {}),
                **({"lookup": list(f.lookup.mappings)} if f.lookup else {}),
                **({"on_create_only": True} if f.on_create_only else {}),
                "enabled": f.enabled,
                **({"not_null": True} if f.not_null else {}),
                **(
                    {
                        "transformation_rules": [describe(r) for r in f.transform.rules],
                        "transformation_direction": f.transform.rules_direction,
                    }
                    if f.transform.rules
                    else {}
                ),
            }
            for f in m.fields
        ],
    }


async def _load() -> MappingSet:
    async with open_operator(load_settings()) as operator:
        return await operator.mappings()


async def _one(name: str) -> TableMapping:
    async with open_operator(load_settings()) as operator:
        return await operator.mapping(name)


@app.callback()
def listing(
    ctx: typer.Context,
    json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Without a sub-command: the mappings in dependency order."""
    if ctx.invoked_subcommand is not None:
        return
    mappings = run_async(_load())
    render(
        [_summary(m) for m in mappings.mappings],
        [
            "mapping",
            "bc_table",
            "dataverse_table",
            "direction",
            "sync_only_coupled",
            "table_filter",
            "integration_table_filter",
        ],
        as_json=json,
        title="Integration table mappings",
    )


@app.command()
def show(name: str, json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """One mapping with its field mappings."""
    detail = _detail(run_async(_one(name)))
    if json:
        print_json(detail)
        return
    fields = cast(list[dict[str, object]], detail.pop("fields"))
    for key, value in detail.items():
        typer.echo(f"{key:26} {value}")
    rows = [{**f, "rules": _rules_shown(f)} for f in fields]
    render(
        rows,
        ["bc", "dataverse", "direction", "enabled", "constant", "lookup", "rules"],
        as_json=False,
    )


def _rules_shown(f: dict[str, object]) -> str:
    rules = cast(list[dict[str, object]], f.get("transformation_rules", []))
    if not rules:
        return ""
    return ", ".join(str(r["type"]) for r in rules) + f" ({f['transformation_direction']})"


@app.command()
def validate(
    path: Path = typer.Argument(..., help="A mappings YAML file."),
    online: bool = typer.Option(
        False,
        "--online",
        help="Also hold each mapping against the live services' metadata (their APIs only).",
    ),
    bc_route: list[str] = typer.Option(
        [], "--bc-route", help="With --online: a custom BC API route the mappings read too."
    ),
) -> None:
    """Check a mappings file without a database or broker: exit 0 when valid, 2 with
    each problem's file, line and reason when not. With --online, also each field the
    services do not have, a max_length above the column's, a write to a read-only
    column and an option outside the column's options; custom tables and pages (and
    custom columns) are known from that metadata too."""
    settings = load_settings()
    tables = _described_for(path, settings, bc_route) if online else None
    try:
        _, mappings = load_mapping_file(path, tables)
    except MappingFileInvalid as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except MappingError as exc:
        fail(str(exc))
    if online:
        problems = run_async(_online_problems(settings, mappings, bc_route))
        for found in problems:
            typer.echo(str(found), err=True)
        if problems:
            raise typer.Exit(EXIT_USAGE)
    checked = " (checked against both services)" if online else ""
    typer.echo(
        f"{path}: {len(mappings.mappings)} valid mappings{checked}: "
        + " -> ".join(mappings.names())
    )


def _described_for(
    path: Path | Traversable, settings: Settings, routes: list[str]
) -> TableInfoSource | None:
    """The services' tables, when the file names one the built-in catalog lacks."""
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None  # the load that follows says what is wrong with the file
    if not outside_catalog(document):
        return None
    try:
        described = run_async(read_tables(settings, bc_routes=routes))
    except ApiError as exc:
        fail(f"{path} names custom tables; reading the services' metadata failed: {exc}")
    return described_tables(described)


async def _online_problems(
    settings: Settings, mappings: MappingSet, routes: list[str]
) -> list[Problem]:
    async with connectors(settings) as (bc, dataverse):
        problems: list[Problem] = []
        for m in mappings.mappings:
            bc_tables = await bc.describe(m.bc_table, routes=routes)
            dv_tables = await dataverse.describe(m.dataverse_table)
            problems.extend(check_mapping(m, bc_tables, dv_tables))
        return problems


@app.command("propose-options")
def propose_options(
    bc_table: str = typer.Argument(..., help="The BC entity set (a custom page's too)."),
    bc_field: str = typer.Argument(..., help="Its enum field."),
    dataverse_table: str = typer.Argument(..., help="The Dataverse entity set or table."),
    dataverse_column: str = typer.Argument(..., help="Its choice (picklist) column."),
    bc_route: list[str] = typer.Option(
        [], "--bc-route", help="A custom BC API route (publisher/group/version) to read too."
    ),
    json_: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Draft a field mapping's option_map from both services' metadata: each BC enum
    member paired with the Dataverse choice of the same label, and what found no pair."""
    settings = load_settings()
    routes = [*settings.bc.api_routes, *bc_route]
    bc_tables, dv_tables = run_async(_option_tables(settings, bc_table, dataverse_table, routes))
    bc_info = _option_field(find_table(bc_tables, bc_table), "bc", bc_table, bc_field)
    dv_info = _option_field(
        find_table(dv_tables, dataverse_table), "dataverse", dataverse_table, dataverse_column
    )
    proposal = propose(bc_info.options, dv_info.options)
    if json_:
        print_json(
            {
                "bc": {"table": bc_table, "field": bc_field},
                "dataverse": {"table": dataverse_table, "column": dataverse_column},
                "option_map": [{"bc": b, "dataverse": d} for b, d in proposal.pairs],
                "bc_unpaired": [{"value": o.value, "label": o.label} for o in proposal.bc_unpaired],
                "dataverse_unpaired": [
                    {"value": o.value, "label": o.label} for o in proposal.dataverse_unpaired
                ],
            }
        )
        return
    labels = {o.value: o.label for o in dv_info.options}
    typer.echo(f"- bc: {bc_field}\n  dataverse: {dataverse_column}\n  option_map:")
    for b, d in proposal.pairs:
        typer.echo(f"    {json.dumps(b)}: {json.dumps(d)}  # {labels[d]}")
    for o in proposal.bc_unpaired:
        typer.echo(f"  # BC {o.value!r} has no Dataverse choice of the same label")
    for o in proposal.dataverse_unpaired:
        typer.echo(f"  # Dataverse {o.value} ({o.label}) has no BC member of the same label")


async def _option_tables(
    settings: Settings, bc_table: str, dataverse_table: str, routes: list[str]
) -> tuple[list[TableInfo], list[TableInfo]]:
    async with connectors(settings) as (bc, dataverse):
        return await bc.describe(bc_table, routes=routes), await dataverse.describe(dataverse_table)


def _option_field(table: TableInfo | None, side: str, table_name: str, name: str) -> FieldInfo:
    if table is None:
        fail(f"{side} has no table {table_name!r}")
    found = table.field(name)
    if found is None:
        fail(f"{side} {table_name} has no field {name!r}")
    if not found.options:
        fail(f"{side} {table_name}.{name} is a {found.type}, not an option field")
    return found


@app.command()
def schema() -> None:
    """Print the JSON Schema of a mappings file, for editors (yaml.schemas, $schema=)."""
    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def default() -> None:
    """Print the default mappings shipped with tablesync: a start for a file of your own."""
    typer.echo(default_mapping_file().read_text(), nl=False)


@app.command()
def load(
    path: Path = typer.Argument(None, help="A mappings YAML file (default: the configured one)."),
    yes: bool = typer.Option(
        False, "--yes", "-y", help="Replace the mappings in force without asking."
    ),
) -> None:
    """Validate a mappings file, show what it changes in the mappings in force
    (changes made with `mappings set` included) and, once confirmed, load it."""
    settings = load_settings()
    source = path or configured_mapping_file(settings.sync.mapping_file)
    tables = _described_for(source, settings, [])
    try:
        document, new = load_mapping_file(source, tables)
    except MappingError as exc:
        fail(str(exc))

    async def go() -> MappingSet | None:
        async with open_operator(settings) as operator:
            if tables is not None:
                operator.stores.mappings.use_tables(tables)
            try:
                current: MappingSet | None = await operator.mappings()
            except CommandRefused:
                current = None
            if current is not None:
                changes = diff_mappings(current, new)
                if not changes:
                    return None
                _confirm(changes, yes=yes)
            return await operator.load_mappings(document)

    mappings = run_async(go())
    if mappings is None:
        typer.echo(f"the mappings in force already are those of {source}: nothing loaded")
        return
    typer.echo(
        f"loaded {len(mappings.mappings)} mappings from {source}: " + " -> ".join(mappings.names())
    )


def _confirm(changes: list[MappingChange], *, yes: bool) -> None:
    """Shows what a load replaces; asks on a terminal unless ``--yes``, and
    refuses without one (a script must say that it means it)."""
    count = f"{len(changes)} change" + ("" if len(changes) == 1 else "s")
    typer.echo(f"Loading replaces the mappings in force ({count}):")
    for change in changes:
        typer.echo(f"  {change}")
    if yes:
        return
    if not sys.stdin.isatty():
        fail("no terminal to ask on: run again with --yes to replace the mappings in force")
    typer.confirm("Replace the mappings in force?", default=False, abort=True)


@app.command("set")
def set_(
    name: str,
    direction: str | None = typer.Option(None, help=" | ".join(MAPPING_DIRECTIONS)),
    only_coupled: bool | None = typer.Option(
        None, "--only-coupled/--not-only-coupled", help="Sync only coupled records."
    ),
    table_filter: str | None = typer.Option(None, help="BC filter; '' clears it."),
    integration_table_filter: str | None = typer.Option(
        None, help="Dataverse filter; '' clears it."
    ),
) -> None:
    """Change a mapping's direction, filters or sync-only-coupled."""
    settings = load_settings()

    async def go() -> TableMapping:
        async with open_operator(settings) as operator:
            return await operator.change_mapping(
                name,
                direction=direction,
                sync_only_coupled=only_coupled,
                table_filter=table_filter,
                integration_table_filter=integration_table_filter,
            )

    changed = run_async(go())
    summary = _summary(changed)
    typer.echo(" ".join(f"{k}={summary[k]}" for k in ("mapping", "direction", "sync_only_coupled")))
