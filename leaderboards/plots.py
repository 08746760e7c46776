"""PNG plots of a leaderboard: bars with CIs, Pareto fronts, ablations (paper
overlaid), stored PR curves, search history. matplotlib's object API (``Figure``,
Agg canvas) is imported inside the functions: no global state, no display needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from irstdlab.leaderboards import compare as C
from irstdlab.leaderboards import query
from irstdlab.leaderboards.errors import LeaderboardError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KINDS = ("bars", "pareto", "ablation", "pr", "history")  # `learning_curves` takes curves, not rows


def _figure(w: float, h: float, ncols: int = 1) -> tuple[Figure, list]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def _save(fig: Figure, out: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, dpi=110)
    return out


def _short(metric: str) -> str:
    return metric.split(".", 1)[-1]


def _label(row: pd.Series) -> str:
    if isinstance(row.get("note"), str) and row.get("source", "run") != "run":
        return row["note"]
    parts = [str(row.get("model"))]
    if isinstance(row.get("backbone"), str):
        parts.append(row["backbone"])
    return " ".join(parts) + f" [{row.get('trial_id')}]"


def plot_bars(df: pd.DataFrame, out: str | Path, metric: str | None = None,
              group_by: list[str] | None = None, n_boot: int = 2000) -> Path:
    """Group means with their bootstrap CIs, one panel per (protocol, dataset)."""
    blocks = C.compare(df, metric, group_by, n_boot=n_boot)
    if not blocks:
        raise LeaderboardError("plot bars", "no rows with a value for the metric")
    height = max(2.5, 0.45 * max(len(b.groups) for b in blocks) + 1.2)
    fig, axes = _figure(6.5 * len(blocks), height, len(blocks))
    for ax, b in zip(axes, blocks):
        gs = b.groups[::-1]  # best on top
        y = np.arange(len(gs))
        means = np.array([g.mean for g in gs])
        lo = np.array([g.mean - g.ci_low if np.isfinite(g.ci_low) else 0.0 for g in gs])
        hi = np.array([g.ci_high - g.mean if np.isfinite(g.ci_high) else 0.0 for g in gs])
        colors = ["tab:orange" if g.flag == "best" else "tab:blue" for g in gs]
        ax.barh(y, means, xerr=[lo, hi], color=colors, alpha=0.8, capsize=4)
        ax.set_yticks(y, [f"{g.group}  (n={g.n})" for g in gs])
        ax.set_xlabel(f"{_short(b.metric)}  (mean, 95% bootstrap CI)")
        ax.set_title(f"{b.protocol} / {b.dataset}")
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, out)


def pareto_front(cost: np.ndarray, value: np.ndarray, higher: bool = True) -> np.ndarray:
    """Indices of points no other point beats on both (lower cost, better value), by cost."""
    v = value if higher else -value
    order = np.lexsort((-v, cost))
    front, best = [], -np.inf
    for i in order:
        if v[i] > best:
            front.append(i)
            best = v[i]
    return np.array(front, dtype=int)


def group_means(df: pd.DataFrame, metric: str, group_by: list[str]) -> pd.DataFrame:
    """One point per group and (protocol, data set) block: the mean metric and cost over its rows
    (seeds), labelled with the group and its row count, for a Pareto plot of groups."""
    names = [query.resolve_column(df, g) for g in group_by]
    points = []
    for (protocol, dataset), sub in query.blocks(df):
        keys = sub[names].astype(object).where(sub[names].notna(), "-")
        for key, rows in sub.groupby([keys[c] for c in names], sort=True):
            mean = {c: pd.to_numeric(rows[c], errors="coerce").mean() for c in (metric, "gmacs", "params_m")
                    if c in rows}
            points.append({"protocol": protocol, "dataset": dataset, "source": "run", "backbone": None,
                           "model": C._label(key, names), "trial_id": f"mean of {len(rows)}", **mean})
    return pd.DataFrame(points)


def plot_pareto(df: pd.DataFrame, out: str | Path, metric: str | None = None,
                group_by: list[str] | None = None) -> Path:
    """Metric against GMACs and against parameters; the Pareto front of each block marked.
    With ``group_by``, one point per group (its mean over seeds) instead of one per row."""
    metric = query.resolve_metric(df, metric)
    if group_by:
        df = group_means(df, metric, group_by)
    higher = query.higher_is_better(metric)
    fig, axes = _figure(13, 5.5, 2)
    drawn = 0
    for ax, cost_col, xlabel in zip(axes, ("gmacs", "params_m"), ("GMACs (paper 'FLOPs')", "parameters (M)")):
        for n, ((protocol, dataset), sub) in enumerate(query.blocks(df)):
            x = pd.to_numeric(sub[cost_col], errors="coerce").to_numpy(dtype=float)
            y = pd.to_numeric(sub[metric], errors="coerce").to_numpy(dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            if not ok.any():
                continue
            sub, x, y = sub[ok], x[ok], y[ok]
            color = f"C{n}"
            is_paper = (sub["source"] != "run").to_numpy() if "source" in sub else np.zeros(len(sub), bool)
            for mask, marker, who in ((~is_paper, "o", "runs"), (is_paper, "D", "paper")):
                if mask.any():
                    ax.scatter(x[mask], y[mask], s=18, alpha=0.5, color=color, marker=marker,
                               label=f"{who}: {protocol} / {dataset}")
            front = pareto_front(x, y, higher)
            ax.step(x[front], y[front], where="post", color=color, lw=1.5)
            ax.scatter(x[front], y[front], s=60, facecolors="none", edgecolors=color, lw=1.5)
            for i in front[:12]:
                ax.annotate(_label(sub.iloc[i]), (x[i], y[i]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            drawn += 1
        log = _cost_axis(ax, pd.to_numeric(df[cost_col], errors="coerce").to_numpy(dtype=float))
        ax.set_xlabel(xlabel + (" (log)" if log else ""))
        ax.set_ylabel(_short(metric))
        ax.margins(x=0.08, y=0.1)  # markers and the circled front stay inside the axes
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    if not drawn:
        raise LeaderboardError("gmacs", f"no rows with both gmacs/params_m and {metric}")
    fig.suptitle(f"{_short(metric)} vs cost (circled: Pareto front)")
    return _save(fig, out)


def _cost_axis(ax, cost: np.ndarray) -> bool:
    """A log cost axis only when the costs span more than a decade; plain numbers as tick labels
    either way (matplotlib's default log labels read like '1.134x10^1' inside one decade)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    cost = cost[np.isfinite(cost) & (cost > 0)]
    log = bool(len(cost) > 1 and cost.max() / cost.min() > 10)
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    return log


def _paper_metric(metric: str) -> str:
    leaf = metric.rsplit("/", 1)[-1].split(".", 1)[-1]
    return f"metric.test/{leaf}"


PAPER_BLOCK = ("reference", "densesirst")  # the protocol and data set of the paper's tables


def plot_ablation(df: pd.DataFrame, out: str | Path, param: str, metric: str | None = None,
                  paper: pd.DataFrame | None = None) -> Path:
    """Metric against one searched parameter: each run, the per-value mean with its CI, and the
    paper's values for the same axis when the paper ablated it. One panel per (protocol, data set):
    the paper's values (DenseSIRST, reference protocol) never share axes with other runs."""
    leaf = param.split(".")[-1]
    col = next((c for c in (param, f"param.{param}") if c in df.columns), None)
    have_runs = col is not None and len(df) > 0 and df[col].notna().any()
    metric = query.resolve_metric(df, metric) if have_runs else (metric or "metric.test/mAP07")
    prow = pd.DataFrame()
    if paper is not None and f"param.{leaf}" in paper.columns and _paper_metric(metric) in paper.columns:
        prow = paper[paper[f"param.{leaf}"].notna()]
    if not have_runs and not len(prow):
        raise LeaderboardError(param, "no such parameter in the runs or the paper's tables")
    panels: dict[tuple[str, str], pd.DataFrame] = {}
    if have_runs:
        panels.update({key: sub[sub[col].notna()] for key, sub in query.blocks(df[df[col].notna()])})
    if len(prow):
        panels.setdefault(PAPER_BLOCK, df.iloc[0:0])
    fig, axes = _figure(7.5 * len(panels), 4.8, len(panels))
    for ax, (key, runs) in zip(axes, sorted(panels.items())):
        _ablation_panel(ax, runs, col, metric, prow if key == PAPER_BLOCK else pd.DataFrame(), leaf)
        ax.set_xlabel(param)
        ax.set_title(f"{key[0]} / {key[1]}: {_short(metric)} vs {param}")
    return _save(fig, out)


def _ablation_panel(ax, runs: pd.DataFrame, col: str | None, metric: str, prow: pd.DataFrame, leaf: str) -> None:
    values = list(runs[col].unique()) if col is not None and len(runs) else []
    if len(prow):
        values += list(prow[f"param.{leaf}"].unique())
    numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)
    cats = sorted({str(v) for v in values}) if not numeric else []
    xpos = (lambda v: float(v)) if numeric else (lambda v: float(cats.index(str(v))))
    if len(runs):
        y = pd.to_numeric(runs[metric], errors="coerce").to_numpy(dtype=float)
        x = np.array([xpos(v) for v in runs[col]])
        ax.scatter(x, y, s=14, alpha=0.35, color="tab:blue", label="runs")
        groups = sorted({xv for xv in x})
        vecs = [y[(x == g) & np.isfinite(y)] for g in groups]
        keep = [i for i, v in enumerate(vecs) if len(v)]
        cis = C.bootstrap_ci([vecs[i] for i in keep])
        for i, (lo, hi, _) in zip(keep, cis):
            m = vecs[i].mean()
            err = [[m - lo], [hi - m]] if np.isfinite(lo) else None
            ax.errorbar([groups[i]], [m], yerr=err, fmt="o", color="tab:blue", capsize=4, ms=7)
    for n, (source, tab) in enumerate(prow.groupby("source", sort=True) if len(prow) else ()):
        x = np.array([xpos(v) for v in tab[f"param.{leaf}"]])
        y = tab[_paper_metric(metric)].to_numpy(dtype=float)
        order = np.argsort(x)
        ax.plot(x[order], y[order], "D--", color=f"C{n + 1}", ms=7, label=f"paper {source.split(':')[-1]}")
    if not numeric:
        ax.set_xticks(range(len(cats)), cats, rotation=20)
    paper_note = len(prow) and _paper_metric(metric) != metric
    ax.set_ylabel(_short(metric) + (f"  (paper: {_short(_paper_metric(metric))})" if paper_note else ""))
    ax.margins(y=0.1)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def plot_pr(df: pd.DataFrame, out: str | Path, metric: str | None = None, top: int = 5) -> Path:
    """Stored PR curves (``curve.recall`` / ``curve.precision``) of the best rows."""
    if "curve.precision" not in df.columns or "curve.recall" not in df.columns:
        raise LeaderboardError("curve.precision", "no stored PR curves (columns curve.precision/curve.recall)")
    has = df["curve.precision"].notna() & df["curve.recall"].notna()
    sub = df[has.to_numpy()]
    if not len(sub):
        raise LeaderboardError("curve.precision", "no row has a stored PR curve")
    metric = query.resolve_metric(sub, metric)
    fig, (ax,) = _figure(6.5, 5)
    for (protocol, dataset), rows in query.top(sub, metric, top):
        for _, row in rows.iterrows():
            r, p = np.asarray(row["curve.recall"], float), np.asarray(row["curve.precision"], float)
            ax.plot(r, p, lw=1.5, label=f"{_label(row)} {protocol}/{dataset} {_short(metric)}={row[metric]:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"PR curves of the top {top} by {_short(metric)}")
    return _save(fig, out)


def plot_history(df: pd.DataFrame, out: str | Path, metric: str | None = None) -> Path:
    """Metric against trial start time, one colour per search, with the running best."""
    metric = query.resolve_metric(df, metric)
    higher = query.higher_is_better(metric)
    t = pd.to_datetime(df["started_at"], utc=True).fillna(pd.to_datetime(df["written_at"], utc=True))
    fig, (ax,) = _figure(8, 4.8)
    drawn = False
    for n, (search, idx) in enumerate(df.groupby("search", sort=True).groups.items()):
        ts = t.loc[idx]
        y = pd.to_numeric(df.loc[idx, metric], errors="coerce")
        ok = ts.notna() & y.notna()
        if not ok.any():
            continue
        order = np.argsort(ts[ok].to_numpy())
        tx, yv = ts[ok].to_numpy()[order], y[ok].to_numpy(dtype=float)[order]
        run = np.maximum.accumulate(yv) if higher else np.minimum.accumulate(yv)
        ax.scatter(tx, yv, s=12, alpha=0.5, color=f"C{n}")
        ax.step(tx, run, where="post", color=f"C{n}", label=f"{search} (best so far)")
        drawn = True
    if not drawn:
        raise LeaderboardError(metric, "no rows with both a start time and this metric")
    ax.set_xlabel("trial start (UTC)")
    ax.set_ylabel(_short(metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    return _save(fig, out)


def plot_learning_curves(curves: dict[str, list[tuple[list[float], list[float]]]], out: str | Path,
                         metric: str) -> Path:
    """Per-epoch values per group: each run (seed) a thin line, the group's mean over runs a thick one."""
    if not any(series for series in curves.values()):
        raise LeaderboardError(metric, "no per-epoch values to plot")
    fig, (ax,) = _figure(8, 5)
    for n, (label, series) in enumerate(sorted(curves.items())):
        color = f"C{n % 10}"
        by_x: dict[float, list[float]] = {}
        for x, y in series:
            ax.plot(x, y, color=color, lw=0.8, alpha=0.35)
            for xi, yi in zip(x, y):
                by_x.setdefault(float(xi), []).append(float(yi))
        xs = sorted(by_x)
        ax.plot(xs, [float(np.mean(by_x[x])) for x in xs], color=color, lw=2, marker="o", ms=4,
                label=f"{label} (n={len(series)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(_short(metric))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{_short(metric)} per epoch (thin: each seed; thick: mean)")
    return _save(fig, out)
