"""Selecting and ranking rows: filters over prefixed column names, metric names,
ranking blocks (protocol x dataset: never ranked together), terminal tables."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from irstdlab.leaderboards.errors import LeaderboardError
from irstdlab.leaderboards.filter_expr import filter_mask

BLOCK = ("protocol", "dataset")  # rows from different protocols / datasets never share a ranking
_LOWER_BETTER = ("fa", "loss", "latency", "time", "gmacs", "params_m", "wall_time_s")


def concat_frames(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True, sort=False)


def rankable(df: pd.DataFrame) -> pd.Series:
    """Full-fidelity completed rows: the only ones ranked by default."""
    if not len(df):
        return pd.Series([], dtype=bool)
    fid = pd.to_numeric(df.get("fidelity"), errors="coerce").fillna(0.0)
    return (df["status"] == "completed").fillna(False).astype(bool) & (fid >= 1.0 - 1e-9)


def apply_filter(df: pd.DataFrame, expr: str) -> pd.DataFrame:
    """Rows matching a filter where ``param.p``, ``metric.val/mAP07`` ... are written as-is.

    The expression is parsed and whitelisted, never executed (see ``filter_expr``).
    """
    if not expr or not expr.strip():
        return df
    return df[filter_mask(df, expr).to_numpy()]


def select(df: pd.DataFrame, filter: str | None = None, include_partial: bool = False,
           protocol: str | None = None, dataset: str | None = None) -> pd.DataFrame:
    if not len(df):
        return df
    ok = rankable(df)
    if include_partial:
        df = df.assign(partial=~ok.to_numpy())
    else:
        df = df[ok.to_numpy()]
    if protocol:
        df = df[df["protocol"] == protocol]
    if dataset:
        df = df[df["dataset"] == dataset]
    return apply_filter(df, filter).reset_index(drop=True) if filter else df.reset_index(drop=True)


def metric_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if str(c).startswith(("metric.", "best."))]


def resolve_metric(df: pd.DataFrame, name: str | None) -> str:
    """``val/mAP07`` -> ``metric.val/mAP07``; None -> a sensible default present in ``df``."""
    cols = set(df.columns)
    if name is None:
        for cand in ("metric.val/mAP07", "metric.test/mAP07"):
            if cand in cols:
                return cand
        found = metric_columns(df)
        if not found:
            raise LeaderboardError("--by", "no metric.* columns in the selected rows")
        return found[0]
    for cand in (name, f"metric.{name}", f"best.{name}"):
        if cand in cols:
            return cand
    known = ", ".join(c.split(".", 1)[1] for c in metric_columns(df)) or "none"
    raise LeaderboardError("--by" if "/" in name or "." not in name else name,
                           f"no metric {name!r} in the selected rows; known: {known[:300]}")


def ranking_metric(df: pd.DataFrame, by: str) -> str:
    """``by`` when these rows have it, else the nearest metric they do have.

    The paper's rows carry test metrics only; ranking them by ``val/mAP07`` would give an arbitrary
    order, so they are ranked by the test counterpart (``val/X`` -> ``test/X``), then by test/mAP07.
    """
    def has(col: str) -> bool:
        return col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any()

    candidates = [by, by.replace("/val/", "/test/").replace(".val/", ".test/"), "metric.test/mAP07",
                  *metric_columns(df)]
    return next((c for c in candidates if has(c)), by)


def resolve_column(df: pd.DataFrame, name: str) -> str:
    """A group/param column: ``model``, ``config_hash``, ``param.p`` or just ``p``."""
    for cand in (name, f"param.{name}"):
        if cand in df.columns:
            return cand
    raise LeaderboardError(name, "no such column in the selected rows")


def higher_is_better(metric: str) -> bool:
    leaf = metric.rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower()
    return not (leaf.startswith(_LOWER_BETTER) or leaf.endswith("loss"))


def blocks(df: pd.DataFrame) -> Iterator[tuple[tuple[str, str], pd.DataFrame]]:
    """(protocol, dataset) blocks; each is ranked on its own."""
    if not len(df):
        return
    keys = df[list(BLOCK)].astype(object).where(df[list(BLOCK)].notna(), "?")
    for key, sub in df.groupby([keys[c] for c in BLOCK], sort=True):
        yield (str(key[0]), str(key[1])), sub


def top(df: pd.DataFrame, by: str, k: int | None) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """Per block, the best ``k`` rows by ``by`` (direction from the metric name); NaN last."""
    asc = not higher_is_better(by)
    out = []
    for key, sub in blocks(df):
        vals = pd.to_numeric(sub[by], errors="coerce").to_numpy(dtype=float)
        vals = np.where(np.isnan(vals), np.inf if asc else -np.inf, vals)
        order = np.argsort(vals if asc else -vals, kind="stable")
        if k is not None:
            order = order[:k]
        out.append((key, sub.iloc[order]))
    return out


def display_columns(df: pd.DataFrame, by: str, max_params: int = 4, max_metrics: int = 3) -> list[str]:
    """What `show` prints: identity, the ranking metric first, a few more metrics,
    the parameters that actually vary, cost and provenance."""
    cols = [c for c in ("search", "trial_id", "model", "backbone", "seed") if c in df.columns]
    cols.append(by)
    others = [c for c in df.columns if c.startswith("metric.") and c != by
              and pd.to_numeric(df[c], errors="coerce").notna().any()]
    cols += others[:max_metrics]
    varying = [c for c in df.columns if c.startswith("param.") and not c.startswith("param.paper_")
               and df[c].nunique(dropna=False) > 1]
    cols += varying[:max_params]
    cols += [c for c in ("gmacs", "params_m", "fidelity", "source") if c in df.columns and df[c].notna().any()]
    if "source" in df.columns and (df["source"] != "run").any():
        cols.append("note")  # the paper's row label (method, backbone, ablated setting)
    if "partial" in df.columns and df["partial"].any():
        cols.append("partial")
    return list(dict.fromkeys(cols))


def _fmt(v: object, width: int = 28) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
        return "-"
    if isinstance(v, (float, np.floating)):
        x = float(v)
        return f"{x:.4f}" if abs(x) < 1000 else f"{x:.1f}"
    s = str(v)
    return s if len(s) <= width else s[:width - 3] + "..."


def format_table(df: pd.DataFrame, cols: Sequence[str], rank: bool = True, width: int = 28) -> str:
    """A plain aligned text table (no extra dependency), short column headers."""
    heads = ["#"] * rank + [c.split(".", 1)[1] if c.startswith("metric.") else c for c in cols]
    rows = [[str(i + 1)] * rank + [_fmt(v, width) for v in rec]
            for i, rec in enumerate(df[list(cols)].itertuples(index=False, name=None))]
    widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(heads)]
    numeric = [False] * rank + [pd.api.types.is_numeric_dtype(df[c]) for c in cols]
    if rank:
        numeric[0] = True

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(heads), line(["-" * w for w in widths])] + [line(r) for r in rows])
