"""Plots never mix protocols or data sets on one axis, and cost axes stay readable."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from irstdlab.leaderboards import plots
from irstdlab.leaderboards.paper import paper_frame


def _runs(protocol: str, dataset: str) -> pd.DataFrame:
    return pd.DataFrame({"search": "s", "trial_id": [f"t{i}" for i in range(6)], "source": "run",
                         "model": "bafenet", "backbone": "resnet18", "protocol": protocol, "dataset": dataset,
                         "seed": list(range(6)), "param.p": [0.25, 0.5, 0.75] * 2,
                         "gmacs": np.linspace(11.0, 11.5, 6), "params_m": np.linspace(12.0, 12.25, 6),
                         "metric.test/mAP07": [0.30, 0.33, 0.31, 0.32, 0.35, 0.30]})


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"))
        assert arr.std() > 5  # not blank
        return im.size


def test_ablation_puts_synthetic_runs_and_the_paper_on_separate_panels(tmp_path):
    one = _size(plots.plot_ablation(_runs("reference", "densesirst"), tmp_path / "one.png", "p", "test/mAP07",
                                    paper=paper_frame()))
    two = _size(plots.plot_ablation(_runs("clean", "synthetic"), tmp_path / "two.png", "p", "test/mAP07",
                                    paper=paper_frame()))
    assert two[0] > 1.8 * one[0] and two[1] == one[1]  # a second panel, not a shared axis


def test_pareto_cost_axis_is_linear_within_a_decade(tmp_path):
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    assert plots._cost_axis(ax, np.array([11.0, 11.5])) is False and ax.get_xscale() == "linear"
    ax = Figure().subplots()
    assert plots._cost_axis(ax, np.array([2.0, 500.0])) is True and ax.get_xscale() == "log"
    assert ax.xaxis.get_major_formatter()(20.0, 0) == "20"
    _size(plots.plot_pareto(_runs("clean", "synthetic"), tmp_path / "p.png", "test/mAP07"))
