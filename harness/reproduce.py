"""``irstdlab reproduce TABLE``: one paper table as a grid search, then our numbers beside the paper's.

Each of the paper's Tables II-IX is a shipped grid space ``search_spaces/reproduce_table_<T>.yaml``
on that table's own base (see each file's header). Besides the usual space keys it holds::

    reproduce:
      table: VIII
      rows:                                  # one per table row, in the paper's order
        - label: "1/2"
          params: {model.p: 0.5}             # exactly one grid point (dotted keys)
          paper: {mAP07: 0.283, recall07: 0.335, mAP12: 0.233, recall12: 0.325}
          match: exact                       # or approximate (then `note` says why)
      not_reproduced:                        # rows we cannot run (Table II: detectors we do not ship)
        - {label: YOLOv3, paper: {...}, reason: not a registered detector}

The search itself is ``irstdlab search`` (resumable, cluster-ready); this module turns the space into
a plan and the leaderboard rows of the search into a side-by-side table: the paper's value, our mean
and 95% interval over seeds (``leaderboards.compare.bootstrap_ci``), the difference, and whether the
paper's value lies inside our interval.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irstdlab.harness.errors import ConfigError
from irstdlab.harness.space_loader import SearchSpace

TABLES = ("II", "III", "IV", "V", "VI", "VII", "VIII", "IX")
# paper column -> our leaderboard metric. The paper's recall07 and recall12 are the final recall of
# two separate runs at IoU 0.5 (GrokCV/BAFE-Net's configs evaluate both at mmdet's default IoU, 0.5; the
# runs' work-dir names in its config comments say separate runs); we have one run per seed, so one recall for both.
PAPER_METRICS = {"mAP07": "test/mAP07", "recall07": "test/recall", "mAP12": "test/mAP12", "recall12": "test/recall"}
MATCHES = ("exact", "approximate")
# DenseSIRST training images per data.selection (Splits/train_v2.txt, trainval_v2.txt)
DENSESIRST_TRAIN_IMAGES = {"held_out": 512, "reference": 768}
BENCH_TRAIN = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "bench_train.json"


@dataclass(frozen=True)
class TableRow:
    label: str
    params: dict[str, Any]
    paper: dict[str, float]
    match: str
    note: str = ""


@dataclass(frozen=True)
class Unreproduced:
    label: str
    paper: dict[str, float]
    reason: str


@dataclass(frozen=True)
class Plan:
    table: str
    space: SearchSpace
    rows: tuple[TableRow, ...]
    not_reproduced: tuple[Unreproduced, ...]


def table_name(text: str) -> str:
    """'viii' -> 'VIII'; anything else than II..IX is a one-line error."""
    name = str(text).strip().upper()
    if name not in TABLES:
        raise ConfigError(f"TABLE: {text!r} is not one of the paper's ablation tables {', '.join(TABLES)}")
    return name


def space_name(table: str) -> str:
    return f"reproduce_table_{table_name(table)}"


def _point_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _paper_values(raw: Any, where: str) -> dict[str, float]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where}: expected a mapping of {', '.join(PAPER_METRICS)} to numbers")
    for key, value in raw.items():
        if key not in PAPER_METRICS:
            raise ConfigError(f"{where}: {key}: unknown paper column (columns: {', '.join(PAPER_METRICS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: {key}: expected a number, got {value!r}")
    return {k: float(v) for k, v in raw.items()}


def plan_of(space: SearchSpace, table: str | None = None) -> Plan:
    """The table's rows from ``space.raw['reproduce']``, checked against the space's grid."""
    section = space.raw.get("reproduce")
    src = space.source
    if not isinstance(section, dict):
        raise ConfigError(f"{src}: reproduce: missing; a table space lists its rows and the paper's values there")
    named = table_name(section.get("table", ""))
    if table is not None and named != table_name(table):
        raise ConfigError(f"{src}: reproduce.table: {named}, but Table {table_name(table)} was asked for")
    if space.sampler != "grid":
        raise ConfigError(f"{src}: sampler: a table space is a grid (one trial per row and seed)")
    raw_rows = section.get("rows")
    if not isinstance(raw_rows, list) or not raw_rows:
        raise ConfigError(f"{src}: reproduce.rows: expected a non-empty list of rows")
    grid = {_point_key(p) for p in space.grid()}
    rows, seen = [], set()
    for i, item in enumerate(raw_rows):
        where = f"{src}: reproduce.rows[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("params"), dict) or not item.get("label"):
            raise ConfigError(f"{where}: expected {{label, params, paper, match}}")
        key = _point_key(item["params"])
        if key not in grid:
            raise ConfigError(f"{where}.params: {key} is not a point of the space's grid")
        if key in seen:
            raise ConfigError(f"{where}.params: {key} is listed twice")
        seen.add(key)
        match = item.get("match", "exact")
        if match not in MATCHES:
            raise ConfigError(f"{where}.match: {match!r} is not one of {', '.join(MATCHES)}")
        paper = _paper_values(item.get("paper"), f"{where}.paper")
        rows.append(TableRow(str(item["label"]), dict(item["params"]), paper, match, str(item.get("note") or "")))
    missing = grid - seen
    if missing:
        raise ConfigError(f"{src}: reproduce.rows: grid point {min(missing)} has no row")
    others = []
    for i, item in enumerate(section.get("not_reproduced") or []):
        where = f"{src}: reproduce.not_reproduced[{i}]"
        if not isinstance(item, dict) or not item.get("label") or not item.get("reason"):
            raise ConfigError(f"{where}: expected {{label, paper, reason}}")
        others.append(Unreproduced(str(item["label"]), _paper_values(item.get("paper"), f"{where}.paper"),
                                   str(item["reason"])))
    return Plan(named, space, tuple(rows), tuple(others))


# ----------------------------------------------------------------------------------- GPU-hours
def measured_throughput(path: Path = BENCH_TRAIN) -> tuple[float, str] | None:
    """Training images/s of BAFE-Net R18 at 512^2 in fp32, if ``benchmarks/bench_train.py`` measured it
    on a GPU in this checkout (its ``gpu`` rows; the fastest fp32 one)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    rows = [r for r in report.get("gpu") or [] if r.get("amp") == "off" and r.get("images_per_s")]
    if not rows:
        return None
    best = max(rows, key=lambda r: float(r["images_per_s"]))
    gpu = (report.get("machine") or {}).get("gpu") or "a GPU"
    return float(best["images_per_s"]), f"{path.name}: BAFE-Net R18 512px fp32 on {gpu}"


