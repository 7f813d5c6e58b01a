"""Transformation rules: what a value becomes on its way to the other side.

BC's Transformation Rules (``Transformation Rule Type``: Uppercase, Lowercase,
Title Case, Trim, Substring, Replace, Regular Expression - Replace, Remove
Non-Alphanumeric Characters, Round, Field Lookup, …) as pure functions. A field
mapping lists rules; they run in the order listed, each on the last one's
result, in one direction only (BC's ``Transformation Direction``:
ToIntegrationTable or FromIntegrationTable).

Text rules leave values that are not text as they are; ``round`` leaves
anything but a number; ``lookup_table`` takes any value. ``parse_rules`` turns
a document's list into rules and refuses a bad one with a ``RuleError``
naming the rule's position and key. Nothing here does I/O."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal, TypeAlias

from tablesync.core.events import FieldValue

__all__ = [
    "RULE_TYPES",
    "LookupTable",
    "Lowercase",
    "RegexReplace",
    "RemoveDiacritics",
    "RemoveNonAlphanumeric",
    "Replace",
    "Round",
    "Rule",
    "RuleError",
    "Substring",
    "TitleCase",
    "Trim",
    "Uppercase",
    "apply_rule",
    "apply_rules",
    "describe",
    "parse_rules",
]


@dataclass(frozen=True, slots=True)
class Uppercase:
    pass


@dataclass(frozen=True, slots=True)
class Lowercase:
    pass


@dataclass(frozen=True, slots=True)
class TitleCase:
    """Each word (a run of characters between white space) with its first
    letter in upper case and the rest in lower case."""


@dataclass(frozen=True, slots=True)
class Trim:
    """Leading and trailing white space removed."""


@dataclass(frozen=True, slots=True)
class Substring:
    """Part of a text: from ``start`` (1 is the first character, as BC's Start
    Position) or from just after the first ``start_text``; ``length``
    characters of it, or up to (not including) the next ``end_text``.

    A start past the end, or a ``start_text`` the text does not hold, leaves
    nothing; an ``end_text`` the rest does not hold leaves the rest."""

    start: int = 1
    start_text: str | None = None
    length: int | None = None
    end_text: str | None = None


@dataclass(frozen=True, slots=True)
class Replace:
    """Every occurrence of ``find`` (case as written) replaced with ``replace_with``."""

    find: str
    replace_with: str = ""


@dataclass(frozen=True, slots=True)
class RegexReplace:
    """Every match of ``pattern`` (Python's ``re`` syntax) replaced with
    ``replace_with``, which may refer to groups as ``\\1`` or ``\\g<name>``."""

    pattern: str
    replace_with: str = ""


@dataclass(frozen=True, slots=True)
class RemoveDiacritics:
    """Accents and other combining marks removed: "Müller" becomes "Muller"."""


@dataclass(frozen=True, slots=True)
class RemoveNonAlphanumeric:
    """Only letters and digits kept (of any script); spaces and punctuation go."""


RoundDirection: TypeAlias = Literal["nearest", "up", "down"]
ROUND_DIRECTIONS: tuple[RoundDirection, ...] = ("nearest", "up", "down")


@dataclass(frozen=True, slots=True)
class Round:
    """A number rounded to a multiple of ``precision`` (BC's Round: nearest,
    halves away from zero; up; down)."""

    precision: str = "1"
    """Kept as its decimal text, so that 0.01 is exactly a hundredth."""
    direction: RoundDirection = "nearest"


Unmatched: TypeAlias = Literal["keep", "blank"]
UNMATCHED: tuple[Unmatched, ...] = ("keep", "blank")


@dataclass(frozen=True, slots=True)
class LookupTable:
    """A value replaced by its pair's second value; a value with no pair is
    kept (``keep``) or written blank (``blank``). Text compares exactly,
    numbers by value."""

    pairs: tuple[tuple[FieldValue, FieldValue], ...]
    unmatched: Unmatched = "keep"


Rule: TypeAlias = (
    Uppercase
    | Lowercase
    | TitleCase
    | Trim
    | Substring
    | Replace
    | RegexReplace
    | RemoveDiacritics
    | RemoveNonAlphanumeric
    | Round
    | LookupTable
)

_WORD = re.compile(r"\S+")


def _title(text: str) -> str:
    # str.title() also starts a word after an apostrophe or a digit ("O'Neil",
    # "2Nd"); BC's words are what white space separates.
    return _WORD.sub(lambda m: m[0].capitalize(), text)


def _substring(rule: Substring, text: str) -> str:
    if rule.start_text is not None:
        at = text.find(rule.start_text)
        if at < 0:
            return ""
        rest = text[at + len(rule.start_text) :]
    else:
        rest = text[rule.start - 1 :]
    if rule.length is not None:
        return rest[: rule.length]
    if rule.end_text is not None:
        end = rest.find(rule.end_text)
        return rest if end < 0 else rest[:end]
    return rest


def _remove_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    kept = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", kept)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


_ROUNDING = {"nearest": ROUND_HALF_UP, "up": ROUND_CEILING, "down": ROUND_FLOOR}


def _round(rule: Round, value: int | float) -> int | float:
    precision = Decimal(rule.precision)
    number = Decimal(str(value))
    if not number.is_finite():
        return value
    steps = (number / precision).to_integral_value(rounding=_ROUNDING[rule.direction])
    result = steps * precision
    if isinstance(value, int) and result == result.to_integral_value():
        return int(result)
    return float(result)


def _lookup_key(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (type(value).__name__, value)
    return ("number", Decimal(str(value)))


def _lookup(rule: LookupTable, value: FieldValue) -> FieldValue:
    key = _lookup_key(value)
    for source, target in rule.pairs:
        if _lookup_key(source) == key:
            return target
    return value if rule.unmatched == "keep" else None


def apply_rule(rule: Rule, value: FieldValue) -> FieldValue:
    """``value`` after one rule."""
    if isinstance(rule, LookupTable):
        return _lookup(rule, value)
    if isinstance(rule, Round):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value
        return _round(rule, value)
    if not isinstance(value, str):
        return value
    match rule:
        case Uppercase():
            return value.upper()
        case Lowercase():
            return value.lower()
        case TitleCase():
            return _title(value)
        case Trim():
            return value.strip()
        case Substring():
            return _substring(rule, value)
        case Replace():
            return value.replace(rule.find, rule.replace_with)
        case RegexReplace():
            return _compiled(rule.pattern).sub(rule.replace_with, value)
        case RemoveDiacritics():
            return _remove_diacritics(value)
        case RemoveNonAlphanumeric():
            return "".join(c for c in value if c.isalnum())
    raise AssertionError(f"unknown rule {rule!r}")


def apply_rules(rules: Sequence[Rule], value: FieldValue) -> FieldValue:
    """``value`` after each of ``rules``, in order."""
    for rule in rules:
        value = apply_rule(rule, value)
    return value


RULE_TYPES: dict[str, type[Rule]] = {
    "uppercase": Uppercase,
    "lowercase": Lowercase,
    "title_case": TitleCase,
    "trim": Trim,
    "substring": Substring,
    "replace": Replace,
    "regex_replace": RegexReplace,
    "remove_diacritics": RemoveDiacritics,
    "remove_non_alphanumeric": RemoveNonAlphanumeric,
    "round": Round,
    "lookup_table": LookupTable,
}
_NAMES = {kind: name for name, kind in RULE_TYPES.items()}
_PLAIN: dict[str, Rule] = {
    "uppercase": Uppercase(),
    "lowercase": Lowercase(),
    "title_case": TitleCase(),
    "trim": Trim(),
    "remove_diacritics": RemoveDiacritics(),
    "remove_non_alphanumeric": RemoveNonAlphanumeric(),
}
_PARAMETERS: dict[str, frozenset[str]] = {
    "substring": frozenset({"start", "start_text", "length", "end_text"}),
    "replace": frozenset({"find", "replace_with"}),
    "regex_replace": frozenset({"pattern", "replace_with"}),
    "round": frozenset({"precision", "direction"}),
    "lookup_table": frozenset({"pairs", "unmatched"}),
}


def describe(rule: Rule) -> dict[str, object]:
    """A rule as a document would write it (its type, then its parameters)."""
    name = _NAMES[type(rule)]
    shown: dict[str, object] = {"type": name}
    defaults = type(rule).__dataclass_fields__
    for key in sorted(_PARAMETERS.get(name, ())):
        value = getattr(rule, key)
        if key == "pairs":
            shown[key] = [list(pair) for pair in value]
        elif value != defaults[key].default:
            shown[key] = value
    return shown


@dataclass(frozen=True, slots=True)
class RuleError(Exception):
    """A rule of a list that cannot be used: ``index`` is its position in the
    list, ``key`` the parameter at fault (None: the rule as a whole)."""

    index: int
    key: str | None
    message: str

    def __str__(self) -> str:
        return self.message


def parse_rules(raw: object) -> tuple[Rule, ...]:
    """A document's list of rules: each a rule's name (``uppercase``) or a
    set of keys with ``type`` and the rule's parameters."""
    if not isinstance(raw, list):
        raise RuleError(-1, None, "transformation_rules is a list of rules")
    return tuple(_parse_rule(i, item) for i, item in enumerate(raw))


def _parse_rule(index: int, item: object) -> Rule:
    known = ", ".join(RULE_TYPES)
    body: Mapping[str, Any]
    if isinstance(item, str):
        body = {"type": item}
    elif isinstance(item, Mapping):
        body = item
    else:
        raise RuleError(
            index, None, f"a rule is a rule's name or a set of keys with type ({known})"
        )
    name = body.get("type")
    if name not in RULE_TYPES:
        raise RuleError(index, "type", f"unknown transformation rule {name!r} (known: {known})")
    allowed = _PARAMETERS.get(name, frozenset())
    unknown = sorted(set(body) - allowed - {"type"})
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no parameters"
        raise RuleError(
            index, unknown[0], f"{name} takes {takes}; got unknown key(s) {', '.join(unknown)}"
        )
    params = {k: v for k, v in body.items() if k != "type"}
    if name == "substring":
        return _substring_rule(index, params)
    if name == "replace":
        return Replace(
            _text(index, params, "find", required=True, non_empty=True),
            _text(index, params, "replace_with", default=""),
        )
    if name == "regex_replace":
        return _regex_rule(index, params)
    if name == "round":
        return _round_rule(index, params)
    if name == "lookup_table":
        return _lookup_rule(index, params)
    return _PLAIN[name]


def _text(
    index: int,
    params: Mapping[str, Any],
    key: str,
    *,
    required: bool = False,
    non_empty: bool = False,
    default: str = "",
) -> str:
    if key not in params:
        if required:
            raise RuleError(index, key, f"{key} is required")
        return default
    value = params[key]
    if not isinstance(value, str) or (non_empty and value == ""):
        kind = "a non-empty text" if non_empty else "a text"
        raise RuleError(index, key, f"{key} must be {kind}")
    return value


def _whole(index: int, params: Mapping[str, Any], key: str, least: int) -> int | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise RuleError(index, key, f"{key} is a whole number, {least} or more; got {value!r}")
    return value


def _substring_rule(index: int, params: Mapping[str, Any]) -> Substring:
    if "start" in params and "start_text" in params:
        raise RuleError(
            index, "start_text", "substring starts at start or after start_text, not both"
        )
    if "length" in params and "end_text" in params:
        raise RuleError(index, "end_text", "substring ends after length or at end_text, not both")
    start = _whole(index, params, "start", 1)
    length = _whole(index, params, "length", 0)
    start_text = (
        _text(index, params, "start_text", non_empty=True) if "start_text" in params else None
    )
    end_text = _text(index, params, "end_text", non_empty=True) if "end_text" in params else None
    return Substring(
        start=1 if start is None else start,
        start_text=start_text,
        length=length,
        end_text=end_text,
    )


def _regex_rule(index: int, params: Mapping[str, Any]) -> RegexReplace:
    pattern = _text(index, params, "pattern", required=True, non_empty=True)
    replace_with = _text(index, params, "replace_with", default="")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise RuleError(
            index, "pattern", f"pattern {pattern!r} is not a regular expression: {exc}"
        ) from exc
    try:
        # Parses the replacement and its group references, with no match to make.
        compiled.sub(replace_with, "")
    except (re.error, IndexError) as exc:
        raise RuleError(
            index, "replace_with", f"replace_with {replace_with!r} cannot be used: {exc}"
        ) from exc
    return RegexReplace(pattern, replace_with)


def _round_rule(index: int, params: Mapping[str, Any]) -> Round:
    raw = params.get("precision", 1)
    precision: Decimal | None = None
    if isinstance(raw, int | float | str) and not isinstance(raw, bool):
        try:
            precision = Decimal(str(raw))
        except InvalidOperation:
            precision = None
    if precision is None or not precision.is_finite() or precision <= 0:
        raise RuleError(index, "precision", f"precision is a positive number; got {raw!r}")
    direction = params.get("direction", "nearest")
    if direction not in ROUND_DIRECTIONS:
        raise RuleError(
            index,
            "direction",
            f"direction must be one of {', '.join(ROUND_DIRECTIONS)}; got {direction!r}",
        )
    return Round(str(precision), direction)


def _scalar(value: object) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _lookup_rule(index: int, params: Mapping[str, Any]) -> LookupTable:
    pairs = params.get("pairs")
    if not (
        isinstance(pairs, list)
        and all(
            isinstance(p, list | tuple) and len(p) == 2 and all(_scalar(v) for v in p)
            for p in pairs
        )
    ):
        raise RuleError(
            index, "pairs", "pairs is a list of [value, becomes] pairs of strings, numbers or null"
        )
    seen: set[object] = set()
    for source, _ in pairs:
        key = _lookup_key(source)
        if key in seen:
            raise RuleError(index, "pairs", f"pairs has {source!r} more than once")
        seen.add(key)
    unmatched = params.get("unmatched", "keep")
    if unmatched not in UNMATCHED:
        raise RuleError(
            index,
            "unmatched",
            f"unmatched must be one of {', '.join(UNMATCHED)}; got {unmatched!r}",
        )
    return LookupTable(tuple((a, b) for a, b in pairs), unmatched)
