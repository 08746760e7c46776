"""Optuna's matplotlib plots over the leaderboard: parallel coordinates, contour, slice, importances.

The study is the one of ``study_frame`` (one trial per configuration, seeds averaged), built from
full-fidelity completed rows of one (protocol, data set) block. Optuna draws through pyplot, so
each figure is closed once saved (no figure is left behind in a long-lived process).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from irstdlab.leaderboards import query
from irstdlab.leaderboards.errors import LeaderboardError
from irstdlab.leaderboards.study_frame import ParamSpec, average_seeds, build_study, subspaces, varying

KINDS = ("parallel", "contour", "slice", "importance")
MAX_CONTOUR = 4  # a contour grid is n x n panels: beyond 4 parameters they are unreadable


def plot_study(kind: str, df: pd.DataFrame, out: str | Path, metric: str | None, specs: Sequence[ParamSpec],
               by_space: bool) -> Path:
    """One PNG of ``kind`` (see ``KINDS``) for the full-fidelity rows in ``df``."""
    import optuna.visualization.matplotlib as ovm
    from matplotlib import pyplot as plt

    if kind not in KINDS:
        raise LeaderboardError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
    df = df[query.rankable(df).to_numpy()] if len(df) else df
    block_keys = [key for key, _ in query.blocks(df)]
    if len(block_keys) > 1:
        listed = ", ".join(f"{p}/{d}" for p, d in block_keys)
        raise LeaderboardError("--protocol", f"the rows span {len(block_keys)} (protocol, dataset) blocks "
                                             f"({listed}); choose one with --protocol and --dataset")
    metric = query.resolve_metric(df, metric) if len(df) else (metric or "metric.val/mAP07")
    configs = average_seeds(df, metric) if len(df) else None
    if configs is None or len(configs.frame) < 2:
        raise LeaderboardError(metric, f"plot {kind} needs at least 2 configurations with a value (completed, "
                                       "full fidelity)")
    main, *conditional = subspaces(configs, specs, by_space)
    if kind == "importance":
        chosen, _ = varying(main)
        frame = main.frame
    else:
        chosen = [s for sub in (main, *conditional) for s in varying(sub)[0]]
        chosen = list({s.name: s for s in chosen}.values())
        frame = configs.frame
    if not chosen:
        raise LeaderboardError("param", "no searched parameter takes more than one value in these rows")
    study = build_study(frame, chosen, configs.direction)
    names = [s.name for s in chosen]
    short = metric.split(".", 1)[-1]
    if kind == "contour" and importlib.util.find_spec("scipy") is None:
        raise LeaderboardError("plot contour", "Optuna interpolates its contours with scipy, which is not "
                                               "installed (pip install scipy); parallel and slice need nothing more")
    axes: Any  # one Axes, or an array of them (slice and parallel plots of several parameters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's ExperimentalWarning; importance caveats are in `importance`
        if kind == "parallel":
            axes = ovm.plot_parallel_coordinate(study, params=names, target_name=short)
        elif kind == "slice":
            axes = ovm.plot_slice(study, params=names, target_name=short)
        elif kind == "contour":
            if len(names) < 2:
                raise LeaderboardError("param", "a contour plot needs two parameters that vary")
            axes = ovm.plot_contour(study, params=_most_important(study, names)[:MAX_CONTOUR], target_name=short)
        else:
            from optuna.importance import PedAnovaImportanceEvaluator

            axes = ovm.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), params=names,
                                              target_name=short)
    first = axes.flat[0] if hasattr(axes, "flat") else axes
    fig = first.figure
    fig.set_size_inches(max(fig.get_size_inches()[0], 8), max(fig.get_size_inches()[1], 5))
    n_conditional = len(conditional) if kind == "importance" else 0
    fig.suptitle(f"{short}: {len(frame)} configurations (seeds averaged)"
                 + (f"; {n_conditional} conditional subspace(s): see `leaderboard importance`" if n_conditional
                    else ""), fontsize=9, y=1.04)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(out, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return out


def _most_important(study: Any, names: list[str]) -> list[str]:
    """``names`` ordered by PED-ANOVA importance (the contour shows the strongest pairs)."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator

    if len(names) <= MAX_CONTOUR:
        return names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = optuna.importance.get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), params=names)
    return list(got)
