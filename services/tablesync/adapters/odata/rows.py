"""API JSON objects → ``Row`` values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tablesync.core.events import FieldValue
from tablesync.core.records import Row

__all__ = ["parse_stamp", "to_row"]

# A row whose stamp was not returned sorts first rather than failing the whole page.
_NO_STAMP = datetime(1, 1, 1, tzinfo=UTC)
# The types a JSON decoder makes of scalars (exactly these, never subclasses):
# a set lookup of the type is the isinstance test, at a fraction of its cost
# over every property of every row read.
_SCALARS = frozenset({type(None), str, int, float, bool})


def parse_stamp(value: object) -> datetime:
    """A UTC datetime from an Edm.DateTimeOffset value (``Z`` or offset, any fraction)."""
    if not isinstance(value, str) or not value:
        return _NO_STAMP
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _NO_STAMP
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_row(data: dict[str, Any], *, key: str, stamp: str, modified_by: str | None) -> Row:
    """A Row from one entity as the API returned it.

    ``fields`` keeps every property except annotations (``@odata.etag``,
    ``name@OData.Community...``) and structured values, which are not field values."""
    fields: dict[str, FieldValue] = {
        name: value for name, value in data.items() if "@" not in name and type(value) in _SCALARS
    }
    raw_id = data[key]
    by = data.get(modified_by) if modified_by else None
    etag = data.get("@odata.etag")
    return Row(
        id=str(raw_id).lower(),
        modified_at=parse_stamp(data.get(stamp)),
        etag=etag if isinstance(etag, str) else None,
        fields=fields,
        modified_by=str(by).lower() if isinstance(by, str) and by else None,
    )
