"""Staged spaces without Ray: the `stages:` section's checks, the derived stage spaces, the choice of
the stage-2 configurations from real Parquet rows, and `compare` on a staged search's rows."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import irstdlab.leaderboards as lb
from irstdlab.harness.cli import main
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.stages import finished_trials, select_best, stage_rows
from irstdlab.leaderboards import compare
from irstdlab.harness import space_loader
from irstdlab.harness.stage_spaces import confirm_space, group_values, tune_space

SPACE = textwrap.dedent("""\
    name: staged
    base: quickstart
    overrides:
      data.synthetic_images: [16, 8, 8]
    parameters:
      model.name: {choice: [fcos, ssd, bafenet]}
      optim.lr: {loguniform: [1.0e-3, 1.0e-2]}
      model.center_sample_radius: {uniform: [1.0, 2.5], when: {model.name: [fcos, bafenet]}}
      model.anchor_scale: {choice: [0.5, 1.0], when: {model.name: ssd}}
    objective: {metric: val/mAP07, mode: max}
    budget: {max_epochs: 4}
    stages:
      tune:
        group_by: model.name
        budget: {num_samples: 3, max_epochs: 2, grace_period: 1}
        per_group:
          ssd: {optim.lr: {loguniform: [3.0e-4, 3.0e-3]}}
      confirm: {seeds: 3}
    """)


def parse(text: str = SPACE):
    return space_loader.parse(text, "space.yaml")


def test_stage_spaces_per_group_and_confirm():
    space = parse()
    assert group_values(space) == ["fcos", "ssd", "bafenet"]
    ssd = tune_space(space, "ssd")
    assert ssd.stage == "tune" and ssd.seeds == 1 and ssd.budget.max_epochs == 2 and ssd.budget.num_samples == 3
    params = {p.path: p for p in ssd.parameters}
    assert set(params) == {"model.name", "optim.lr", "model.anchor_scale"}  # fcos's knob is left out
    assert params["model.name"].values == ("ssd",) and (params["optim.lr"].low, params["optim.lr"].high) == (3e-4, 3e-3)
    fcos = {p.path: p for p in tune_space(space, "fcos").parameters}
    assert (fcos["optim.lr"].low, fcos["optim.lr"].high) == (1e-3, 1e-2) and "model.center_sample_radius" in fcos
    points = [{"model.name": "fcos", "optim.lr": 0.002, "model.center_sample_radius": 1.5},
              {"model.name": "ssd", "optim.lr": 0.001, "model.anchor_scale": 0.5}]
    confirm = confirm_space(space, points)
    assert confirm.stage == "confirm" and confirm.sampler == "grid" and confirm.seeds == 3
    assert confirm.grid() == points and confirm.budget.max_epochs == 4 and confirm.budget.grace_period == 4
    cfg = confirm.trial_config(points[1], seed=2)
    assert (cfg.model.name, cfg.optim.lr, cfg.model.anchor_scale, cfg.train.seed, cfg.schedule.epochs) == \
        ("ssd", 0.001, 0.5, 2, 4)
    # the stage-1 space searches the group's own configurations only
    assert tune_space(space, "ssd").trial_config({"model.name": "ssd", "optim.lr": 1e-3}).schedule.epochs == 2


@pytest.mark.parametrize("old, new, expected", [
    ("group_by: model.name", "group_by: optim.lr",
     "space.yaml:14: stages: tune.group_by: 'optim.lr' is not an unconditional choice parameter"),
    ("ssd: {optim.lr", "sdd: {optim.lr", "space.yaml:17: stages: tune.per_group.sdd: not one of model.name's choices"),
    ("ssd: {optim.lr", "ssd: {optim.lx", "space.yaml:17: stages: tune.per_group.ssd: stage 1 of model.name=ssd: optim.lx: "
                                         "not a parameter of the space"),
    ("max_epochs: 2, grace", "max_epochs: 5, grace",
     "space.yaml:15: stages: tune.budget: max_epochs 5 is more than the confirm stage's 4"),
    ("confirm: {seeds: 3}", "confirm: {seeds: 0}", "space.yaml:18: stages: confirm.seeds: expected an integer in 1.."),
    ("confirm: {seeds: 3}", "confirm: {seed: 3}", "space.yaml:18: stages: confirm.seed: unknown key"),
    ("    group_by: model.name\n", "", "space.yaml: stages: tune.group_by: expected the path of a choice"),
])
def test_bad_stages_are_one_line_errors(old, new, expected):
    assert old in SPACE
    with pytest.raises(ConfigError) as info:
        parse(SPACE.replace(old, new))
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_cli_refuses_a_bad_stages_section(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("group_by: model.name", "group_by: model.nme"))
    assert main(["search", str(path), "--dry-run", "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "space.yaml:14: stages: tune.group_by" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "staged").exists()


def _row(trial: str, stage: str | None, model: str, seed: int, value: float, params: dict, **extra) -> dict:
    row = {"search": "staged", "trial_id": trial, "status": "completed", "model": model, "backbone": "resnet18",
           "dataset": "synthetic", "protocol": "clean", "seed": seed, "stage": stage, "gmacs": 3.0,
           "params_m": 11.0, "epochs_completed": 2, "max_epochs": 2, "params": params,
           "params_json": json.dumps({**params, "train.seed": seed}, sort_keys=True),
           "metrics": {"val/mAP07": value}}
    row.update(extra)
    return row


def test_select_best_from_parquet_rows(tmp_path):
    space = parse()
    board = lb.open(tmp_path / "leaderboard")
    f_lo, f_hi = {"model.name": "fcos", "optim.lr": 0.001}, {"model.name": "fcos", "optim.lr": 0.004}
    s_one = {"model.name": "ssd", "optim.lr": 0.002, "model.anchor_scale": 0.5}
    # fcos lr 0.004 wins on its mean over two seeds (0.45) though lr 0.001 has the single best value (0.5)
    board.append(_row("t1", "tune", "fcos", 0, 0.50, f_lo))
    board.append(_row("t2", "tune", "fcos", 1, 0.30, f_lo))
    board.append(_row("t3", "tune", "fcos", 0, 0.44, f_hi))
    board.append(_row("t4", "tune", "fcos", 1, 0.46, f_hi))
    board.append(_row("t5", "tune", "fcos", 0, 0.99, {"model.name": "fcos", "optim.lr": 0.009},
                      status="early_stopped", epochs_completed=1))  # never reached the budget: not chosen
    board.append(_row("t6", "tune", "ssd", 0, 0.20, s_one))
    board.append(_row("t7", "confirm", "ssd", 0, 0.95, {**s_one, "optim.lr": 0.005}))  # stage 2: not stage 1
    rows = stage_rows(str(tmp_path), "staged")
    points, notes = select_best(rows, space)
    assert points == [f_hi, s_one]
    assert notes == ["bafenet: no completed stage-1 trial with val/mAP07; not confirmed"]
    assert finished_trials(rows, "tune", "param.model.name", "fcos") == 5
    assert finished_trials(rows, "confirm") == 1 and finished_trials(rows.iloc[0:0], "tune") == 0


@pytest.fixture()
def staged_board(tmp_path):
    board = lb.open(tmp_path / "leaderboard")
    base = np.array([0.40, 0.35, 0.45])
    for seed in range(3):  # b trails a by exactly 0.05 on every seed; c by 0.002, 0.03, -0.02
        board.append(_row(f"a{seed}", "confirm", "a", seed, base[seed], {}))
        board.append(_row(f"b{seed}", "confirm", "b", seed, base[seed] - 0.05, {}))
        board.append(_row(f"c{seed}", "confirm", "c", seed, base[seed] - [0.002, 0.03, -0.02][seed], {}))
        board.append(_row(f"t{seed}", "tune", "b", seed, 0.99, {}))  # a stage-1 row must not rank
    board.append(_row("x0", None, "z", 0, 0.10, {}, search="plain"))  # an ordinary search: kept
    return tmp_path


def test_compare_ranks_confirm_rows_with_paired_differences_to_the_best(staged_board):
    df = lb.open(staged_board / "leaderboard").read()
    (block,) = compare.compare(df, "val/mAP07", ["model"])
    assert [g.group for g in block.groups] == ["a", "c", "b", "z"]
    assert [g.n for g in block.groups] == [3, 3, 3, 1]  # the tune rows of b are gone
    assert block.groups[0].mean == pytest.approx(0.40)
    pairs = {p.b: p for p in block.paired_to_best if p is not None}
    assert set(pairs) == {"b", "c"}  # z shares only one seed with a
    assert pairs["b"].mean_diff == pytest.approx(0.05) and pairs["b"].distinguishable
    assert pairs["b"].ci_low == pytest.approx(0.05) and pairs["b"].n_pairs == 3
    assert pairs["c"].mean_diff == pytest.approx(0.004) and not pairs["c"].distinguishable
    assert block.indistinguishable_from_best() == ["c"]
    assert block.paired is block.paired_to_best[0]
    assert any("stage-2 (confirm) rows only: 3 stage-1 (tune) row(s) of staged left out" in n for n in block.notes)
    # the Pareto plot's points: one per group, its mean over the rows compare ranked
    from irstdlab.leaderboards.plots import group_means

    ranked, _ = compare.confirm_rows(df)
    points = group_means(ranked, "metric.val/mAP07", ["model"]).set_index("model")
    assert list(points.index) == ["a", "b", "c", "z"] and points.loc["b", "trial_id"] == "mean of 3"
    assert points.loc["b", "metric.val/mAP07"] == pytest.approx(0.35) and points.loc["a", "gmacs"] == 3.0


def test_compare_cli_on_a_staged_search(staged_board, capsys):
    assert main(["leaderboard", "compare", "--storage", str(staged_board), "--search", "staged",
                 "--group-by", "model"]) == 0
    out = capsys.readouterr().out
    assert "paired a - b over 3 matching seeds: +0.0500" in out and "-> distinguishable" in out
    assert "statistically indistinguishable from the best (a, paired by seed): c" in out
    assert "stage-2 (confirm) rows only" in out
    png = staged_board / "pareto.png"
    assert main(["leaderboard", "compare", "--storage", str(staged_board), "--search", "staged", "--plot",
                 str(png)]) == 0
    assert f"pareto plot: {png}" in capsys.readouterr().out and png.read_bytes()[:4] == b"\x89PNG"
    assert main(["leaderboard", "compare", "--storage", str(staged_board), "--search", "staged", "--json"]) == 0
    (block,) = json.loads(capsys.readouterr().out)
    assert block["indistinguishable_from_best"] == ["c"] and len(block["paired_to_best"]) == 2
    # only stage-1 rows: the message says the confirm stage has not run yet
    only_tune = lb.open(staged_board / "only")
    only_tune.append(_row("t0", "tune", "b", 0, 0.5, {}))
    assert main(["leaderboard", "compare", str(staged_board / "only")]) == 2
    assert "the confirm stage has no finished row yet" in capsys.readouterr().err
