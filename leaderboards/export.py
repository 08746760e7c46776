"""Exports: Markdown/HTML tables that read like a paper's (methods as rows, metrics as
columns, the best of each metric in bold, mean +- sd over seeds), and the raw rows
as CSV or a single Parquet file."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from irstdlab.leaderboards import query
from irstdlab.leaderboards.errors import LeaderboardError

FORMATS = ("md", "html", "csv", "parquet")


def _method(row: pd.Series, group_by: list[str]) -> str:
    if row.get("source", "run") != "run" and isinstance(row.get("note"), str):
        return f"{row['note']} [{row['source'].split(':')[-1]}]"
    vals = [str(row[c]) for c in group_by if c in row and pd.notna(row[c])]
    return " / ".join(vals) or "-"


PAPER_METRICS = ("mAP07", "mAP12", "recall07")  # the paper's columns, with GMACs and params


def default_metrics(df: pd.DataFrame) -> list[str]:
    """The paper's metric columns on the first split that has them (test, else val)."""
    def has(col: str) -> bool:
        return col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any()

    for split in ("test", "val"):
        cols = []
        for m in PAPER_METRICS:  # a run's recall column is "recall", the paper rows' "recall07"
            names = [f"metric.{split}/{m}"] + ([f"metric.{split}/recall"] if m == "recall07" else [])
            cols += [n for n in names if has(n)][:1]
        if cols:
            return cols
    return [c for c in query.metric_columns(df) if c.startswith("metric.") and has(c)][:3]


def _method_labels(sub: pd.DataFrame, group_by: list[str]) -> list[str]:
    """One label per configuration: rows that differ only in seed share it, while different
    configurations of one model get the start of their config hash appended, so they are
    never averaged together as if they were seeds."""
    base = [_method(r, group_by) for _, r in sub.iterrows()]
    if "config_hash" not in sub.columns:
        return base
    configs: dict[str, set[str]] = {}
    for label, h in zip(base, sub["config_hash"]):
        if isinstance(h, str):
            configs.setdefault(label, set()).add(h)
    return [f"{label} [{str(h)[:8]}]" if isinstance(h, str) and len(configs.get(label, ())) > 1 else label
            for label, h in zip(base, sub["config_hash"])]


def paper_table(df: pd.DataFrame, metrics: list[str] | None = None,
                group_by: list[str] | None = None) -> list[tuple[tuple[str, str], pd.DataFrame]]:
    """Per (protocol, dataset) block, one row per configuration with GMACs, params and metrics.

    Cells are strings ("0.283" or "0.283 ± 0.004" over n seeds); ``_best`` lists, per
    metric column, the method(s) holding the best mean (bolded by the renderers). By default
    the metrics are the paper's (mAP07, mAP12, recall07).
    """
    if not len(df):
        raise LeaderboardError("export", "no rows to export (check the selection)")
    group_by = group_by or ["model", "backbone"]
    metrics = [query.resolve_metric(df, m) for m in metrics] if metrics else default_metrics(df)
    out = []
    for key, sub in query.blocks(df):
        sub = sub.assign(_method=_method_labels(sub, group_by))
        first = {m: i for i, m in enumerate(dict.fromkeys(sub.sort_values(["source", "trial_id"])["_method"]))}
        cols = [c for c in ("gmacs", "params_m") if c in sub.columns
                and pd.to_numeric(sub[c], errors="coerce").notna().any()]
        cols += [m for m in metrics if pd.to_numeric(sub[m], errors="coerce").notna().any()]
        agg = sub.groupby("_method", sort=False)[cols].agg(lambda s: list(pd.to_numeric(s, errors="coerce").dropna()))
        table = pd.DataFrame(index=agg.index)
        means = pd.DataFrame(index=agg.index)
        for c in cols:
            means[c] = [np.mean(v) if v else np.nan for v in agg[c]]
            table[c] = [_cell(v) for v in agg[c]]
        table["seeds"] = [_seed_count(sub[sub["_method"] == m]) for m in agg.index]
        table.attrs["best"] = {}
        for c in cols:
            if c in ("gmacs", "params_m") or means[c].isna().all():
                continue
            best = means[c].max() if query.higher_is_better(c) else means[c].min()
            table.attrs["best"][c] = set(means.index[np.isclose(means[c], best, rtol=0, atol=1e-12)])
        main = next((c for c in cols if c.startswith("metric.")), None)
        paper = set(sub.loc[sub["source"] != "run", "_method"]) if "source" in sub.columns else set()
        # the paper's rows first, in their table order; then runs, best mean first
        order = sorted(table.index, key=lambda m: (m not in paper, first.get(m, 0) if m in paper
                                                   else -(means.loc[m, main] if main else 0)))
        out.append((key, table.loc[order]))
    return out


