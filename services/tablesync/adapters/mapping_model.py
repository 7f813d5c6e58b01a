"""The shape of a mappings file as pydantic models: what ``tablesync mappings
validate`` checks first, and the JSON Schema editors complete and check with
(``tablesync mappings schema``).

The models hold the file's structure: keys, types, allowed words. What needs
the catalog or the whole document — a field of the table, a filter's grammar
and properties, a lookup's target mapping, the dependency order — is
``core.mapping_load``'s, which every load runs after these models."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from tablesync.core import catalog
from tablesync.core.mappings import DeletionPolicy, MappingDirection, UpdateConflictPolicy

__all__ = [
    "FieldMappingModel",
    "MappingFileModel",
    "MatchModel",
    "TableMappingModel",
    "TransformationRuleModel",
    "json_schema",
]

Scalar = str | int | float | bool | None
FlowDirection = Literal["to_integration", "from_integration"]
MappingName = Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9_]{0,29}$")]
Text = Annotated[str, StringConstraints(min_length=1)]


def _tables(side: Literal["bc", "dataverse"]) -> dict[str, Any]:
    return {"enum": sorted(name for s, name in catalog.CATALOG if s == side)}


class _Strict(BaseModel):
    # An unknown key is refused (a typo must not be silently ignored), and
    # values keep their YAML types: "5" is not a length, 1 is not true.
    model_config = ConfigDict(extra="forbid", strict=True)


class MatchModel(_Strict):
    """A pair of fields that must be equal for two uncoupled records to be the same."""

    bc: Text = Field(description="The BC field.")
    dataverse: Text = Field(description="The Dataverse column.")
    case_sensitive: bool = Field(default=False, description="Compare the texts exactly.")
    priority: int = Field(
        default=0,
        ge=0,
        description="Match fields of one priority are a group that must all be equal; the "
        "groups are tried from the lowest priority on, and the first that finds records decides.",
    )


PlainRuleName = Literal[
    "uppercase",
    "lowercase",
    "title_case",
    "trim",
    "remove_diacritics",
    "remove_non_alphanumeric",
]


class PlainRuleModel(_Strict):
    """A rule without parameters, written with its type."""

    type: PlainRuleName


class SubstringModel(_Strict):
    """Part of a text: from ``start`` (1 is the first character) or after
    ``start_text``; ``length`` characters, or up to ``end_text``."""

    type: Literal["substring"]
    start: Annotated[int, Field(ge=1)] | None = Field(default=None, description="Default 1.")
    start_text: Text | None = None
    length: Annotated[int, Field(ge=0)] | None = None
    end_text: Text | None = None


class ReplaceModel(_Strict):
    """Every occurrence of ``find`` replaced with ``replace_with``."""

    type: Literal["replace"]
    find: Text
    replace_with: str = ""


class RegexReplaceModel(_Strict):
    """Every match of ``pattern`` (Python ``re``) replaced; groups as \\1."""

    type: Literal["regex_replace"]
    pattern: Text
    replace_with: str = ""


class RoundModel(_Strict):
    """A number rounded to a multiple of ``precision``."""

    type: Literal["round"]
    precision: Annotated[float, Field(gt=0)] | Annotated[int, Field(gt=0)] = 1
    direction: Literal["nearest", "up", "down"] = "nearest"


class LookupTableModel(_Strict):
    """Each value replaced by its pair's second value."""

    type: Literal["lookup_table"]
    pairs: list[Annotated[list[Scalar], Field(min_length=2, max_length=2)]]
    unmatched: Literal["keep", "blank"] = Field(
        default="keep", description="What a value with no pair becomes: itself, or blank."
    )


TransformationRuleModel: TypeAlias = Annotated[
    PlainRuleModel
    | SubstringModel
    | ReplaceModel
    | RegexReplaceModel
    | RoundModel
    | LookupTableModel,
    Field(discriminator="type"),
]


