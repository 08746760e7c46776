"""Which searched parameter mattered: Optuna's importance evaluators over the leaderboard's rows.

PED-ANOVA (``optuna.importance.PedAnovaImportanceEvaluator``) always; fANOVA
(``FanovaImportanceEvaluator``) as well where scikit-learn is importable (Optuna's fANOVA needs
its random forest; scikit-learn is not a dependency of irstdlab).

What is evaluated, and why:

* seeds are averaged first (one Optuna trial per ``config_hash``), see ``study_frame``;
* every (protocol, data set) block on its own, as everywhere in the leaderboard;
* conditional parameters only within the configurations where they are active
  (``study_frame.subspaces``): a section per condition, labelled with it;
* fidelity: the main sections use full-fidelity completed rows only. Early-stopped rows (given
  with ``include_partial``) form extra sections, one per fidelity level they reached, each labelled
  with it: a value at epoch 2 is never compared with a value at epoch 4.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from irstdlab.leaderboards import query
from irstdlab.leaderboards.errors import LeaderboardError
from irstdlab.leaderboards.study_frame import Direction, ParamSpec, average_seeds, build_study, subspaces, varying

FULL = 1.0 - 1e-9
TOP_QUANTILE = 0.1  # PED-ANOVA's target quantile (Optuna's default): the "good" configurations
SMALL_FOR_PED_ANOVA = 30  # below this the good set is a couple of configurations


def evaluators() -> dict[str, Any]:
    """Name -> Optuna evaluator, fANOVA only where scikit-learn is installed."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    out: dict[str, Any] = {"ped_anova": PedAnovaImportanceEvaluator(target_quantile=TOP_QUANTILE)}
    if importlib.util.find_spec("sklearn") is not None:
        out["fanova"] = FanovaImportanceEvaluator(seed=0)
    return out


@dataclass
class Section:
    protocol: str
    dataset: str
    subspace: str  # "all configurations" / "where model.name in ['bafenet']"
    fidelity: str  # "full (completed rows)" / "0.50 (early-stopped rows, 2/4 epochs)"
    configs: int
    rows: int
    importances: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluator -> param -> value
    constant: list[str] = field(default_factory=list)  # one value only in these configurations
    note: str | None = None  # why nothing was evaluated

    def ranked(self) -> list[str]:
        first = next(iter(self.importances.values()), {})
        return sorted(first, key=lambda p: -first[p])


@dataclass
class Report:
    metric: str
    distributions: str  # where the distributions came from
    evaluators: list[str]
    sections: list[Section]

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "distributions": self.distributions, "evaluators": self.evaluators,
                "sections": [{**vars(s), "ranked": s.ranked()} for s in self.sections]}


def _fidelity_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    fid = pd.to_numeric(df.get("fidelity"), errors="coerce").to_numpy(dtype=float)
    completed = (df["status"] == "completed").to_numpy() & (fid >= FULL)
    out = [("full (completed rows)", df[completed])]
    stopped = df[(df["status"] == "early_stopped").to_numpy() & np.isfinite(fid) & (fid < FULL)]
    if len(stopped):
        levels = pd.to_numeric(stopped["fidelity"], errors="coerce").round(6)
        for level, sub in stopped.groupby(levels, sort=False):
            epochs = pd.to_numeric(sub["epochs_completed"], errors="coerce").dropna()
            total = pd.to_numeric(sub["max_epochs"], errors="coerce").dropna()
            at = f", {int(epochs.iloc[0])}/{int(total.iloc[0])} epochs" if len(epochs) and len(total) else ""
            out.append((f"{level:.2f} (early-stopped rows{at})", sub))
    return sorted(out, key=lambda kv: kv[0] != "full (completed rows)")


