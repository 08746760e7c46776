"""A search trial's leaderboard row is a pure function of data: built here without Ray from a real
search space, the trial's resolved spec (a real TrialConfig) and a result dict shaped as the
trainable reports it, then validated by appending it to a real Parquet leaderboard and reading it
back. The spec is resolved once from the space's base data and travels as JSON."""

from __future__ import annotations

import math
import pickle

import pytest

from irstdlab.harness.rows import (FACTS_FIELD, FAILURE_FIELD, TrialFacts, build_row, end_status, failure_of)
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.trial_spec import TrialSpec, resolve_trial
from irstdlab.leaderboards import open as open_leaderboard
from irstdlab.harness.space_loader import parse

SPACE = """
name: rows
base: quickstart
parameters:
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
  augment.bagcp: {choice: [none, reference]}
  augment.bagcp_cluster: {choice: [true, false], when: {augment.bagcp: reference}}
budget: {num_samples: 2, max_epochs: 4}
"""

FACTS = TrialFacts(backend="direct", hardware="host x86_64 2 CPUs, no GPU", seed=1, gmacs=1.25, params_m=0.5,
                   irstdlab_version="0.1.0", torch_version="2.5.0", ray_version="2.60.0", python_version="3.11.9")


def last_report(epoch: int, **extra: object) -> dict:
    """The shape of ``run_trial``'s report plus what Tune adds (time, timestamp, iteration)."""
    return {"epoch": epoch, "epochs": 4, "protocol": "voc", "selection": "val", "config_hash": "x", "workers": 1,
            "train/loss": 1.5, "train/loss_cls": 1.0, "train/loss_box": 0.5, "train/iterations": 3,
            "train/time_s": 2.0, "lr": 0.001, "images_per_s": 3.0, "val/mAP07": 0.25, "val/mAP12": 0.125,
            "val/recall": 0.5, "val/num_gts": 7, "best_epoch": epoch, "best/val/mAP07": 0.25,
            "time_total_s": 30.0, "timestamp": 1_700_000_030.0, "training_iteration": epoch, **extra}


@pytest.fixture(scope="module")
def space():
    return parse(SPACE, "rows.yaml")


PARAMS = {"optim.lr": 0.001, "augment.bagcp": "none"}


def row_for(space, result: dict, status: str, facts: TrialFacts | None = FACTS, **kw) -> dict:
    return build_row(search="rows", trial_id="abc_00001", space=space, spec=resolve_trial(space, PARAMS, 1),
                     facts=facts, result=result, status=status, **kw)


def stored(tmp_path, row: dict) -> dict:
    board = open_leaderboard(tmp_path / "leaderboard")
    board.append(row)
    table = board.read_table(search="rows").table
    assert table.num_rows == 1
    return table.to_pylist()[0]


def test_completed_row_round_trips_through_the_leaderboard(space, tmp_path):
    result = last_report(4, **{"test/mAP07": 0.375, "val/mNoCoAP": math.nan})
    assert end_status(result, space.budget.max_epochs) == "completed"
    out = stored(tmp_path, row_for(space, result, "completed", checkpoint="/runs/ckpt"))
    cfg = resolve_trial(space, PARAMS, 1).config
    assert out["status"] == "completed" and out["failure_reason"] is None
    assert out["config_hash"] == cfg.recipe_hash and out["space_hash"] == space.space_hash
    # the row's config_hash groups a configuration's seeds; the seeded hash (checkpoints) does not
    other_seed = resolve_trial(space, PARAMS, 2).config
    assert other_seed.recipe_hash == cfg.recipe_hash and other_seed.config_hash != cfg.config_hash
    assert out["epochs_completed"] == 4 and out["max_epochs"] == 4 and out["best_epoch"] == 4
    assert out["gmacs"] == 1.25 and out["params_m"] == 0.5 and out["hardware"] == FACTS.hardware
    assert (out["torch_version"], out["ray_version"]) == ("2.5.0", "2.60.0")
    assert out["model"] == cfg.model.name and out["dataset"] == cfg.data.dataset
    assert out["metric.val/mAP07"] == 0.25 and out["metric.test/mAP07"] == 0.375
    assert out["best.val/mAP07"] == 0.25 and out["param.optim.lr"] == 0.001
    assert "metric.val/mNoCoAP" not in out  # NaN is not a measurement
    assert not {"metric.lr", "metric.epoch", "metric.images_per_s"} & set(out)
    assert out["started_at"] is not None and out["checkpoint"] == "/runs/ckpt"
    assert "backend=direct" in out["note"] and "objective=val/mAP07" in out["note"]


