"""Several BC companies against one Dataverse environment, as BC's integration does it.

Dataverse knows BC's companies as rows of ``bcbi_company`` (BC's "CDS Company" table,
ExternalName ``bcbi_company``: ``bcbi_companyid``, ``bcbi_name``, ``bcbi_externalid``
holding the BC company's id). A synced Dataverse row is stamped with its company through
the lookup ``bcbi_companyid``, read back as ``_bcbi_companyid_value``. Each company's
mappings see only the Dataverse rows of that company or of none: BC's default
integration table filter, "company id = this company, or empty".

A deployment that names no list of companies has one scope, ``SINGLE``: no stamp, no
filter, topics and consumer groups named as they always were. A company of a list
has its scope keyed by its BC id, and everything of it carries that key; the decision
pipeline itself never asks which company it runs for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from tablesync.core.events import FieldValue
from tablesync.core.filters import Compare, Expr, Op, conjoin, disjoin, evaluate
from tablesync.core.records import Ref, WriteValue

__all__ = [
    "COMPANY_KEY",
    "COMPANY_LOOKUP",
    "COMPANY_SET",
    "COMPANY_TABLE",
    "COMPANY_VALUE",
    "SINGLE",
    "CompanyScope",
]

COMPANY_TABLE = "bcbi_company"
COMPANY_SET = "bcbi_companies"
COMPANY_KEY = "bcbi_companyid"
COMPANY_LOOKUP = "bcbi_companyid"
"""The lookup column on a synced Dataverse row naming its company."""
COMPANY_VALUE = f"_{COMPANY_LOOKUP}_value"
"""How Dataverse reads that lookup back: the id of the ``bcbi_company`` row."""


@dataclass(frozen=True, slots=True)
class CompanyScope:
    """One BC company as the engine runs it: its key (the BC company id, or "" for a
    deployment of one company) and the id of its ``bcbi_company`` row in Dataverse."""

    key: str = ""
    dataverse_id: str | None = None

    def __post_init__(self) -> None:
        if self.key and self.dataverse_id is None:
            raise ValueError(f"the company {self.key} has no bcbi_company row in Dataverse")
        if self.key != self.key.strip().lower():
            raise ValueError(f"a company key is a lower-case BC id, not {self.key!r}")
        if self.dataverse_id is not None:
            try:
                UUID(self.dataverse_id)
            except ValueError:
                raise ValueError(
                    f"the bcbi_company id of company {self.key} is no GUID: {self.dataverse_id!r}"
                ) from None

    @property
    def single(self) -> bool:
        return not self.key

    def topic(self, base: str) -> str:
        """A BC topic of this company: each company's records go their own way."""
        return base if self.single else f"{base}.{self.key}"

    def group(self, base: str) -> str:
        """A consumer group (or lease, or job scope) of this company."""
        return base if self.single else f"{base}.{self.key}"

    def dataverse_filter(self, mapping_filter: Expr | None) -> Expr | None:
        """The mapping's integration table filter and, with several companies, BC's
        default one: the row is this company's or no company's."""
        if self.single:
            return mapping_filter
        # A GUID literal: pushed down as $filter it is what Dataverse compares a lookup with.
        mine = disjoin(
            Compare(COMPANY_VALUE, Op.EQ, UUID(str(self.dataverse_id))),
            Compare(COMPANY_VALUE, Op.EQ, None),
        )
        return conjoin(mapping_filter, mine)

    def sees(self, row: Mapping[str, object], mapping_filter: Expr | None = None) -> bool:
        """Whether a Dataverse row is this company's to sync."""
        return evaluate(self.dataverse_filter(mapping_filter), row, ignore_case=True)

    def stamped(self, values: Mapping[str, WriteValue]) -> dict[str, WriteValue]:
        """The values of a Dataverse write with the company stamp: a row tablesync
        writes for a company is that company's from then on, also to the others."""
        out = dict(values)
        if not self.single and self.dataverse_id is not None:
            out[COMPANY_LOOKUP] = Ref(COMPANY_SET, self.dataverse_id)
        return out

    def owner_of(self, row: Mapping[str, FieldValue]) -> str | None:
        """The ``bcbi_company`` id a Dataverse row is stamped with, if any."""
        value = row.get(COMPANY_VALUE)
        return str(value).lower() if value else None


SINGLE = CompanyScope()
