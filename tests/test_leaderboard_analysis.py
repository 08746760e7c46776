"""Leaderboard analysis: filters, ranking blocks, compare statistics on rows with
known means and seeds, the paper's reference rows, every plot kind, exports."""

from __future__ import annotations

import csv
import datetime as dt
import glob
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from irstdlab.leaderboards import LeaderboardError, compare, export, plots, query
from irstdlab.leaderboards.paper import paper_frame
from irstdlab.leaderboards.schema import row_table
from irstdlab.leaderboards.store import concat

SHARED = Path(__file__).resolve().parents[2] / "shared"
BASE = np.array([0.20, 0.30, 0.25, 0.35, 0.22])  # per-seed difficulty, shared by both models
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def frame(rows: list[dict]) -> pd.DataFrame:
    table, _ = concat([row_table(r) for r in rows])
    return query.select(table.to_pandas(), include_partial=True)


def run(trial: str, model: str, seed: int, value: float, **extra) -> dict:
    r = {"search": "s", "trial_id": trial, "status": "completed", "model": model, "dataset": "densesirst",
         "protocol": "reference", "seed": seed, "metrics": {"val/mAP07": value}}
    r.update(extra)
    return r


@pytest.fixture(scope="module")
def seeds_df() -> pd.DataFrame:
    rows = [run(f"a{s}", "a", s, BASE[s] + 0.05) for s in range(5)]
    rows += [run(f"b{s}", "b", s, BASE[s]) for s in range(5)]
    rows += [run("c0", "c", 0, 0.9)]  # one seed only
    rows += [run(f"x{s}", "a", s, 0.99, protocol="clean") for s in range(3)]  # another protocol
    rows += [run("e0", "a", 9, 1.0, status="early_stopped", epochs_completed=3, max_epochs=20)]
    return frame(rows)


def test_filter_on_prefixed_names_and_errors(seeds_df):
    df = query.apply_filter(seeds_df, "model == 'a' and metric.val/mAP07 > 0.3 and protocol != 'clean'")
    assert sorted(df["trial_id"]) == ["a1", "a3", "e0"]  # e0: early-stopped, kept in this frame
    assert len(query.apply_filter(seeds_df, "`metric.val/mAP07` < 0.21")) == 1
    with pytest.raises(LeaderboardError, match=r"^--filter: unknown column 'param.nope'"):
        query.apply_filter(seeds_df, "param.nope > 1")
    with pytest.raises(LeaderboardError, match=r"^--filter: ") as err:
        query.apply_filter(seeds_df, "model ==")
    assert "\n" not in str(err.value)


def test_partial_rows_do_not_rank_and_blocks_are_separate(seeds_df):
    ranked = query.select(seeds_df.drop(columns="partial"))
    assert "e0" not in set(ranked["trial_id"])
    tops = query.top(ranked, query.resolve_metric(ranked, "val/mAP07"), 2)
    assert [k for k, _ in tops] == [("clean", "densesirst"), ("reference", "densesirst")]
    assert list(tops[1][1]["trial_id"]) == ["c0", "a3"]  # clean rows (0.99) never outrank these
    assert query.higher_is_better("metric.test/mAP07") and not query.higher_is_better("metric.test/Fa")
    with pytest.raises(LeaderboardError, match="no metric 'val/nope'"):
        query.resolve_metric(ranked, "val/nope")


def test_compare_known_means_seeds_and_paired_difference(seeds_df):
    df = query.select(seeds_df.drop(columns="partial"))
    blocks = compare.compare(df, "val/mAP07", ["model"], n_boot=4000, seed=1)
    assert [(b.protocol, len(b.groups)) for b in blocks] == [("clean", 1), ("reference", 3)]
    ref = blocks[1]
    g = {s.group: s for s in ref.groups}
    assert [s.group for s in ref.groups] == ["c", "a", "b"]
    assert (g["a"].n, g["a"].seeds, g["b"].n) == (5, 5, 5)
    assert g["a"].mean == pytest.approx(BASE.mean() + 0.05) and g["b"].mean == pytest.approx(BASE.mean())
    assert g["a"].std == pytest.approx(BASE.std(ddof=1)) and g["b"].std == pytest.approx(BASE.std(ddof=1))
    assert math.isnan(g["c"].ci_low) and g["c"].ci_method == "n=1" and g["c"].flag == "best"
    # the vectorised bootstrap agrees with a plain loop over resamples
    rng = np.random.default_rng(123)
    vals = BASE + 0.05
    loop = [vals[rng.integers(0, 5, 5)].mean() for _ in range(20000)]
    lo, hi = np.quantile(loop, [0.025, 0.975])
    assert g["a"].ci_method == "bootstrap-exact"
    assert g["a"].ci_low == pytest.approx(lo, abs=0.006) and g["a"].ci_high == pytest.approx(hi, abs=0.006)
    # unpaired, a and b overlap; paired by seed the +0.05 is exact and distinguishable
    ab = compare.compare(df[df["model"].isin(["a", "b"]) & (df["protocol"] == "reference")], "val/mAP07")[0]
    assert ab.groups[1].flag == "not distinguishable from best with 5 seeds"
    p = ab.paired
    assert (p.a, p.b, p.n_pairs) == ("a", "b", 5) and p.distinguishable
    assert p.mean_diff == pytest.approx(0.05) and p.ci_low == pytest.approx(0.05) and p.ci_high == pytest.approx(0.05)
    text = compare.format_blocks([ab])
    assert "paired a - b over 5 matching seeds: +0.0500" in text and "not distinguishable" in text


