"""The replay benchmark's accounting (benchmarks/replay.py) on tiny hand-made tables: the real
searcher (Ray's OptunaSearch over Optuna's samplers) and the harness's fair ASHA, no training."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import replay  # noqa: E402  (benchmarks/ is not a package)

from irstdlab.harness.space_loader import parse  # noqa: E402

SPACE = """\
base: quickstart
parameters:
  model.name: {{choice: [bafenet, fcos]}}
  optim.lr: {{choice: [0.001, 0.002, 0.004]}}
objective: {{metric: val/mAP07, mode: max}}
budget: {{num_samples: 6, max_epochs: 2, grace_period: 1, reduction_factor: 2, min_compared: {min_compared}}}
sampler: grid
"""


def space(min_compared: int = 1):
    return parse(SPACE.format(min_compared=min_compared), label="test-space")


def table(space, finals: dict[tuple[str, float], float], first: float = 0.1) -> replay.Table:
    """Two-epoch curves: ``first`` after epoch 1 unless given as (value1, value2)."""
    points = tuple(space.grid())
    curves = []
    for p in points:
        v = finals[(p["model.name"], p["optim.lr"])]
        curves.append(tuple(v) if isinstance(v, tuple) else (first, v))
    return replay.Table(points, tuple(curves))


FINALS = {("bafenet", 0.001): 0.30, ("bafenet", 0.002): 0.45, ("bafenet", 0.004): 0.20,
          ("fcos", 0.001): 0.40, ("fcos", 0.002): 0.50, ("fcos", 0.004): 0.10}


def test_grid_consumes_every_epoch_when_the_target_is_out_of_reach():
    s = space()
    t = table(s, FINALS)
    assert (t.total_epochs, t.best) == (12, 0.50)
    out = replay.replay(s, t, "grid", seed=3, tolerance=-1.0)  # target above the best: never held
    assert (out.trials, out.epochs, out.to_target) == (6, 12, None)
    assert out.fraction == 1.0


def test_grid_reaches_the_best_when_it_trains_it():
    s = space()
    t = table(s, FINALS)
    positions = set()
    for seed in range(8):
        out = replay.replay(s, t, "grid", seed=seed)
        # only fcos lr 0.002 is within 0.01 of the best: reached when that trial ends
        assert out.to_target == out.epochs == 2 * out.trials
        positions.add(out.trials)
    assert len(positions) > 1  # the order differs between seeds


@pytest.mark.parametrize("method", replay.METHODS)
def test_a_first_trial_at_the_best_costs_exactly_its_epochs(method):
    s = space()
    t = table(s, {k: 0.5 for k in FINALS})  # every configuration is the best
    out = replay.replay(s, t, method, seed=0)
    assert (out.trials, out.to_target) == (1, 2)
    assert out.fraction == pytest.approx(2 / 12)


def test_asha_pays_only_the_epochs_a_stopped_trial_ran():
    s = space(min_compared=1)
    # epoch-1 values spread widely, so ASHA's rung at epoch 1 cuts the lower half
    curves = {k: (v, v) for k, v in FINALS.items()}
    t = table(s, curves)
    plain = replay.replay(s, t, "random", seed=5, tolerance=-1.0, budget=2.0)
    asha = replay.replay(s, t, "asha+random", seed=5, tolerance=-1.0, budget=2.0)
    assert plain.epochs == 2 * plain.trials == 24  # every trial runs both epochs
    assert asha.epochs >= 24 and asha.trials > plain.trials  # same budget, some trials cut at epoch 1
    stopped = 2 * asha.trials - asha.epochs
    assert stopped > 0


def test_summary_reports_median_and_interquartile_range():
    outcomes = [replay.Outcome("m", seed, 1, 4, e, 10, 10) for seed, e in enumerate([1, 2, 3, 4, None])]
    s = replay.summarise(outcomes)["m"]
    assert (s["q1"], s["median"], s["q3"]) == (0.2, 0.3, 0.4)
    assert s["reached"] == 4 and s["fractions"][-1] == 1.0  # not reached counts as the whole budget


def test_read_table_round_trip_and_a_missing_epoch(tmp_path):
    s = space()
    path = tmp_path / "t.csv"
    lines = ["model.name,optim.lr,epoch,val_mAP07"]
    for (name, lr), v in FINALS.items():
        lines += [f"{name},{lr},1,0.1", f"{name},{lr},2,{v}"]
    path.write_text("\n".join(lines) + "\n")
    t = replay.read_table(path, s)
    assert t.curve({"model.name": "fcos", "optim.lr": 0.002}) == (0.1, 0.5)
    path.write_text("\n".join(lines[:-1]) + "\n")  # fcos lr 0.004 lost its epoch 2
    with pytest.raises(replay.TableError, match=r"t\.csv: val_mAP07: no value for .*fcos.* epoch\(s\) \[2\]"):
        replay.read_table(path, s)


def test_efficiency_part_names_a_bad_table_in_one_line(tmp_path, capsys):
    import bench_search

    bad = tmp_path / "bad.csv"
    bad.write_text("model.name,optim.lr,model.head_depth,model.p,model.selection,epoch,val_mAP07\n"
                   "fcos,0.0006,7,,,1,0.1\n")
    assert bench_search.main(["--part", "efficiency", "--table", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}:2: model.head_depth: '7' is not one of the space's values"]


def test_rows_of_a_wider_grid_are_skipped_only_when_asked(tmp_path):
    s = space()
    path = tmp_path / "wider.csv"
    path.write_text("model.name,optim.lr,epoch,val_mAP07\nfcos,0.002,1,0.1\nfcos,0.008,1,0.2\n")
    rows = replay.read_rows(path, s, skip_outside=True)
    assert rows == [({"model.name": "fcos", "optim.lr": 0.002}, {1: 0.1})]
    with pytest.raises(replay.TableError, match=r"wider\.csv:3: optim\.lr: '0\.008'"):
        replay.read_rows(path, s)