def train_images_per_trial(space: SearchSpace) -> int | None:
    """Images one trial trains on (all epochs), or None when the data set's size is not known here."""
    cfg = space.trial_config(space.grid()[0], 0)
    data = cfg.data
    if data.dataset == "densesirst" and data.train_split is None:
        per_pass = DENSESIRST_TRAIN_IMAGES[data.selection]
    elif data.dataset == "synthetic" and data.root is None:
        train, val, _ = data.synthetic_images
        per_pass = train + (val if data.selection == "reference" else 0)
    else:
        return None
    per_epoch = per_pass * data.repeat
    if cfg.train.max_iters_per_epoch is not None:
        per_epoch = min(per_epoch, cfg.train.max_iters_per_epoch * data.batch_size)
    return per_epoch * cfg.schedule.epochs


def estimate_gpu_hours(space: SearchSpace, trials: int, images_per_s: float | None,
                       source: str = "") -> dict[str, Any] | None:
    """GPU-hours of training (evaluation not counted) at a measured throughput; None when unknown."""
    images = train_images_per_trial(space)
    if images_per_s is None or images is None or images_per_s <= 0:
        return None
    hours = trials * images / images_per_s / 3600.0
    return {"gpu_hours": round(hours, 2), "images_per_trial": images, "images_per_s": images_per_s,
            "source": source, "counts": "training steps only, every row at the measured model's speed"}


# the keys that tell the tables' bases apart (printed resolved, whatever the preset and overrides say)
BASE_KEYS = ("model.name", "model.backbone", "model.num_levels", "model.seg_head", "model.lsk_module",
             "model.conv_bn_blocks", "model.exchange", "model.selection", "model.p", "model.adapter",
             "model.adapter_hidden", "augment.bagcp", "data.dataset", "data.protocol", "data.selection")


def base_config(space: SearchSpace) -> dict[str, Any]:
    """BASE_KEYS of the validated base config (before any row's parameters)."""
    from irstdlab.harness.config import TrialConfig

    cfg = TrialConfig.from_dict(space.base_dict(), space.source).to_dict()
    out = {}
    for key in BASE_KEYS:
        section, name = key.split(".")
        out[key] = cfg[section][name]
    return out


def plan_dict(plan: Plan, trials: int, estimate: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "table": plan.table, "space": plan.space.name, "base": plan.space.base, "seeds": plan.space.seeds,
        "trials": trials, "epochs": plan.space.budget.max_epochs, "base_config": base_config(plan.space),
        "overrides": plan.space.overrides,
        "rows": [{"label": r.label, "params": r.params, "paper": r.paper, "match": r.match,
                  **({"note": r.note} if r.note else {})} for r in plan.rows],
        "not_reproduced": [{"label": u.label, "paper": u.paper, "reason": u.reason} for u in plan.not_reproduced],
    }
    if estimate is not None:
        out["gpu_hours"] = estimate["gpu_hours"]
        out["gpu_hours_from"] = estimate
    return out