def evaluate(df: pd.DataFrame, metric: str | None, specs: Sequence[ParamSpec], by_space: bool,
             distributions: str) -> Report:
    """Importance sections for the selected rows (see the module doc for what each section holds)."""
    if not len(df):
        raise LeaderboardError("importance", "no rows selected")
    metric = query.resolve_metric(df, metric)
    evals = evaluators()
    sections: list[Section] = []
    for (protocol, dataset), block in query.blocks(df):
        for fidelity, rows in _fidelity_groups(block):
            if not len(rows) and fidelity.startswith("full"):
                sections.append(Section(protocol, dataset, "all configurations", fidelity, 0, 0,
                                        note="no completed full-fidelity rows"))
                continue
            configs = average_seeds(rows, metric)
            for sub in subspaces(configs, specs, by_space):
                sections.append(_section(protocol, dataset, fidelity, sub, configs.direction, evals))
    return Report(metric, distributions, list(evals), sections)


def _section(protocol: str, dataset: str, fidelity: str, sub: Any, direction: Direction,
             evals: dict[str, Any]) -> Section:
    import optuna

    moving, constant = varying(sub)
    sec = Section(protocol, dataset, sub.label, fidelity, len(sub.frame), int(sub.frame["n_rows"].sum()),
                  constant=[s.name for s in constant])
    values = sub.frame["value"].to_numpy(dtype=float)
    if len(sub.frame) < 2 or not moving:
        sec.note = "fewer than 2 configurations" if len(sub.frame) < 2 else "no parameter varies here"
        return sec
    if np.ptp(values) == 0:
        sec.note = f"the metric is {values[0]:g} for every configuration here: nothing to attribute"
        sec.importances = {name: {s.name: 0.0 for s in moving} for name in evals}
        return sec
    study = build_study(sub.frame, moving, direction)
    names = [s.name for s in moving]
    notes = []
    for name, evaluator in evals.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                got = optuna.importance.get_param_importances(study, evaluator=evaluator, params=names)
            except (ValueError, RuntimeError) as exc:
                notes.append(f"{name}: {exc}")
                continue
        # e.g. PED-ANOVA on a handful of configurations: its top quantile is then every configuration
        notes += [f"{name}: {w.message}" for w in caught if not issubclass(w.category, DeprecationWarning)]
        sec.importances[name] = {k: float(v) if math.isfinite(v) else 0.0 for k, v in got.items()}
    if "ped_anova" in sec.importances and len(values) < SMALL_FOR_PED_ANOVA:
        notes.append(f"ped_anova contrasts the best {TOP_QUANTILE:.0%} with all {len(values)} configurations: "
                     f"with so few, read the ranking as rough")
    sec.note = "; ".join(dict.fromkeys(notes)) or None
    return sec


def format_report(rep: Report) -> str:
    """Ranked tables, one per section, with what each section holds."""
    lines = [(f"importance of the searched parameters for {rep.metric.split('.', 1)[-1]} "
             f"(Optuna {', '.join(rep.evaluators)}; seeds averaged per configuration)"),
             f"distributions: {rep.distributions}"]
    if "fanova" not in rep.evaluators:
        lines.append("(fANOVA needs scikit-learn, which is not installed: PED-ANOVA only)")
    for s in rep.sections:
        lines += ["", (f"== protocol={s.protocol}  dataset={s.dataset}  {s.subspace}  fidelity {s.fidelity}: "
                      f"{s.configs} configurations from {s.rows} rows ==")]
        if s.subspace != "all configurations":
            lines.append("   (conditional parameters: evaluated only where the condition holds)")
        names = s.ranked()
        if names:
            heads = ["#", "parameter", *rep.evaluators]
            body = [[str(i + 1), p, *(f"{s.importances[e][p]:.3f}" if e in s.importances else "-"
                                      for e in rep.evaluators)] for i, p in enumerate(names)]
            body += [["-", p, *("constant" for _ in rep.evaluators)] for p in s.constant]
            widths = [max(len(r[j]) for r in [heads, *body]) for j in range(len(heads))]
            for r in [heads, ["-" * w for w in widths], *body]:
                lines.append("   " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        elif s.constant:
            lines.append(f"   constant here: {', '.join(s.constant)}")
        if s.note:
            lines.append(f"   note: {s.note}")
    return "\n".join(lines)