def test_exact_bootstrap_equals_brute_force_and_resampling_agrees():
    import itertools

    rng = np.random.default_rng(5)
    for n in (2, 3, 4, 5):
        v = rng.normal(0.3, 0.05, n)
        means = np.sort([v[list(ix)].mean() for ix in itertools.product(range(n), repeat=n)])
        cdf = np.arange(1, len(means) + 1) / len(means)
        want = (means[np.argmax(cdf >= 0.025 - 1e-12)], means[np.argmax(cdf >= 0.975 - 1e-12)])
        (lo, hi, how), = compare.bootstrap_ci([v])
        assert how == "bootstrap-exact" and (lo, hi) == pytest.approx(want)
    v = rng.normal(0.3, 0.05, 9)  # above EXACT_MAX: resampling, vectorised, vs a plain loop
    loop = [v[rng.integers(0, 9, 9)].mean() for _ in range(20000)]
    (lo, hi, how), = compare.bootstrap_ci([v], n_boot=8000)
    assert how == "bootstrap"
    assert (lo, hi) == pytest.approx(tuple(np.quantile(loop, [0.025, 0.975])), abs=0.003)


def test_bootstrap_large_groups_use_the_normal_limit():
    rng = np.random.default_rng(0)
    big = rng.normal(0.3, 0.05, 2000)
    small = rng.normal(0.3, 0.05, 400)
    (blo, bhi, bm), (slo, shi, sm) = compare.bootstrap_ci([big, small], n_boot=4000, seed=0)
    half = 1.959964 * big.std(ddof=1) / math.sqrt(len(big))
    assert bm == "normal" and (blo, bhi) == pytest.approx((big.mean() - half, big.mean() + half))
    shalf = 1.959964 * small.std(ddof=1) / math.sqrt(len(small))
    assert sm == "bootstrap" and (shi - slo) / 2 == pytest.approx(shalf, rel=0.1)


def test_paper_rows_load_with_our_metric_names():
    df = paper_frame()
    assert len(df) == 67
    counts = df["source"].value_counts().to_dict()
    assert counts == {"paper:Table II": 33, "paper:Table III": 6, "paper:Table IV": 4, "paper:Table V": 4,
                      "paper:Table VI": 4, "paper:Table VII": 3, "paper:Table VIII": 9, "paper:Table IX": 4}
    assert set(df["protocol"]) == {"reference"} and set(df["dataset"]) == {"densesirst"}
    bafe = df[(df["source"] == "paper:Table II") & (df["model"] == "bafenet")].set_index("backbone")
    assert bafe.loc["resnet18", "metric.test/mAP07"] == 0.283 and bafe.loc["resnet18", "gmacs"] == 57.654
    p = df[df["source"] == "paper:Table VIII"].set_index("param.p")["metric.test/mAP07"]
    assert p[0.5] == 0.283 and p[0.03125] == 0.236 and p[0.875] == 0.238
    centripetal = df[df["param.paper_method"] == "CentripetalNet"]
    assert (centripetal["gmacs"].item(), centripetal["params_m"].item()) == (491.0, 206.0)  # 0.491T, 0.206G


