"""Leaderboard ``--filter`` expressions, parsed and evaluated without running any code.

A filter is pasted from notes and scripts and a leaderboard is shared across a lab, so it is data,
never code. ``pandas.DataFrame.query(engine="python")`` evaluates attribute chains
(``model.__init__.__globals__...``), so we do not hand the text to it. Instead the text is parsed
with :mod:`ast`, every node is checked against a small whitelist, and the whitelisted tree is
evaluated here with pandas operations on the columns.

Allowed: column names (``model``, ``seed``, and prefixed names such as ``param.model.name`` or
``metric.val/mAP07``, bare or in backticks), constants (numbers, strings, True/False/None), lists and
tuples of constants, comparisons (``== != < <= > >=``, chained too), ``in`` / ``not in``,
``and`` / ``or`` / ``not`` (and pandas' ``& | ~``), ``+ - * / // %`` and unary minus.
Anything else (attributes, subscripts, calls, lambdas, comprehensions, ``:=``, dunders, ``**``) is
refused by name before anything is evaluated.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from irstdlab.leaderboards.errors import LeaderboardError

WHERE = "--filter"
_LITERAL = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`)""")
_PREFIXED = re.compile(r"(?<![\w.])((?:param|metric|best|curve)\.[\w/.+-]+)")
_MAX_LEN = 4000  # a filter is a line, not a program

_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt,
    ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_ARITH: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_BITWISE: dict[type, Callable[[Any, Any], Any]] = {ast.BitAnd: operator.and_, ast.BitOr: operator.or_}

# What a refused node is called in the error message.
_REFUSED_NAMES: dict[type, str] = {
    ast.Attribute: "attribute access", ast.Subscript: "subscript", ast.Call: "function call",
    ast.Lambda: "lambda", ast.ListComp: "comprehension", ast.SetComp: "comprehension",
    ast.DictComp: "comprehension", ast.GeneratorExp: "comprehension", ast.NamedExpr: "walrus ':='",
    ast.Starred: "star expression", ast.IfExp: "conditional expression", ast.Dict: "dict literal",
    ast.JoinedStr: "f-string", ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
    ast.Slice: "slice",
}


def _refuse(node: ast.AST, text: str, what: str | None = None) -> LeaderboardError:
    token = ast.get_source_segment(text, node) or type(node).__name__
    kind = what or _REFUSED_NAMES.get(type(node), type(node).__name__)
    return LeaderboardError(WHERE, f"{kind} is not allowed in a filter: {token[:80]!r} (allowed: column "
                                   "names, constants, comparisons, in/not in, and/or/not, + - * / // %)")


def _unknown_column(name: str, columns: Sequence[str]) -> LeaderboardError:
    dotted = ", ".join(c for c in columns if "." in c)[:300] or "none"
    return LeaderboardError(WHERE, f"unknown column {name!r}; columns here: {dotted}")


