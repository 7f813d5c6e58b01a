"""The ``Prefer`` request header (RFC 7240) as a name → value mapping."""

from __future__ import annotations

__all__ = ["max_page_size", "parse_prefer"]


def _split(text: str) -> list[str]:
    # Commas inside a quoted value (odata.include-annotations="a,b") do not separate.
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def parse_prefer(header: str | None) -> dict[str, str]:
    """Preferences by lower-case name; a preference without a value maps to ``""``."""
    if not header:
        return {}
    preferences: dict[str, str] = {}
    for item in _split(header):
        name, _, value = item.partition("=")
        preferences[name.strip().lower()] = value.strip().strip('"')
    return preferences


def max_page_size(preferences: dict[str, str]) -> int | None:
    """``odata.maxpagesize`` when it is a positive integer."""
    value = preferences.get("odata.maxpagesize", "")
    return int(value) if value.isdigit() and int(value) > 0 else None
