"""`leaderboard export`: the paper's columns by default, one row per configuration (never averaging
different configurations as seeds), n = seeds, and the paper's rows ranked by a metric they have."""

from __future__ import annotations

import pandas as pd

from irstdlab.leaderboards import export, query


def _rows() -> pd.DataFrame:
    rows = []
    for seed in range(3):
        for cfg, base in (("aaaaaaaa11", 0.40), ("bbbbbbbb22", 0.20)):
            rows.append({"search": "s", "trial_id": f"{cfg}-{seed}", "status": "completed", "source": "run",
                         "model": "bafenet", "backbone": "resnet18", "dataset": "synthetic", "protocol": "clean",
                         "seed": seed, "config_hash": cfg, "fidelity": 1.0,
                         "metric.val/mAP07": base + seed / 100, "metric.val/mAP12": 0.1,
                         "metric.val/recall07": 0.5, "metric.train/iterations": 10.0, "metric.test/num_gts": 5.0})
    rows.append({"search": "s", "trial_id": "fcos-0", "status": "completed", "source": "run", "model": "fcos",
                 "backbone": "resnet18", "dataset": "synthetic", "protocol": "clean", "seed": 0,
                 "config_hash": "cccccccc33", "fidelity": 1.0, "metric.val/mAP07": 0.3})
    return pd.DataFrame(rows)


def test_default_columns_are_the_papers_and_configs_are_not_averaged():
    ((key, table),) = export.paper_table(_rows())
    assert key == ("clean", "synthetic")
    # test/num_gts has values but is not a paper column: with test/mAP07 absent, val is used
    assert [c for c in table.columns if c.startswith("metric.")] == [
        "metric.val/mAP07", "metric.val/mAP12", "metric.val/recall07"]
    assert list(table.index) == ["bafenet / resnet18 [aaaaaaaa]", "fcos / resnet18",
                                 "bafenet / resnet18 [bbbbbbbb]"]
    assert table["seeds"].tolist() == [3, 1, 3]
    assert table.loc["bafenet / resnet18 [aaaaaaaa]", "metric.val/mAP07"] == "0.410 ± 0.010"


def test_chosen_metrics_and_markdown():
    text = export.to_markdown(_rows(), metrics=["val/mAP07", "train/iterations"])
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert header == "| Method | val/mAP07 | train/iterations | n |"


def test_ranking_metric_falls_back_to_what_rows_have():
    paper = pd.DataFrame({"metric.test/mAP07": [0.2, 0.3], "metric.val/mAP07": [None, None]})
    assert query.ranking_metric(paper, "metric.val/mAP07") == "metric.test/mAP07"
    assert query.ranking_metric(_rows(), "metric.val/mAP07") == "metric.val/mAP07"