def _substitute_columns(expr: str, columns: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Replace column names that are not identifiers (and backtick-quoted names) by placeholders.

    Returns the rewritten text and ``placeholder -> column``. Placeholders are plain identifiers
    that are not columns themselves, so they cannot be confused with user names.
    """
    special = sorted((c for c in columns if not c.isidentifier()), key=len, reverse=True)
    pattern = (re.compile(r"(?<![\w.`/])(" + "|".join(re.escape(c) for c in special) + r")(?![\w/])")
               if special else None)
    taken = set(columns)
    names: dict[str, str] = {}
    by_column: dict[str, str] = {}

    def placeholder(column: str) -> str:
        if column not in by_column:
            i = len(by_column)
            while f"irstdlab_col{i}" in taken:
                i += 1000
            by_column[column] = f"irstdlab_col{i}"
            names[by_column[column]] = column
        return by_column[column]

    out = []
    for i, part in enumerate(_LITERAL.split(expr)):
        if i % 2 == 1:  # a string literal or a backtick-quoted column name
            if part.startswith("`"):
                column = part[1:-1]
                if column not in taken:
                    raise _unknown_column(column, columns)
                part = placeholder(column)
        else:
            if pattern is not None:
                part = pattern.sub(lambda m: placeholder(m.group(1)), part)
            unknown = _PREFIXED.findall(part)
            if unknown:
                raise _unknown_column(unknown[0], columns)
        out.append(part)
    return "".join(out), names


def _violation(node: ast.AST, text: str) -> LeaderboardError | None:
    """Why ``node`` is not allowed in a filter, or None when it is."""
    if (isinstance(node, (ast.Expression, ast.Load, ast.BoolOp, ast.And, ast.Or, ast.Compare, ast.List,
                         ast.Tuple, ast.Set, ast.In, ast.NotIn, ast.Not, ast.USub, ast.UAdd, ast.Invert,
                         ast.UnaryOp))
            or isinstance(node, tuple(_COMPARE)) or isinstance(node, tuple(_ARITH))
            or isinstance(node, tuple(_BITWISE))):
        return None
    if isinstance(node, ast.Name):
        return _refuse(node, text, "a dunder name") if "__" in node.id else None
    if isinstance(node, ast.Constant):
        ok = isinstance(node.value, (str, int, float, bool, type(None)))
        return None if ok else _refuse(node, text, "this constant")
    if isinstance(node, ast.BinOp):
        ok = type(node.op) in _ARITH or type(node.op) in _BITWISE
        return None if ok else _refuse(node, text, f"operator {type(node.op).__name__}")
    if isinstance(node, (ast.Is, ast.IsNot)):
        return _refuse(node, text, "'is' (use == or !=)")
    return _refuse(node, text)


def _check(tree: ast.AST, text: str) -> None:
    """Refuse every node outside the whitelist before anything is evaluated, naming the first
    offending token as the user wrote it (the leftmost, innermost one)."""
    found: list[tuple[int, int, LeaderboardError]] = []
    for node in ast.walk(tree):
        err = _violation(node, text)
        if err is not None:
            found.append((getattr(node, "col_offset", 1 << 30), getattr(node, "end_col_offset", 1 << 30), err))
    if found:
        raise min(found, key=lambda f: (f[0], f[1]))[2]


class _Evaluator:
    def __init__(self, df: pd.DataFrame, names: dict[str, str], text: str):
        self.df, self.names, self.text = df, names, text

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.value(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            column = self.names.get(node.id, node.id)
            if column in self.df.columns:
                return self.df[column]
            if node.id in ("true", "false"):
                return node.id == "true"
            raise LeaderboardError(WHERE, f"unknown name {column!r} (quote strings, e.g. model == 'fcos'); "
                                          f"columns here: {', '.join(map(str, self.df.columns))[:300]}")
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self.value(e) for e in node.elts]
            if any(isinstance(v, pd.Series) for v in items):
                raise _refuse(node, self.text, "a column inside a list")
            return items
        if isinstance(node, ast.BoolOp):
            parts = [self._mask(self.value(v), v) for v in node.values]
            combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
            out = parts[0]
            for p in parts[1:]:
                out = combine(out, p)
            return out
        if isinstance(node, ast.UnaryOp):
            operand = self.value(node.operand)
            if isinstance(node.op, (ast.Not, ast.Invert)):
                return ~self._mask(operand, node.operand)
            return -operand if isinstance(node.op, ast.USub) else +operand
        if isinstance(node, ast.BinOp):
            left, right = self.value(node.left), self.value(node.right)
            if type(node.op) in _BITWISE:
                return _BITWISE[type(node.op)](self._mask(left, node.left), self._mask(right, node.right))
            return _ARITH[type(node.op)](left, right)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        raise _refuse(node, self.text)  # unreachable after _check; kept as a second guard

    def _compare(self, node: ast.Compare) -> pd.Series:
        left = self.value(node.left)
        result: pd.Series | None = None
        for op, right_node in zip(node.ops, node.comparators):
            right = self.value(right_node)
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right, list):
                    right = [right]
                mask = self._series(left).isin(right)
                part = ~mask if isinstance(op, ast.NotIn) else mask
            else:
                part = self._mask(_COMPARE[type(op)](left, right), node)
            result = part if result is None else result & part
            left = right
        assert result is not None
        return result

    def _series(self, value: Any) -> pd.Series:
        if isinstance(value, pd.Series):
            return value
        return pd.Series([value] * len(self.df), index=self.df.index)

    def _mask(self, value: Any, node: ast.AST) -> pd.Series:
        series = self._series(value)
        if series.dtype == bool:
            return series
        if series.dtype == object and series.map(lambda v: isinstance(v, (bool, np.bool_))).all():
            return series.astype(bool)
        raise LeaderboardError(WHERE, f"{(ast.get_source_segment(self.text, node) or '?')[:80]!r} is not a "
                                      "condition (compare it, e.g. x > 0)")


def filter_mask(df: pd.DataFrame, expr: str) -> pd.Series:
    """The boolean row mask of a filter expression over ``df`` (see the module docstring)."""
    if len(expr) > _MAX_LEN:
        raise LeaderboardError(WHERE, f"filter is {len(expr)} characters long; at most {_MAX_LEN}")
    columns = [str(c) for c in df.columns]
    text, names = _substitute_columns(expr.strip(), columns)
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise LeaderboardError(WHERE, f"{expr!r}: not a valid expression ({exc.msg})") from None
    _check(tree, text)
    try:
        mask = _Evaluator(df, names, text).value(tree)
    except LeaderboardError:
        raise
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise LeaderboardError(WHERE, f"{expr!r}: {type(exc).__name__}: {exc}") from None
    if not isinstance(mask, pd.Series):
        raise LeaderboardError(WHERE, f"{expr!r} does not depend on any column")
    if mask.dtype != bool:
        raise LeaderboardError(WHERE, f"{expr!r} is not a condition (compare it, e.g. x > 0)")
    return mask.fillna(False)