def test_paper_rows_match_the_transcription_and_the_paper_text():
    ref_csv = SHARED / "reference" / "densesirst_paper_tables.csv"
    seeds = glob.glob(str(SHARED / "seeds" / "002_*.txt"))
    if not ref_csv.is_file() or not seeds:
        pytest.skip("../shared/reference or ../shared/seeds not present")
    df = paper_frame()
    ref = list(csv.DictReader(ref_csv.open()))
    assert len(ref) == len(df)
    for (_, ours), theirs in zip(df.iterrows(), ref):
        assert ours["source"] == theirs["source"] and ours["param.paper_method"] == theirs["method"]
        for col, ours_col in (("mAP07", "metric.test/mAP07"), ("recall07", "metric.test/recall07"),
                              ("mAP12", "metric.test/mAP12"), ("recall12", "metric.test/recall12"),
                              ("gmacs", "gmacs"), ("params_m", "params_m")):
            want = float(theirs[col]) if theirs[col] else math.nan
            assert ours[ours_col] == pytest.approx(want, nan_ok=True), (theirs["method"], col)
        if theirs["backbone"]:
            assert ours["backbone"] == theirs["backbone"]
    # Table II straight from the paper's text: GMACs ("G"/"T"), params ("M"/"G"), 4 metrics, backbone
    lines = Path(seeds[0]).read_text().splitlines()
    start = next(i for i, s in enumerate(lines) if s.startswith("TABLE II:"))
    pat = re.compile(r"^(?:\\star )?(.+?)(?: \[\d+\]| \(Ours\))\s*(ResNet\d+)?\s*([\d.]+)([GT]) ([\d.]+)([MG])"
                     r" ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)$")
    parsed = []
    for s in lines[start:start + 45]:
        m = pat.match(s.strip())
        if m:
            parsed.append(m.groups())
    t2 = df[df["source"] == "paper:Table II"]
    assert len(parsed) == len(t2) == 33
    for (name, bb, f, fu, p, pu, *ms), (_, ours) in zip(parsed, t2.iterrows()):
        assert ours["param.paper_method"] == name
        assert (ours["backbone"] if isinstance(ours["backbone"], str) else None) == (bb.lower() if bb else None)
        assert ours["gmacs"] == pytest.approx(float(f) * (1000 if fu == "T" else 1))
        assert ours["params_m"] == pytest.approx(float(p) * (1000 if pu == "G" else 1))
        got = ours[["metric.test/mAP07", "metric.test/recall07", "metric.test/mAP12", "metric.test/recall12"]]
        assert list(got) == [float(x) for x in ms]


@pytest.fixture(scope="module")
def plot_df() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        p = [0.125, 0.25, 0.5, 0.75][i % 4]
        model = ["bafenet", "fcos"][i % 2]
        recall = np.linspace(0, 0.3 + 0.02 * (i % 5), 30)
        rows.append(run(f"t{i}", model, i // 4, 0.2 + 0.1 * p + rng.normal(0, 0.01),
                        search=f"s{i % 2}", backbone="resnet18", gmacs=40.0 + 3 * (i % 6),
                        params_m=20.0 + (i % 3), started_at=T0 + dt.timedelta(minutes=7 * i),
                        params={"p": p, "exchange": ["channel", "spatial"][i % 2]},
                        curves={"recall": recall.tolist(), "precision": (1 - recall).tolist()}))
    return frame(rows)


@pytest.mark.parametrize("kind", plots.KINDS)
def test_every_plot_kind_renders_a_png(plot_df, tmp_path, kind):
    from matplotlib.image import imread

    out = tmp_path / f"{kind}.png"
    if kind == "bars":
        plots.plot_bars(plot_df, out, "val/mAP07", ["model"], n_boot=500)
    elif kind == "pareto":
        plots.plot_pareto(plot_df, out, "val/mAP07")
    elif kind == "ablation":
        plots.plot_ablation(plot_df, out, "p", "val/mAP07", paper=paper_frame())
    elif kind == "pr":
        plots.plot_pr(plot_df, out, "val/mAP07", top=3)
    else:
        plots.plot_history(plot_df, out, "val/mAP07")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(out)
    assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.05


def test_ablation_categorical_and_paper_only(plot_df, tmp_path):
    plots.plot_ablation(plot_df, tmp_path / "a.png", "param.exchange", "val/mAP07", paper=paper_frame())
    plots.plot_ablation(plot_df.iloc[:0], tmp_path / "b.png", "adapter_hidden", "val/mAP07", paper=paper_frame())
    assert (tmp_path / "a.png").stat().st_size > 5000 and (tmp_path / "b.png").stat().st_size > 5000
    with pytest.raises(LeaderboardError, match="^nothing: "):
        plots.plot_ablation(plot_df, tmp_path / "c.png", "nothing", paper=paper_frame())


def test_pareto_front():
    cost = np.array([10.0, 20.0, 30.0, 15.0, 40.0])
    value = np.array([0.2, 0.3, 0.25, 0.1, 0.5])
    assert list(plots.pareto_front(cost, value)) == [0, 1, 4]


def test_exports_look_like_a_paper_table(seeds_df, tmp_path):
    df = query.select(seeds_df.drop(columns="partial"), protocol="reference")
    md = export.to_markdown(pd.concat([df, paper_frame()], ignore_index=True), ["val/mAP07", "test/mAP07"])
    table = md.split("| Method |", 1)[1]
    assert "| c | - | - | **0.900** | - | 1 |" in table  # best val/mAP07 in bold, one seed -> no spread
    assert f"| a | - | - | {BASE.mean() + 0.05:.3f} ± {BASE.std(ddof=1):.3f} | - | 5 |" in table
    assert "| BAFE-Net (resnet18) [Table II] | 57.654 | 22.310 | - | **0.283** | 1 |" in table
    html = export.to_html(df, ["val/mAP07"])
    assert "<td><b>0.900</b></td>" in html and html.count("<tr>") == 4
    export.export(df, "csv", tmp_path / "rows.csv")
    export.export(df, "parquet", tmp_path / "rows.parquet")
    assert len(pd.read_csv(tmp_path / "rows.csv")) == len(df) == len(pd.read_parquet(tmp_path / "rows.parquet"))
