"""Custom tables and columns an emulator serves besides the catalog's, from a YAML file.

The file (``TABLESYNC_EMULATOR__CUSTOM``) declares what a customer's environment adds:

.. code-block:: yaml

    dataverse:
      option_sets:                      # global choices (GlobalOptionSetDefinitions)
        - name: new_priority
          options: {1: Low, 2: High}
      tables:
        - logical_name: new_project
          entity_set: new_projects
          display_name: Project
          primary_name: new_name        # a string column of the table
          columns:
            - {name: new_name, type: string, max_length: 100, required: true}
            - {name: new_stage, type: picklist, options: {100000000: Planned, 100000001: Done}}
            - {name: new_priority, type: picklist, option_set: new_priority}
            - {name: new_accountid, type: lookup, target: account}
      columns:                          # extra columns on the catalog's tables
        account:
          - {name: new_tier, type: picklist, options: {1: Gold, 2: Silver}}
    bc:
      pages:                            # custom API pages
        - route: contoso/projects/v1.0  # api/<publisher>/<group>/<version>
          entity_set: projects
          entity_name: project
          fields:
            - {name: code, type: string, max_length: 20, required: true}
            - {name: status, type: enum, options: [Open, Closed]}

Both the data API and the metadata of an emulator are built from the table specs these
declarations extend, so a custom column is read, written, filtered, paged and described
exactly as a built-in one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "BcField",
    "BcPage",
    "CustomError",
    "Customizations",
    "DataverseColumn",
    "DataverseTable",
    "OptionSetDef",
    "load_customizations",
]

_NAME = r"^[a-z][a-z0-9_]*$"
_PROPERTY = r"^[A-Za-z][A-Za-z0-9_]*$"
_ROUTE = re.compile(r"[A-Za-z][A-Za-z0-9]*/[A-Za-z][A-Za-z0-9]*/v\d+\.\d+")

DataverseType = Literal[
    "string",
    "memo",
    "integer",
    "bigint",
    "decimal",
    "money",
    "boolean",
    "datetime",
    "uniqueidentifier",
    "picklist",
    "lookup",
]
BcType = Literal["string", "integer", "decimal", "boolean", "date", "datetime", "guid", "enum"]


class CustomError(ValueError):
    """The customization file does not parse or declares something inconsistent."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptionSetDef(_Strict):
    """A global choice: its options by value."""

    name: Annotated[str, Field(pattern=_NAME)]
    display_name: str | None = None
    options: dict[int, str]


class DataverseColumn(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    type: DataverseType
    display_name: str | None = None
    max_length: Annotated[int, Field(gt=0, le=1_048_576)] | None = None
    required: bool = False
    options: dict[int, str] | None = None
    """A picklist's own (local) options."""
    option_set: str | None = None
    """A picklist's global option set, by name."""
    target: Annotated[str, Field(pattern=_NAME)] | None = None
    """A lookup's target table, by logical name."""
    navigation: Annotated[str, Field(pattern=_PROPERTY)] | None = None
    """A lookup's single-valued navigation property; the column's name by default."""

    @model_validator(mode="after")
    def _consistent(self) -> DataverseColumn:
        if self.type == "picklist" and (self.options is None) == (self.option_set is None):
            raise ValueError(f"picklist {self.name!r} needs either options or option_set")
        if self.type != "picklist" and (self.options is not None or self.option_set is not None):
            raise ValueError(f"{self.name!r}: options belong to a picklist")
        if self.type == "lookup" and self.target is None:
            raise ValueError(f"lookup {self.name!r} needs a target")
        if self.type != "lookup" and (self.target is not None or self.navigation is not None):
            raise ValueError(f"{self.name!r}: target and navigation belong to a lookup")
        if self.max_length is not None and self.type not in ("string", "memo"):
            raise ValueError(f"{self.name!r}: max_length belongs to a string or memo")
        return self


class DataverseTable(_Strict):
    logical_name: Annotated[str, Field(pattern=_NAME)]
    entity_set: Annotated[str, Field(pattern=_NAME)]
    display_name: str | None = None
    display_collection_name: str | None = None
    primary_name: Annotated[str, Field(pattern=_NAME)]
    columns: tuple[DataverseColumn, ...]

    @model_validator(mode="after")
    def _primary_name(self) -> DataverseTable:
        column = next((c for c in self.columns if c.name == self.primary_name), None)
        if column is None or column.type != "string":
            raise ValueError(
                f"table {self.logical_name!r}: primary_name {self.primary_name!r} must be one "
                "of its string columns"
            )
        return self


class _Dataverse(_Strict):
    option_sets: tuple[OptionSetDef, ...] = ()
    tables: tuple[DataverseTable, ...] = ()
    columns: dict[Annotated[str, Field(pattern=_NAME)], tuple[DataverseColumn, ...]] = Field(
        default_factory=dict
    )


class BcField(_Strict):
    name: Annotated[str, Field(pattern=_PROPERTY)]
    type: BcType
    max_length: Annotated[int, Field(gt=0, le=2048)] | None = None
    required: bool = False
    read_only: bool = False
    options: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> BcField:
        if (self.type == "enum") != (self.options is not None):
            raise ValueError(f"{self.name!r}: an enum, and only an enum, has options")
        if self.options is not None and not self.options:
            raise ValueError(f"enum {self.name!r} needs at least one option")
        if self.max_length is not None and self.type != "string":
            raise ValueError(f"{self.name!r}: max_length belongs to a string")
        return self


class BcPage(_Strict):
    route: str
    """``publisher/group/version``: the page is served under ``api/<route>/companies(…)``."""
    entity_set: Annotated[str, Field(pattern=_PROPERTY)]
    entity_name: Annotated[str, Field(pattern=_PROPERTY)]
    fields: tuple[BcField, ...]

    @model_validator(mode="after")
    def _route(self) -> BcPage:
        if not _ROUTE.fullmatch(self.route):
            raise ValueError(f"route {self.route!r} is not <publisher>/<group>/v<major>.<minor>")
        if self.route == "v2.0" or self.route.startswith("microsoft/"):
            raise ValueError(f"route {self.route!r} is Microsoft's")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"page {self.entity_set!r} declares a field twice")
        if {"id", "lastModifiedDateTime"} & set(names):
            raise ValueError(
                f"page {self.entity_set!r}: id and lastModifiedDateTime are every page's own"
            )
        return self


class _Bc(_Strict):
    pages: tuple[BcPage, ...] = ()


class Customizations(_Strict):
    dataverse: _Dataverse = Field(default_factory=_Dataverse)
    bc: _Bc = Field(default_factory=_Bc)

    @classmethod
    def none(cls) -> Customizations:
        return cls()


def load_customizations(path: Path | str | None) -> Customizations:
    """The declarations in the YAML file at ``path``; none when ``path`` is None."""
    if path is None:
        return Customizations.none()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CustomError(f"cannot read the customization file {path}: {exc}") from None
    try:
        return Customizations.model_validate(raw or {})
    except ValidationError as exc:
        raise CustomError(f"the customization file {path} is not valid: {exc}") from None
