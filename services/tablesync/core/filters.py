"""The OData filter subset that Business Central API v2.0 and Dataverse Web API v9.2 accept.

One grammar serves three users: table mappings evaluate their filters on change events,
reads push the same filters down as ``$filter``, and the API emulators parse incoming
``$filter`` options and compile the AST to SQL themselves. Filters are always parsed into
an AST; ``to_odata`` is the only way back to text, so no value is ever spliced in unescaped.

Grammar (keywords are case-sensitive lower case, as in OData)::

    expr     := and_expr ('or' and_expr)*
    and_expr := unary ('and' unary)*
    unary    := 'not' unary | '(' expr ')' | call [('eq' | 'ne') ('true' | 'false')]
              | operand ('eq' | 'ne' | 'gt' | 'ge' | 'lt' | 'le') operand
    call     := ('contains' | 'startswith' | 'endswith') '(' property ',' string ')'
    operand  := property | string | integer | decimal | 'true' | 'false' | 'null'
              | guid | datetimeoffset | date

A comparison has exactly one property; a literal on the left is moved to the right and the
operator flipped, so ``5 lt x`` and ``x gt 5`` give the same AST. ``not a eq 1`` means
``not (a eq 1)``: the AST has no boolean properties, so that is the only useful reading.
``contains(p,'x') eq true`` is accepted because older OData clients write it, and becomes
``contains(p,'x')`` (``ne true`` / ``eq false`` become ``not contains(p,'x')``).

"No filter" is ``None``: ``conjoin`` returns it when given nothing, ``evaluate(None, r)``
is True, and callers omit ``$filter`` instead of sending a match-everything expression
that some servers reject.

Evaluation follows OData's two-valued rules: ``ne`` is always the negation of ``eq``; a
missing key is null; ``x ne v`` is true when ``x`` is null or of another type; ordering
comparisons involving null, GUIDs, booleans or values of different types are false.
Record values are JSON-shaped, so a literal decides how the value is read: numbers compare
numerically whatever their type (a float as the shortest decimal that round-trips, i.e.
what the JSON said); a DateTimeOffset literal parses an ISO string (no offset means UTC);
a Date literal reads only ``YYYY-MM-DD``; a GUID literal reads any case or braces. String
ordering is by code point, not by a server's collation.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum, StrEnum
from typing import TypeAlias, TypeVar
from uuid import UUID

from tablesync.errors import FilterSyntaxError, MappingError

__all__ = [
    "MAX_DEPTH",
    "MAX_LENGTH",
    "And",
    "Call",
    "Compare",
    "Expr",
    "Func",
    "LiteralValue",
    "Not",
    "Op",
    "Or",
    "conjoin",
    "disjoin",
    "disjoined_within",
    "evaluate",
    "is_property_name",
    "parse",
    "properties",
    "to_odata",
    "validate_properties",
]

MAX_LENGTH = 4096
"""Longest filter text ``parse`` accepts, in characters."""

T = TypeVar("T")

MAX_DEPTH = 64
"""Deepest nesting of parentheses and ``not`` that ``parse`` accepts."""


class Op(StrEnum):
    """A comparison operator; the value is its OData keyword."""

    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GE = "ge"
    LT = "lt"
    LE = "le"

    def flipped(self) -> Op:
        """The operator that keeps the meaning when the operands swap sides."""
        return _FLIPPED.get(self, self)


_FLIPPED = {Op.GT: Op.LT, Op.LT: Op.GT, Op.GE: Op.LE, Op.LE: Op.GE}


class Func(StrEnum):
    """A string function; the value is its OData name."""

    CONTAINS = "contains"
    STARTSWITH = "startswith"
    ENDSWITH = "endswith"


LiteralValue: TypeAlias = str | int | Decimal | bool | UUID | datetime | date | None
"""A literal as a Python value. Datetimes from ``parse`` are tz-aware; numbers with a
decimal point are ``Decimal`` so that pushed-down filters keep the digits they were given."""


def _literal_key(value: LiteralValue) -> tuple[object, ...]:
    # Python says True == 1 == Decimal(1) and equates datetimes at the same instant in
    # different offsets; the AST must not, or `eq true` and `eq 1` would be "the same filter".
    if isinstance(value, datetime):
        return (datetime, value, value.utcoffset())
    return (type(value), value)


@dataclass(frozen=True, slots=True, eq=False)
class Compare:
    """``prop op value``; the property is always on the left.

    ``pos`` is the 0-based offset of the property in the text it was parsed from (None
    when built in code); it takes no part in equality or hashing.
    """

    prop: str
    op: Op
    value: LiteralValue
    pos: int | None = field(default=None, kw_only=True, repr=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Compare):
            return NotImplemented
        return (self.prop, self.op, _literal_key(self.value)) == (
            other.prop,
            other.op,
            _literal_key(other.value),
        )

    def __hash__(self) -> int:
        return hash((self.prop, self.op, _literal_key(self.value)))


@dataclass(frozen=True, slots=True)
class Call:
    """``func(prop,'value')``; ``pos`` as in ``Compare``."""

    func: Func
    prop: str
    value: str
    pos: int | None = field(default=None, kw_only=True, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Not:
    """``not operand``."""

    operand: Expr


@dataclass(frozen=True, slots=True)
class And:
    """``left and right``; the parser builds chains left-deep."""

    left: Expr
    right: Expr


@dataclass(frozen=True, slots=True)
class Or:
    """``left or right``; the parser builds chains left-deep."""

    left: Expr
    right: Expr


Expr: TypeAlias = Compare | Call | Not | And | Or

_RESERVED = frozenset({"and", "or", "not", "true", "false", "null", *Op})
_FUNCS = frozenset(Func)
_CONNECTIVES = frozenset({"and", "or", *Op})
_PROPERTY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_property_name(name: str) -> bool:
    """Whether ``name`` can stand as a property in a filter (an identifier, not a keyword)."""
    return _PROPERTY_RE.fullmatch(name) is not None and name not in _RESERVED


# ---------------------------------------------------------------- literals as text

_HEX = "[0-9A-Fa-f]"
_GUID_RE = re.compile(f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")
_INT_RE = re.compile(r"-?[0-9]+")
_DECIMAL_RE = re.compile(r"-?[0-9]+\.[0-9]+")
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
# Fractions up to 12 digits as OData allows; .NET writes 7, Python keeps 6, the rest is dropped.
_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})"
    r"(?::([0-9]{2})(?:\.([0-9]{1,12}))?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?"
)


def _parse_date(text: str) -> date:
    m = _DATE_RE.fullmatch(text)
    if m is None:
        raise ValueError("expected YYYY-MM-DD")
    return date(int(m[1]), int(m[2]), int(m[3]))


def _parse_datetime(text: str) -> datetime:
    """A datetime from OData/ISO 8601 text; naive when the text has no offset."""
    m = _DATETIME_RE.fullmatch(text)
    if m is None:
        raise ValueError("expected YYYY-MM-DDThh:mm[:ss[.fff]] and Z or ±hh:mm")
    tz: timezone | None = None
    if m[8] == "Z":
        tz = UTC
    elif m[8]:
        hours, minutes = int(m[8][1:3]), int(m[8][4:6])
        if minutes >= 60:
            raise ValueError("offset minutes must be in 0..59")
        offset = timedelta(hours=hours, minutes=minutes)
        tz = UTC if not offset else timezone(-offset if m[8][0] == "-" else offset)
    micro = int((m[7] or "").ljust(6, "0")[:6])
    return datetime(
        int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6] or 0), micro, tz
    )


def _format_literal(value: LiteralValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} has no OData literal")
        text = format(value, "f")
        # Without a point the text would parse back as an int.
        return text if "." in text else f"{text}.0"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None:
            raise ValueError(f"datetime {value} has no time zone")
        if offset % timedelta(minutes=1):
            raise ValueError(f"offset {offset} of {value} is not whole minutes")
        text = f"{value.year:04d}-{value:%m-%dT%H:%M:%S}"
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        if not offset:
            return text + "Z"
        sign = "-" if offset < timedelta(0) else "+"
        minutes = abs(offset) // timedelta(minutes=1)
        return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    if isinstance(value, date):
        return f"{value.year:04d}-{value:%m-%d}"
    raise TypeError(f"{type(value).__name__} is not a filter literal")


# ---------------------------------------------------------------- tokens


class _Kind(Enum):
    NAME = "name"
    LITERAL = "literal"
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    END = "end"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    text: str
    pos: int
    value: LiteralValue = None


_WHITESPACE = frozenset(" \t\r\n\f\v")
_PUNCTUATION = {"(": _Kind.LPAREN, ")": _Kind.RPAREN, ",": _Kind.COMMA}
# Bare literals (numbers, GUIDs, dates) are read as one run of these characters and then
# classified, so `2023-13-01` is reported as a bad date rather than as `2023` and junk.
_BARE_RE = re.compile(r"-?[0-9][0-9A-Za-z_.:+-]*")
_GUID_AT_RE = re.compile(_GUID_RE.pattern + r"(?![0-9A-Za-z_.:+-])")
_OPERATOR_HINT = " (comparison operators are eq, ne, gt, ge, lt, le)"
_HINTS = {
    "/": " (property paths are not supported)",
    '"': " (strings are in single quotes)",
    "&": " (logical operators are and, or, not)",
    "|": " (logical operators are and, or, not)",
    "!": _OPERATOR_HINT,
    "=": _OPERATOR_HINT,
    "<": _OPERATOR_HINT,
    ">": _OPERATOR_HINT,
}


def _error(message: str, text: str, pos: int) -> FilterSyntaxError:
    return FilterSyntaxError(message, expression=text, position=pos)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in _WHITESPACE:
            i += 1
        elif ch in _PUNCTUATION:
            tokens.append(_Token(_PUNCTUATION[ch], ch, i))
            i += 1
        elif ch == "'":
            i = _read_string(text, i, tokens)
        elif m := _BARE_RE.match(text, i):
            tokens.append(_Token(_Kind.LITERAL, m[0], i, _bare_literal(m[0], text, i)))
            i = m.end()
        elif m := _GUID_AT_RE.match(text, i):
            # A GUID may start with a letter; only the full 8-4-4-4-12 shape is one.
            tokens.append(_Token(_Kind.LITERAL, m[0], i, UUID(m[0])))
            i = m.end()
        elif m := _PROPERTY_RE.match(text, i):
            if text.startswith("-", m.end()):
                if re.fullmatch(f"{_HEX}{{8}}", m[0]):
                    raise _error(f"invalid GUID literal starting {m[0]!r}", text, i)
                raise _error("unexpected character '-'", text, m.end())
            tokens.append(_Token(_Kind.NAME, m[0], i))
            i = m.end()
        else:
            hint = _HINTS.get(ch, "")
            raise _error(f"unexpected character {ch!r}{hint}", text, i)
    tokens.append(_Token(_Kind.END, "", len(text)))
    return tokens


def _read_string(text: str, start: int, tokens: list[_Token]) -> int:
    parts: list[str] = []
    i = start + 1
    while True:
        end = text.find("'", i)
        if end < 0:
            raise _error("unterminated string literal", text, start)
        parts.append(text[i:end])
        if not text.startswith("'", end + 1):
            tokens.append(_Token(_Kind.LITERAL, text[start : end + 1], start, "'".join(parts)))
            return end + 1
        i = end + 2


def _bare_literal(chunk: str, text: str, pos: int) -> LiteralValue:
    if _INT_RE.fullmatch(chunk):
        return int(chunk)
    if _DECIMAL_RE.fullmatch(chunk):
        return Decimal(chunk)
    if _GUID_RE.fullmatch(chunk):
        return UUID(chunk)
    if _DATE_RE.fullmatch(chunk):
        try:
            return _parse_date(chunk)
        except ValueError as exc:
            raise _error(f"invalid Date literal {chunk!r}: {exc}", text, pos) from None
    if re.match(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T", chunk):
        try:
            value = _parse_datetime(chunk)
            if value.tzinfo is None:
                raise ValueError("a time zone ('Z' or ±hh:mm) is required")
        except ValueError as exc:
            raise _error(f"invalid DateTimeOffset literal {chunk!r}: {exc}", text, pos) from None
        return value
    if re.fullmatch(f"{_HEX}{{8}}(-{_HEX}*)+", chunk):
        raise _error(f"invalid GUID literal {chunk!r}", text, pos)
    raise _error(f"invalid literal {chunk!r}", text, pos)


# ---------------------------------------------------------------- parser


@dataclass(frozen=True, slots=True)
class _Prop:
    name: str
    pos: int


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def at_keyword(self, *words: str) -> bool:
        token = self.peek()
        return token.kind is _Kind.NAME and token.text in words

    def expected(self, what: str, token: _Token) -> FilterSyntaxError:
        if token.kind is _Kind.END:
            found = "end of input"
        else:
            shown = token.text if len(token.text) <= 40 else token.text[:37] + "..."
            found = f"string {shown}" if shown.startswith("'") else f"'{shown}'"
        return _error(f"expected {what}, found {found}", self.text, token.pos)

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _error(f"expression nested deeper than {MAX_DEPTH} levels", self.text, token.pos)

    def parse(self) -> Expr:
        expr = self.parse_or()
        if self.peek().kind is not _Kind.END:
            raise self.expected("'and', 'or' or end of input", self.peek())
        return expr

    def parse_or(self) -> Expr:
        expr = self.parse_and()
        while self.at_keyword("or"):
            self.advance()
            expr = Or(expr, self.parse_and())
        return expr

    def parse_and(self) -> Expr:
        expr = self.parse_unary()
        while self.at_keyword("and"):
            self.advance()
            expr = And(expr, self.parse_unary())
        return expr

    def parse_unary(self) -> Expr:
        token = self.peek()
        if self.at_keyword("not"):
            self.advance()
            self.enter(token)
            operand = self.parse_unary()
            self.depth -= 1
            return Not(operand)
        if token.kind is _Kind.LPAREN:
            self.advance()
            self.enter(token)
            inner = self.parse_or()
            if self.peek().kind is not _Kind.RPAREN:
                raise self.expected(
                    f"'and', 'or' or ')' closing the '(' at position {token.pos}", self.peek()
                )
            self.advance()
            self.depth -= 1
            return inner
        if token.kind is _Kind.NAME and token.text in _FUNCS and self.peek(1).kind is _Kind.LPAREN:
            return self.parse_call()
        if token.kind not in (_Kind.NAME, _Kind.LITERAL) or token.text in _CONNECTIVES:
            raise self.expected("an expression", token)
        return self.parse_comparison()

    def parse_call(self) -> Expr:
        func = Func(self.advance().text)
        self.advance()
        prop = self.peek()
        if prop.kind is not _Kind.NAME or prop.text in _RESERVED:
            raise self.expected(f"a property name as the first argument of {func}()", prop)
        self.advance()
        if self.peek().kind is not _Kind.COMMA:
            raise self.expected("','", self.peek())
        self.advance()
        arg = self.peek()
        if arg.kind is not _Kind.LITERAL or not isinstance(arg.value, str):
            raise self.expected(f"a string literal as the second argument of {func}()", arg)
        self.advance()
        if self.peek().kind is not _Kind.RPAREN:
            raise self.expected(f"')' closing {func}(", self.peek())
        self.advance()
        call = Call(func, prop.text, arg.value, pos=prop.pos)
        if not self.at_keyword("eq", "ne"):
            return call
        negate = self.advance().text == "ne"
        truth = self.peek()
        if truth.kind is not _Kind.NAME or truth.text not in ("true", "false"):
            raise self.expected(
                f"'true' or 'false' after {func}(...) {Op.NE if negate else Op.EQ}", truth
            )
        self.advance()
        return Not(call) if negate == (truth.text == "true") else call

    def parse_operand(self) -> _Prop | LiteralValue:
        token = self.peek()
        if token.kind is _Kind.LITERAL:
            self.advance()
            return token.value
        if token.kind is _Kind.NAME and token.text in ("true", "false", "null"):
            self.advance()
            return {"true": True, "false": False, "null": None}[token.text]
        if token.kind is _Kind.NAME and token.text not in _RESERVED:
            self.advance()
            return _Prop(token.text, token.pos)
        raise self.expected("a property name or literal", token)

    def parse_comparison(self) -> Compare:
        start = self.peek()
        left = self.parse_operand()
        op_token = self.peek()
        if not self.at_keyword(*Op):
            raise self.expected("a comparison operator (eq, ne, gt, ge, lt, le)", op_token)
        op = Op(self.advance().text)
        right_token = self.peek()
        right = self.parse_operand()
        if isinstance(left, _Prop):
            if isinstance(right, _Prop):
                raise _error(
                    f"expected a literal to compare property {left.name!r} with, "
                    f"found property {right.name!r}",
                    self.text,
                    right.pos,
                )
            return Compare(left.name, op, right, pos=left.pos)
        if isinstance(right, _Prop):
            return Compare(right.name, op.flipped(), left, pos=right.pos)
        raise _error(
            f"a comparison needs a property on one side, found literals {start.text} and "
            f"{right_token.text}",
            self.text,
            start.pos,
        )


def parse(text: str) -> Expr:
    """Parse a filter expression; raise FilterSyntaxError naming what was expected and where."""
    if not text.strip("".join(_WHITESPACE)):
        raise _error("empty filter expression", text, 0)
    if len(text) > MAX_LENGTH:
        raise _error(
            f"filter longer than {MAX_LENGTH} characters", text[: MAX_LENGTH + 1], MAX_LENGTH
        )
    return _Parser(text).parse()


# ---------------------------------------------------------------- walking the AST


def _chain(expr: And | Or) -> list[Expr]:
    """The operands of a left-deep chain of one operator, in source order.

    Walking chains in a loop keeps long `a and b and ...` filters from costing one
    Python stack frame per operand."""
    kind = type(expr)
    operands: list[Expr] = []
    node: Expr = expr
    while isinstance(node, kind):
        operands.append(node.right)
        node = node.left
    operands.append(node)
    operands.reverse()
    return operands


def _leaves(expr: Expr) -> Iterator[Compare | Call]:
    """Comparisons and calls in source order."""
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, Compare | Call):
            yield node
        elif isinstance(node, Not):
            stack.append(node.operand)
        else:
            stack.append(node.right)
            stack.append(node.left)


def to_odata(expr: Expr) -> str:
    """Canonical OData text for ``expr``; ``parse(to_odata(e)) == e`` within the parser's limits.

    Raise ValueError for what has no OData spelling: an invalid property name, a
    non-finite Decimal, a naive datetime or one whose offset is not whole minutes."""
    if isinstance(expr, Compare | Call):
        if not is_property_name(expr.prop):
            raise ValueError(f"{expr.prop!r} is not a valid property name")
        if isinstance(expr, Call):
            return f"{expr.func}({expr.prop},{_format_literal(expr.value)})"
        return f"{expr.prop} {expr.op} {_format_literal(expr.value)}"
    if isinstance(expr, Not):
        inner = to_odata(expr.operand)
        return f"not {inner}" if isinstance(expr.operand, Call | Not) else f"not ({inner})"
    keyword = " and " if isinstance(expr, And) else " or "
    # Nested and/or always get parentheses: unambiguous to readers and to every server.
    return keyword.join(
        f"({to_odata(o)})" if isinstance(o, And | Or) else to_odata(o) for o in _chain(expr)
    )


def properties(expr: Expr | None) -> frozenset[str]:
    """Every property ``expr`` reads."""
    return frozenset() if expr is None else frozenset(leaf.prop for leaf in _leaves(expr))


def conjoin(*exprs: Expr | None) -> Expr | None:
    """All of ``exprs`` and-combined, left-deep; None ("no filter") ones are skipped."""
    result: Expr | None = None
    for expr in exprs:
        if expr is not None:
            result = expr if result is None else And(result, expr)
    return result


def disjoin(*exprs: Expr | None) -> Expr | None:
    """Any of ``exprs`` or-combined, left-deep; None ones are skipped (no
    alternative left is None, which a caller must not read as "no filter")."""
    result: Expr | None = None
    for expr in exprs:
        if expr is not None:
            result = expr if result is None else Or(result, expr)
    return result


def disjoined_within(
    items: Sequence[T],
    alternative: Callable[[T], Expr],
    *,
    within: Expr | None = None,
    limit: int = MAX_LENGTH,
    most: int | None = None,
) -> list[list[T]]:
    """``items`` in order, in consecutive chunks whose alternatives, or-combined
    and and-combined with ``within``, render in at most ``limit`` characters
    (``to_odata``), and of at most ``most`` items: one request each that a
    side's URL limits (and the grammar's ``MAX_LENGTH``) let through. An item
    whose query is too long even alone is a chunk of its own, so the side
    refuses that request only.

    Lengths are counted as if every alternative were parenthesised and joined
    by ``" or "``: never less than the text, at most a few characters more."""
    base = len(to_odata(within)) + len("() and ()") if within is not None else 0
    chunks: list[list[T]] = []
    used = base
    for item in items:
        size = len(to_odata(alternative(item))) + len("() or ")
        last = chunks[-1] if chunks else None
        if last is None or used + size > limit or (most is not None and len(last) >= most):
            chunks.append([item])
            used = base + size
        else:
            last.append(item)
            used += size
    return chunks


def validate_properties(
    expr: Expr | None, allowed: Collection[str], *, source: str | None = None
) -> None:
    """Raise if ``expr`` reads a property outside ``allowed``.

    With the ``source`` text ``expr`` was parsed from, the error is a FilterSyntaxError
    pointing at the property; otherwise a MappingError naming it."""
    if expr is None:
        return
    for leaf in _leaves(expr):
        if leaf.prop in allowed:
            continue
        message = f"unknown property {leaf.prop!r}"
        close = difflib.get_close_matches(leaf.prop, list(allowed), n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        if source is not None and leaf.pos is not None:
            raise FilterSyntaxError(message, expression=source, position=leaf.pos)
        raise MappingError(message)


# ---------------------------------------------------------------- evaluation

_T = TypeVar("_T", str, Decimal, datetime, date)


def _sign(a: _T, b: _T) -> int:
    return (a > b) - (a < b)


def _as_decimal(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        # repr is the shortest text that round-trips, i.e. what the JSON said: 0.1 stays 0.1.
        value = Decimal(repr(value))
    if isinstance(value, Decimal) and not value.is_nan():
        return value
    return None


def _as_aware(value: datetime) -> datetime:
    # BC and Dataverse send UTC; a value without an offset is taken to be UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _as_datetime(value: object) -> datetime | None:
    if isinstance(value, str):
        try:
            value = _parse_datetime(value)
        except ValueError:
            return None
    return _as_aware(value) if isinstance(value, datetime) else None


def _as_date(value: object) -> date | None:
    if isinstance(value, str):
        try:
            return _parse_date(value)
        except ValueError:
            return None
    return value if isinstance(value, date) and not isinstance(value, datetime) else None


def _as_uuid(value: object) -> UUID | None:
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            return None
    return value if isinstance(value, UUID) else None


def _relate(literal: LiteralValue, raw: object, ignore_case: bool) -> tuple[int, bool] | None:
    """How ``raw`` compares with ``literal``: (sign, whether the type is ordered), or None
    when the two cannot be compared (different types, or one of them null)."""
    if literal is None or raw is None:
        return (0, False) if literal is None and raw is None else None
    if isinstance(literal, bool):
        return (int(raw != literal), False) if isinstance(raw, bool) else None
    if isinstance(literal, int | Decimal):
        number, wanted = _as_decimal(raw), _as_decimal(literal)
        return None if number is None or wanted is None else (_sign(number, wanted), True)
    if isinstance(literal, str):
        if not isinstance(raw, str):
            return None
        if ignore_case:
            return _sign(raw.casefold(), literal.casefold()), True
        return _sign(raw, literal), True
    if isinstance(literal, UUID):
        guid = _as_uuid(raw)
        return None if guid is None else (int(guid != literal), False)
    if isinstance(literal, datetime):
        moment = _as_datetime(raw)
        return None if moment is None else (_sign(moment, _as_aware(literal)), True)
    day = _as_date(raw)
    return None if day is None else (_sign(day, literal), True)


def _compare(expr: Compare, raw: object, ignore_case: bool) -> bool:
    relation = _relate(expr.value, raw, ignore_case)
    if relation is None:
        return expr.op is Op.NE
    sign, ordered = relation
    if expr.op is Op.EQ:
        return sign == 0
    if expr.op is Op.NE:
        return sign != 0
    if not ordered:
        return False
    if expr.op is Op.GT:
        return sign > 0
    if expr.op is Op.GE:
        return sign >= 0
    if expr.op is Op.LT:
        return sign < 0
    return sign <= 0


def _call(expr: Call, raw: object, ignore_case: bool) -> bool:
    if not isinstance(raw, str):
        return False
    text, part = (raw.casefold(), expr.value.casefold()) if ignore_case else (raw, expr.value)
    if expr.func is Func.CONTAINS:
        return part in text
    if expr.func is Func.STARTSWITH:
        return text.startswith(part)
    return text.endswith(part)


def evaluate(expr: Expr | None, record: Mapping[str, object], *, ignore_case: bool = False) -> bool:
    """Whether ``record`` (JSON-shaped values) matches ``expr``; None matches everything.

    Never raises for any record. ``ignore_case`` makes string comparisons and functions
    case-insensitive, as Dataverse's SQL collation is; it applies to ordering too."""
    if expr is None:
        return True
    if isinstance(expr, Compare):
        return _compare(expr, record.get(expr.prop), ignore_case)
    if isinstance(expr, Call):
        return _call(expr, record.get(expr.prop), ignore_case)
    if isinstance(expr, Not):
        return not evaluate(expr.operand, record, ignore_case=ignore_case)
    operands = (evaluate(o, record, ignore_case=ignore_case) for o in _chain(expr))
    return all(operands) if isinstance(expr, And) else any(operands)
