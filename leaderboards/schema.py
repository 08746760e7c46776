"""The declared, versioned leaderboard schema and the validation of one row.

A row is a flat mapping: fixed *core* columns with declared Arrow types, plus
dynamic prefixed columns whose names carry the type family:

* ``param.<name>``  every sampled parameter (float64 / int64 / string / bool, null when inactive)
* ``metric.<name>`` final metrics (float64), e.g. ``metric.val/mAP07``
* ``best.<name>``   best-during-training metrics (float64), with ``best_epoch``
* ``curve.<name>``  curves as ``list<float64>`` (``curve.precision``, ``curve.recall``)

Convenience keys ``params`` / ``metrics`` / ``best`` / ``curves`` (dicts) expand into
the prefixed columns. Column documentation lives in ``SCHEMA.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from irstdlab.leaderboards.errors import LeaderboardError

SCHEMA_VERSION = 1
STATUSES = ("completed", "early_stopped", "failed", "interrupted")
PREFIXES = ("param.", "metric.", "best.", "curve.")
KEY = ("search", "trial_id")  # one row per key; a newer write replaces an older one
TS = pa.timestamp("us", tz="UTC")

CORE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("schema_version", pa.int32(), nullable=False),
    pa.field("search", pa.string(), nullable=False),
    pa.field("trial_id", pa.string(), nullable=False),
    pa.field("config_hash", pa.string()),
    pa.field("space_hash", pa.string()),
    pa.field("stage", pa.string()),  # "tune" / "confirm" in a staged search, null otherwise
    pa.field("seed", pa.int64()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("failure_reason", pa.string()),
    pa.field("stop_reason", pa.string()),
    pa.field("epochs_completed", pa.int64()),
    pa.field("max_epochs", pa.int64()),
    pa.field("fidelity", pa.float64()),
    pa.field("best_epoch", pa.int64()),
    pa.field("params_json", pa.string()),
    pa.field("model", pa.string(), nullable=False),
    pa.field("backbone", pa.string()),
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("split", pa.string()),
    pa.field("protocol", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("note", pa.string()),
    pa.field("gmacs", pa.float64()),
    pa.field("params_m", pa.float64()),
    pa.field("wall_time_s", pa.float64()),
    pa.field("hardware", pa.string()),
    pa.field("irstdlab_version", pa.string()),
    pa.field("torch_version", pa.string()),
    pa.field("ray_version", pa.string()),
    pa.field("python_version", pa.string()),
    pa.field("started_at", TS),
    pa.field("ended_at", TS),
    pa.field("written_at", TS, nullable=False),
    pa.field("checkpoint", pa.string()),
)
CORE: dict[str, pa.DataType] = {f.name: f.type for f in CORE_FIELDS}
REQUIRED = ("search", "trial_id", "status", "model", "dataset", "protocol")
_EXPAND = {"params": "param.", "metrics": "metric.", "best": "best.", "curves": "curve."}


def core_schema() -> pa.Schema:
    """The declared core columns, in order, with the schema version in the metadata."""
    return pa.schema(CORE_FIELDS, metadata={b"irstdlab.schema_version": str(SCHEMA_VERSION).encode()})


def is_dynamic(name: str) -> bool:
    return name.startswith(PREFIXES) and len(name) > name.index(".") + 1


def _is_bool(v: Any) -> bool:
    return isinstance(v, (bool, np.bool_))


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not _is_bool(v)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not _is_bool(v)


def _timestamp(name: str, v: Any) -> dt.datetime | None:
    if v is None:
        return None
    if isinstance(v, str):
        try:
            v = dt.datetime.fromisoformat(v)
        except ValueError as exc:
            raise LeaderboardError(name, f"not an ISO timestamp: {v!r}") from exc
    elif _is_real(v):
        v = dt.datetime.fromtimestamp(float(v), tz=dt.UTC)
    elif hasattr(v, "to_pydatetime"):  # pandas.Timestamp
        v = v.to_pydatetime()
    if not isinstance(v, dt.datetime):
        raise LeaderboardError(name, f"expected a datetime, ISO string or epoch seconds, got {type(v).__name__}")
    return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)


def _core_value(name: str, v: Any) -> Any:
    t = CORE[name]
    if v is None:
        return None
    if pa.types.is_string(t):
        if not isinstance(v, str):
            raise LeaderboardError(name, f"expected a string, got {type(v).__name__} {v!r}")
        return v
    if pa.types.is_integer(t):
        if not _is_int(v):
            raise LeaderboardError(name, f"expected an integer, got {type(v).__name__} {v!r}")
        return int(v)
    if pa.types.is_floating(t):
        if not _is_real(v):
            raise LeaderboardError(name, f"expected a number, got {type(v).__name__} {v!r}")
        return float(v)
    return _timestamp(name, v)


def _param_type(name: str, v: Any) -> pa.DataType:
    if v is None:
        return pa.null()
    if _is_bool(v):
        return pa.bool_()
    if _is_int(v):
        return pa.int64()
    if _is_real(v):
        return pa.float64()
    if isinstance(v, str):
        return pa.string()
    raise LeaderboardError(name, f"a parameter must be a number, string, bool or None, got {type(v).__name__}")


def _dynamic(name: str, v: Any) -> tuple[Any, pa.DataType]:
    if name.startswith("param."):
        t = _param_type(name, v)
        return (None if v is None else (bool(v) if t == pa.bool_() else int(v) if t == pa.int64()
                                        else float(v) if t == pa.float64() else v)), t
    if name.startswith("curve."):
        if v is None:
            return None, pa.list_(pa.float64())
        try:
            values = [float(x) for x in v]
        except (TypeError, ValueError) as exc:
            raise LeaderboardError(name, "a curve must be a sequence of numbers") from exc
        return values, pa.list_(pa.float64())
    if v is not None and not _is_real(v):
        raise LeaderboardError(name, f"expected a number (float64), got {type(v).__name__} {v!r}")
    return (None if v is None else float(v)), pa.float64()


def _expand(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if not isinstance(k, str):
            raise LeaderboardError(repr(k), "column names must be strings")
        if k in _EXPAND:
            if not isinstance(v, Mapping):
                raise LeaderboardError(k, f"expected a mapping of names to values, got {type(v).__name__}")
            for sub, val in v.items():
                name = _EXPAND[k] + str(sub)
                if name in row or name in out:
                    raise LeaderboardError(name, f"given twice (as a column and inside {k!r})")
                out[name] = val
        else:
            out[k] = v
    return out


def normalize_row(row: Mapping[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """Validate a row and fill the derived columns; returns a new flat dict.

    Raises ``LeaderboardError`` naming the field for a missing required key, an
    unknown column, a wrong type, an unknown status or an impossible fidelity.
    """
    if not isinstance(row, Mapping):
        raise LeaderboardError("row", f"expected a mapping, got {type(row).__name__}")
    flat = _expand(row)
    for key in REQUIRED:
        if flat.get(key) in (None, ""):
            raise LeaderboardError(key, "required column is missing or empty")
    unknown = [k for k in flat if k not in CORE and not is_dynamic(k)]
    if unknown:
        raise LeaderboardError(unknown[0], "unknown column (core columns are listed in SCHEMA.md; "
                               "use the param./metric./best./curve. prefixes for the rest)")
    out = {name: _core_value(name, flat.get(name)) for name in CORE}
    if out["schema_version"] is None:
        out["schema_version"] = SCHEMA_VERSION
    elif out["schema_version"] > SCHEMA_VERSION:
        raise LeaderboardError("schema_version", f"{out['schema_version']} is newer than this irstdlab "
                               f"understands ({SCHEMA_VERSION})")
    if out["status"] not in STATUSES:
        raise LeaderboardError("status", f"unknown status {out['status']!r}; expected one of {', '.join(STATUSES)}")
    if any(c in out["search"] for c in "\n\r\x00"):
        raise LeaderboardError("search", "must not contain control characters")
    out["source"] = out["source"] or "run"
    out["written_at"] = out["written_at"] or (now or dt.datetime.now(dt.UTC))
    done, total = out["epochs_completed"], out["max_epochs"]
    if out["fidelity"] is None:
        if done is not None and total:
            out["fidelity"] = done / total
        elif out["status"] == "completed":
            out["fidelity"] = 1.0
    fid = out["fidelity"]
    if fid is not None and not (0.0 <= fid <= 1.0 + 1e-9):
        raise LeaderboardError("fidelity", f"must lie in [0, 1], got {fid}")
    dyn = {k: flat[k] for k in sorted(k for k in flat if is_dynamic(k))}
    if out["params_json"] is None:
        params = {k[len("param."):]: v for k, v in dyn.items() if k.startswith("param.")}
        out["params_json"] = json.dumps(params, sort_keys=True, default=_json_default)
    out.update(dyn)
    return out


def _json_default(v: Any) -> Any:
    if _is_int(v):
        return int(v)
    if _is_real(v):
        return float(v)
    if _is_bool(v):
        return bool(v)
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def row_table(row: Mapping[str, Any], now: dt.datetime | None = None) -> pa.Table:
    """One validated row as a one-row Arrow table: declared core types, typed dynamic columns."""
    flat = normalize_row(row, now)
    arrays, fields = [], []
    for f in CORE_FIELDS:
        arrays.append(pa.array([flat[f.name]], type=f.type))
        fields.append(pa.field(f.name, f.type))  # nullable in storage; required is checked above
    for name in (k for k in flat if k not in CORE):
        value, t = _dynamic(name, flat[name])
        if isinstance(value, float) and math.isinf(value) and name.startswith("param."):
            raise LeaderboardError(name, "infinite parameter value")
        arrays.append(pa.array([value], type=t))
        fields.append(pa.field(name, t))
    schema = pa.schema(fields, metadata=core_schema().metadata)
    return pa.Table.from_arrays(arrays, schema=schema)


def to_pandas(table: pa.Table) -> Any:
    """Arrow -> pandas keeping integer columns integer when they hold nulls (nullable Int64)."""
    import pandas as pd

    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.int32(): pd.Int32Dtype()}.get)


def cast_core(table: pa.Table) -> pa.Table:
    """Add missing core columns (null) and cast present ones to the declared types."""
    n = table.num_rows
    for f in CORE_FIELDS:
        if f.name not in table.column_names:
            table = table.append_column(pa.field(f.name, f.type), pa.nulls(n, f.type))
        elif table.schema.field(f.name).type != f.type:
            i = table.column_names.index(f.name)
            table = table.set_column(i, pa.field(f.name, f.type), table.column(f.name).cast(f.type))
    core = [f.name for f in CORE_FIELDS]
    rest = sorted(c for c in table.column_names if c not in CORE)
    return table.select(core + rest)
