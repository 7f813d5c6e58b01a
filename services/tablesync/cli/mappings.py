"""``tablesync mappings``: list, show, load and change integration table mappings."""

from __future__ import annotations

from pathlib import Path

import typer

from tablesync.adapters.mapping_file import configured_mapping_file, load_mapping_file
from tablesync.cli.common import fail, load_settings, print_json, run_async
from tablesync.cli.context import open_operator
from tablesync.cli.output import render
from tablesync.core import filters
from tablesync.core.mappings import MAPPING_DIRECTIONS, MappingSet, TableMapping
from tablesync.errors import MappingError

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
    fields = detail.pop("fields")
    for key, value in detail.items():
        typer.echo(f"{key:26} {value}")
    render(fields, ["bc", "dataverse", "direction", "constant", "lookup"], as_json=False)  # type: ignore[arg-type]


@app.command()
def load(
    path: Path = typer.Argument(None, help="A mappings YAML file (default: the configured one)."),
) -> None:
    """Validate a mappings file and make it the mappings in force."""
    settings = load_settings()
    source = path or configured_mapping_file(settings.sync.mapping_file)

    async def go() -> MappingSet:
        try:
            document, _ = load_mapping_file(source)
        except MappingError as exc:
            fail(str(exc))
        async with open_operator(settings) as operator:
            return await operator.load_mappings(document)

    mappings = run_async(go())
    typer.echo(
        f"loaded {len(mappings.mappings)} mappings from {source}: " + " -> ".join(mappings.names())
    )


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
