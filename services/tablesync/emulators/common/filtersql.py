"""``$filter`` ASTs (``tablesync.core.filters``) compiled to SQL with bind parameters.

The SQL keeps OData's two-valued logic: a comparison with a null column is false, and
``ne`` is true for null. ``not`` is pushed down to the leaves (De Morgan), where a
negated comparison becomes ``(…) IS NOT TRUE``, so SQL's unknown never leaks through a
negation. Literals must match the property's EDM type, as both APIs require.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from uuid import UUID

from tablesync.core.catalog import FieldDef
from tablesync.core.filters import And, Call, Compare, Expr, Func, LiteralValue, Not, Op, Or
from tablesync.emulators.common.problems import ApiProblem, Kind
from tablesync.emulators.common.sql import Params, TableSpec, ident, sql_type

__all__ = ["compile_filter", "like_pattern"]

_SQL_OPS = {Op.EQ: "=", Op.NE: "<>", Op.GT: ">", Op.GE: ">=", Op.LT: "<", Op.LE: "<="}
_OP_NAMES = {
    Op.EQ: "Equal",
    Op.NE: "NotEqual",
    Op.GT: "GreaterThan",
    Op.GE: "GreaterThanOrEqual",
    Op.LT: "LessThan",
    Op.LE: "LessThanOrEqual",
}
_NUMERIC = frozenset({"Edm.Int32", "Edm.Int64", "Edm.Decimal"})


def _literal_type(value: LiteralValue) -> str:
    if isinstance(value, bool):
        return "Edm.Boolean"
    if isinstance(value, int):
        return "Edm.Int32" if -(2**31) <= value < 2**31 else "Edm.Int64"
    if isinstance(value, Decimal):
        return "Edm.Decimal"
    if isinstance(value, str):
        return "Edm.String"
    if isinstance(value, UUID):
        return "Edm.Guid"
    if isinstance(value, datetime):
        return "Edm.DateTimeOffset"
    if isinstance(value, date):
        return "Edm.Date"
    return "null"


def _incompatible(field: FieldDef, value: LiteralValue, op: str) -> ApiProblem:
    return ApiProblem(
        Kind.BAD_QUERY,
        "A binary operator with incompatible types was detected. Found operand types "
        f"'{field.edm_type}' and '{_literal_type(value)}' for operator kind '{op}' "
        f"(property '{field.name}').",
    )


def like_pattern(text: str, func: Func) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if func is Func.CONTAINS:
        return f"%{escaped}%"
    if func is Func.STARTSWITH:
        return f"{escaped}%"
    return f"%{escaped}"


class _Compiler:
    def __init__(self, spec: TableSpec, params: Params) -> None:
        self.spec = spec
        self.params = params

    def field(self, name: str) -> FieldDef:
        field = self.spec.entity.fields.get(name)
        if field is None:
            raise ApiProblem(Kind.UNKNOWN_PROPERTY, f"Could not find a property named '{name}'.")
        return field

    def compile(self, expr: Expr, negated: bool) -> str:
        if isinstance(expr, Not):
            return self.compile(expr.operand, not negated)
        if isinstance(expr, And | Or):
            operands = self.chain(expr)
            # De Morgan: a negated AND is an OR of negated operands, and the reverse.
            conjunction = isinstance(expr, And) != negated
            joiner = " AND " if conjunction else " OR "
            return "(" + joiner.join(self.compile(o, negated) for o in operands) + ")"
        if isinstance(expr, Call):
            return self.call(expr, negated)
        return self.compare(expr, negated)

    @staticmethod
    def chain(expr: And | Or) -> list[Expr]:
        kind = type(expr)
        operands: list[Expr] = []
        stack: list[Expr] = [expr]
        while stack:
            node = stack.pop()
            if isinstance(node, kind):
                stack.append(node.right)
                stack.append(node.left)
            else:
                operands.append(node)
        return operands

    def call(self, expr: Call, negated: bool) -> str:
        field = self.field(expr.prop)
        if field.edm_type != "Edm.String":
            raise ApiProblem(
                Kind.BAD_QUERY,
                f"The function '{expr.func}' needs a string property; '{field.name}' is "
                f"{field.edm_type}.",
            )
        column = self.spec.text_expr(ident(field.name))
        pattern = self.spec.text_expr(self.params.add(like_pattern(expr.value, expr.func), "text"))
        sql = f"{column} LIKE {pattern}"
        return f"({sql}) IS NOT TRUE" if negated else sql

    def compare(self, expr: Compare, negated: bool) -> str:
        field = self.field(expr.prop)
        column = ident(field.name)
        op = expr.op
        if expr.value is None:
            if op not in (Op.EQ, Op.NE):
                return "TRUE" if negated else "FALSE"
            is_null = (op is Op.EQ) != negated
            return f"{column} IS NULL" if is_null else f"{column} IS NOT NULL"
        value = self.check(field, expr.value, op)
        placeholder = self.placeholder(field, value)
        if field.edm_type == "Edm.String":
            column = self.spec.text_expr(column)
            placeholder = self.spec.text_expr(placeholder)
        if op in (Op.EQ, Op.NE):
            equal = (op is Op.EQ) != negated
            # ne is true for null: two-valued OData, not SQL's unknown.
            return (
                f"{column} = {placeholder}" if equal else f"{column} IS DISTINCT FROM {placeholder}"
            )
        sql = f"{column} {_SQL_OPS[op]} {placeholder}"
        return f"({sql}) IS NOT TRUE" if negated else sql

    def check(self, field: FieldDef, value: LiteralValue, op: Op) -> LiteralValue:
        kind = field.edm_type
        name = _OP_NAMES[op]
        ordering = op not in (Op.EQ, Op.NE)
        if kind in _NUMERIC:
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                raise _incompatible(field, value, name)
            return value
        if kind == "Edm.String":
            if not isinstance(value, str):
                raise _incompatible(field, value, name)
            return value
        if kind == "Edm.Guid":
            if not isinstance(value, UUID) or ordering:
                raise _incompatible(field, value, name)
            return value
        if kind == "Edm.Boolean":
            if not isinstance(value, bool) or ordering:
                raise _incompatible(field, value, name)
            return value
        if kind == "Edm.DateTimeOffset":
            if not isinstance(value, datetime):
                raise _incompatible(field, value, name)
            return value
        if not isinstance(value, date) or isinstance(value, datetime):
            raise _incompatible(field, value, name)
        return value

    def placeholder(self, field: FieldDef, value: LiteralValue) -> str:
        if field.edm_type in _NUMERIC and not _fits(field, value):
            # Compared as numeric, so a literal beyond the column's range is just unequal.
            return self.params.add(value, "numeric")
        return self.params.add(value, sql_type(field))


def _fits(field: FieldDef, value: LiteralValue) -> bool:
    if isinstance(value, Decimal):
        return field.edm_type == "Edm.Decimal"
    if isinstance(value, int) and field.edm_type == "Edm.Int32":
        return -(2**31) <= value < 2**31
    if isinstance(value, int) and field.edm_type == "Edm.Int64":
        return -(2**63) <= value < 2**63
    return True


def compile_filter(expr: Expr, spec: TableSpec, params: Params) -> str:
    """SQL for a WHERE clause equivalent to ``expr`` on ``spec``'s table."""
    return _Compiler(spec, params).compile(expr, negated=False)