def format_plan(plan: Plan, trials: int, estimate: dict[str, Any] | None) -> str:
    title = (f"Table {plan.table}: {len(plan.rows)} rows x {plan.space.seeds} seeds = {trials} trials "
             f"({plan.space.source}, base {plan.space.base})")
    lines = [title]
    for r in plan.rows:
        paper = " ".join(f"{k}={v:.3f}" for k, v in r.paper.items())
        lines.append(f"  {r.label:28s} {r.match:11s} {_point_key(r.params)}  paper: {paper}")
    for u in plan.not_reproduced:
        lines.append(f"  {u.label:28s} {'not run':11s} ({u.reason})")
    if estimate is None:
        lines.append("GPU-hours: unknown (no measured throughput: run benchmarks/bench_train.py on a GPU, "
                     "or pass --images-per-s)")
    else:
        lines.append(f"GPU-hours: ~{estimate['gpu_hours']:g} ({trials} trials x {estimate['images_per_trial']} "
                     f"training images at {estimate['images_per_s']:g} images/s, {estimate['source']}; "
                     f"{estimate['counts']})")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- side by side
def _row_params(params_json: Any) -> str:
    params = json.loads(params_json) if isinstance(params_json, str) else {}
    params.pop("train.seed", None)
    return _point_key(params)


def side_by_side(plan: Plan, df: Any, confidence: float = 0.95) -> list[dict[str, Any]]:
    """One entry per (row, paper column): paper, n, mean, CI, difference, paper inside the CI."""
    import numpy as np

    from irstdlab.leaderboards.compare import bootstrap_ci

    done = df[df["status"] == "completed"] if len(df) else df
    keys = done["params_json"].map(_row_params) if len(done) else []
    out = []
    for row in plan.rows:
        mine = done[keys == _point_key(row.params)] if len(done) else done
        for column, paper in row.paper.items():
            metric = f"metric.{PAPER_METRICS[column]}"
            values = mine[metric].dropna().to_numpy(dtype=float) if len(mine) and metric in mine else np.empty(0)
            entry: dict[str, Any] = {"label": row.label, "match": row.match, "column": column, "paper": paper,
                                     "n": len(values), "mean": None, "ci_low": None, "ci_high": None,
                                     "diff": None, "inside": None}
            if len(values):
                (lo, hi, _), = bootstrap_ci([values], confidence=confidence)
                mean = float(values.mean())
                entry.update(mean=mean, diff=mean - paper)
                if not math.isnan(lo):
                    entry.update(ci_low=lo, ci_high=hi, inside=bool(lo <= paper <= hi))
            out.append(entry)
    return out


def format_side_by_side(plan: Plan, entries: list[dict[str, Any]], confidence: float = 0.95) -> str:
    pct = f"{confidence * 100:g}%"
    head = (f"{'row':26s} {'match':11s} {'column':8s} {'paper':>6s}  {'ours: mean [' + pct + ' CI]':27s} "
            f"{'n':>2s} {'diff':>7s}  paper in CI")
    lines = [f"Table {plan.table}: the paper beside our test-split numbers (mean over seeds)", head,
             "-" * len(head)]
    for e in entries:
        if e["mean"] is None:
            ours, diff, inside = "no finished trial", "", ""
        else:
            ci = f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]" if e["ci_low"] is not None else "[1 seed]"
            ours, diff = f"{e['mean']:.3f} {ci}", f"{e['diff']:+.3f}"
            inside = "-" if e["inside"] is None else ("yes" if e["inside"] else "no")
        lines.append(f"{e['label'][:26]:26s} {e['match']:11s} {e['column']:8s} {e['paper']:6.3f}  {ours:27s} "
                     f"{e['n']:2d} {diff:>7s}  {inside}")
    for u in plan.not_reproduced:
        lines.append(f"{u.label[:26]:26s} {'not run':11s} ({u.reason})")
    return "\n".join(lines)


__all__ = [
    "PAPER_METRICS",
    "TABLES",
    "Plan",
    "TableRow",
    "Unreproduced",
    "estimate_gpu_hours",
    "format_plan",
    "format_side_by_side",
    "measured_throughput",
    "plan_dict",
    "plan_of",
    "side_by_side",
    "space_name",
    "table_name",
    "train_images_per_trial",
]