def _seed_count(rows: pd.DataFrame) -> int:
    """n = distinct seeds; a row without a seed (a paper row) counts once."""
    if "seed" not in rows.columns:
        return len(rows)
    seeds = pd.to_numeric(rows["seed"], errors="coerce")
    return int(seeds.dropna().nunique() + seeds.isna().sum())


def _cell(v: list[float]) -> str:
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.3f}" if abs(v[0]) < 1000 else f"{v[0]:.0f}"
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"


def _header(c: str) -> str:
    return {"gmacs": "GMACs", "params_m": "Params (M)", "seeds": "n"}.get(c, c.split(".", 1)[-1])


def to_markdown(df: pd.DataFrame, metrics: list[str] | None = None, group_by: list[str] | None = None) -> str:
    parts = []
    for (protocol, dataset), t in paper_table(df, metrics, group_by):
        best = t.attrs["best"]
        cols = list(t.columns)
        lines = [f"### protocol `{protocol}`, dataset `{dataset}`", "",
                 "| Method | " + " | ".join(_header(c) for c in cols) + " |",
                 "|:--|" + "--:|" * len(cols)]
        for m, row in t.iterrows():
            cells = [f"**{row[c]}**" if m in best.get(c, ()) else str(row[c]) for c in cols]
            lines.append(f"| {m.replace('|', '/')} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    note = "Mean ± sample s.d. over seeds where n > 1; best per metric in bold; GMACs = multiply-adds."
    return "\n\n".join(parts) + f"\n\n{note}\n"


def to_html(df: pd.DataFrame, metrics: list[str] | None = None, group_by: list[str] | None = None) -> str:
    parts = ["<!doctype html><meta charset='utf-8'><title>irstdlab leaderboard</title>",
             "<style>table{border-collapse:collapse;font-family:sans-serif;font-size:13px;margin-bottom:2em}"
             "th,td{padding:3px 10px;text-align:right}th{border-bottom:2px solid #333}"
             "td:first-child,th:first-child{text-align:left}tr:last-child td{border-bottom:2px solid #333}</style>"]
    for (protocol, dataset), t in paper_table(df, metrics, group_by):
        best = t.attrs["best"]
        cols = list(t.columns)
        parts.append(f"<h3>protocol {html.escape(protocol)}, dataset {html.escape(dataset)}</h3><table>")
        parts.append("<tr><th>Method</th>" + "".join(f"<th>{html.escape(_header(c))}</th>" for c in cols) + "</tr>")
        for m, row in t.iterrows():
            cells = "".join(f"<td><b>{html.escape(str(row[c]))}</b></td>" if m in best.get(c, ())
                            else f"<td>{html.escape(str(row[c]))}</td>" for c in cols)
            parts.append(f"<tr><td>{html.escape(m)}</td>{cells}</tr>")
        parts.append("</table>")
    return "\n".join(parts) + "\n"


def export(df: pd.DataFrame, fmt: str, out: str | Path | None = None, metrics: list[str] | None = None,
           group_by: list[str] | None = None) -> str | Path:
    """Write ``df`` as ``fmt``; md/html return their text too (and print when ``out`` is None)."""
    if fmt not in FORMATS:
        raise LeaderboardError("--format", f"{fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt in ("md", "html"):
        text = (to_markdown if fmt == "md" else to_html)(df, metrics, group_by)
        if out is not None:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(text, encoding="utf-8")
        return text
    if out is None:
        raise LeaderboardError("--out", f"required for --format {fmt}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = df.drop(columns=[c for c in ("partial",) if c in df.columns])
    if fmt == "csv":
        lists = [c for c in frame.columns if c.startswith("curve.")]
        frame = frame.assign(**{c: [json.dumps(list(map(float, v))) if v is not None and not
                                    (isinstance(v, float) and np.isnan(v)) else None for v in frame[c]]
                                for c in lists})
        frame.to_csv(out, index=False)
    else:
        frame.to_parquet(out, index=False)
    return out