def test_inactive_parameter_is_null_and_the_seed_is_in_params_json(space):
    row = row_for(space, last_report(4), "completed")
    assert row["params"] == {"optim.lr": 0.001, "augment.bagcp": "none", "augment.bagcp_cluster": None}
    assert '"train.seed": 1' in row["params_json"]


def test_early_stopped_row_says_why(space, tmp_path):
    decisions = [
        {"rung": 1, "value": 0.0, "compared": 3, "spread": 0.0, "cutoff": 0.0, "decision": "tie_continued"},
        {"rung": 2, "value": 0.05, "compared": 3, "spread": 0.2, "cutoff": 0.25, "decision": "stopped"},
    ]
    result = last_report(2)
    assert end_status(result, space.budget.max_epochs) == "early_stopped"
    out = stored(tmp_path, row_for(space, result, "early_stopped", decisions=decisions))
    assert out["stop_reason"] == "stopped at rung epoch 2: val/mAP07 0.0500 vs cut-off 0.2500"
    assert "a tie" in out["note"]
    # the same decisions on a completed trial give no stop reason
    assert row_for(space, last_report(4), "completed", decisions=decisions)["stop_reason"] is None


def test_failure_is_an_explicit_field_and_a_trial_without_facts_still_has_a_row(space, tmp_path):
    result = {"epoch": 1, FAILURE_FIELD: "diverged at epoch 2, iteration 5 (loss term loss_cls = nan)",
              "time_total_s": 4.0, "timestamp": 1_700_000_004.0}
    assert end_status(result, space.budget.max_epochs) == "failed"
    reason = failure_of(result)
    out = stored(tmp_path, row_for(space, result, "failed", facts=None, reason=reason))
    assert out["status"] == "failed" and "diverged" in out["failure_reason"]
    assert out["gmacs"] is None and out["hardware"] is None and "backend=?" in out["note"]
    assert failure_of(last_report(4)) is None


def test_facts_travel_as_json_once():
    text = FACTS.to_json()
    assert TrialFacts.from_json(text) == FACTS
    assert FACTS_FIELD not in last_report(1)  # an epoch's metrics do not carry the facts
    older = TrialFacts.from_json('{"backend": "train", "hardware": "h", "seed": 0, "retired_field": 1}')
    assert older.backend == "train" and older.gmacs is None and FACTS.cost("gmacs") == 1.25


def test_the_spec_travels_as_json_with_its_config_hash(space):
    spec = resolve_trial(space, PARAMS, 2)
    back = TrialSpec.from_json(spec.to_json())
    assert back.config == spec.config and back.config_hash == spec.config_hash
    assert (back.params, back.seed, back.config.train.seed) == (PARAMS, 2, 2)
    assert back.config.schedule.epochs == space.budget.max_epochs
    assert resolve_trial(space, PARAMS, 3).config_hash != spec.config_hash


def test_the_base_file_is_read_once_at_planning(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("model: {name: fcos, backbone: resnet18}\ndata: {batch_size: 4}\n")
    space = parse(f"base: {base}\nparameters:\n  optim.lr: {{loguniform: [1.0e-4, 1.0e-2]}}\n", "s.yaml")
    base.unlink()  # a worker on another node has no such file
    travelled = pickle.loads(pickle.dumps(space))
    spec = resolve_trial(travelled, {"optim.lr": 0.002}, 0)
    assert spec.config.data.batch_size == 4 and spec.config.optim.lr == 0.002


def test_config_errors_carry_their_key_as_data():
    with pytest.raises(ConfigError) as info:
        parse("parameters:\n  optim.lrr: {loguniform: [1.0e-4, 1.0e-2]}\n", "s.yaml")
    assert info.value.key == "parameters/optim.lrr" and "optim.lrr" in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))  # as Ray carries it from a worker
    assert again.key == info.value.key and str(again) == str(info.value)