class FieldMappingModel(_Strict):
    """One BC field and one Dataverse column, or a constant written to one side."""

    bc: Text | None = Field(default=None, description="The BC field (API v2.0 name).")
    dataverse: Text | None = Field(
        default=None, description="The Dataverse column (a lookup attribute for lookups)."
    )
    direction: MappingDirection | None = Field(
        default=None, description="Default: the mapping's direction (a constant's: its side's)."
    )
    constant: Scalar = Field(
        default=None, description="A value written to the one field named, instead of a copy."
    )
    on_create_only: bool = Field(
        default=False, description="Written only when the record is created (template values)."
    )
    lookup: MappingName | list[MappingName] | None = Field(
        default=None,
        description="The mapping(s) whose couplings resolve this reference.",
    )
    clear_on_failure: bool | list[FlowDirection] | None = Field(
        default=None,
        description="BC's Clear Value on Failed Sync: an unresolved lookup is written blank.",
    )
    option_map: dict[str | int | float | bool, Scalar] | None = Field(
        default=None, description="BC values to Dataverse values (one-to-one unless one-way)."
    )
    max_length: Annotated[int, Field(gt=0)] | None = Field(
        default=None, description="Text written to the destination is cut to this length."
    )
    trim: bool = Field(default=False, description="Trim spaces on the way.")
    code: bool = Field(
        default=False, description="Compare like a BC Code field: trimmed and upper-cased."
    )
    enabled: bool = Field(
        default=True,
        description="BC's Status: a disabled field mapping is kept but nothing is read, "
        "compared or written through it.",
    )
    not_null: bool = Field(
        default=False,
        description="BC's Not Null: a blank source value is not written; the destination "
        "keeps its value, a create its default.",
    )
    transformation_rules: list[PlainRuleName | TransformationRuleModel] | None = Field(
        default=None,
        description="BC's transformation rules, applied in order on the way "
        "transformation_direction.",
    )
    transformation_direction: FlowDirection | None = Field(
        default=None,
        description="The one way the rules apply; required for a bidirectional field, "
        "else the field's direction.",
    )


class TableMappingModel(_Strict):
    """An integration table mapping: a BC entity set paired with a Dataverse table."""

    bc_table: Text = Field(
        description="The BC API v2.0 entity set.", json_schema_extra=_tables("bc")
    )
    dataverse_table: Text = Field(
        description="The Dataverse table (entity set name).",
        json_schema_extra=_tables("dataverse"),
    )
    direction: MappingDirection = Field(
        description="to_integration: BC -> Dataverse; from_integration: Dataverse -> BC."
    )
    depends_on: list[MappingName] = Field(
        default_factory=list,
        description="Mappings synchronized before this one, besides those its lookups go through.",
    )
    sync_only_coupled: bool = Field(
        default=True, description="Records without a coupling are not created on the other side."
    )
    table_filter: str | None = Field(
        default=None, description="BC records to sync, in OData $filter syntax."
    )
    integration_table_filter: str | None = Field(
        default=None, description="Dataverse rows to sync, in OData $filter syntax."
    )
    bc_key: Text | None = Field(
        default=None, description="The BC field other mappings' lookups resolve values by."
    )
    match: list[MatchModel] = Field(
        default_factory=list, description="Fields that couple uncoupled records before a create."
    )
    update_conflict: UpdateConflictPolicy = Field(
        default="none", description="When both sides changed since the last sync."
    )
    deletion: DeletionPolicy = Field(
        default="none", description="When a coupled record is deleted on one side."
    )
    fields: Annotated[list[FieldMappingModel], Field(min_length=1)] = Field(
        description="The field mappings."
    )


class MappingFileModel(_Strict):
    """A tablesync mappings file (``tablesync mappings validate FILE``)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, title="tablesync integration table mappings"
    )

    mappings: Annotated[dict[MappingName, TableMappingModel], Field(min_length=1)] = Field(
        description="The integration table mappings by name (upper case, digits and _)."
    )


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a mappings file (draft 2020-12)."""
    schema = MappingFileModel.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
