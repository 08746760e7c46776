"""A tiny staged search through real Ray: stage rows, the choice of each group's best stage-1
configuration, its seeds in stage 2, the report; and --resume after the driver was killed between
two stage-1 groups (the finished group is not rerun)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
from search_driver import Driver  # tests/ is on sys.path under pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

SPACE = textwrap.dedent("""\
    name: tiny
    base: quickstart
    overrides:
      data.synthetic_images: [16, 8, 8]
      optim.grad_clip: 10.0
    parameters:
      model.name: {choice: [fcos, ssd]}
      optim.lr: {loguniform: [1.0e-3, 1.0e-2]}
      model.center_sample_radius: {uniform: [1.0, 2.5], when: {model.name: fcos}}
      model.anchor_scale: {choice: [0.5, 1.0], when: {model.name: ssd}}
    objective: {metric: val/mAP07, mode: max}
    budget: {max_epochs: 2}
    stages:
      tune:
        group_by: model.name
        budget: {num_samples: 2, max_epochs: 1}
        per_group:
          ssd: {optim.lr: {loguniform: [3.0e-4, 3.0e-3]}}
      confirm: {seeds: 2}
    """)


def _rows(storage: Path):
    from irstdlab.leaderboards import open as open_leaderboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_leaderboard(storage / "leaderboard").read_table(search="tiny").table.to_pandas()


def test_staged_search_stages_choice_seeds_report_and_resume(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SPACE)
    storage = tmp_path / "runs"
    args = ["tiny.yaml", "--storage", str(storage), "--num-cpus", "2"]
    first = Driver(args, tmp_path)
    try:  # killed (driver and every Ray process) once fcos's stage 1 is recorded as finished
        first.wait_for_text("starting tune-ssd", 400)
    finally:
        first.kill_group()
    state = json.loads((storage / "tiny" / "irstdlab-stages.json").read_text())
    assert state["stages"]["tuned"] == ["fcos"] and state["stages"]["points"] is None
    fcos_rows = _rows(storage).set_index("trial_id")
    fcos_rows = fcos_rows[fcos_rows["param.model.name"] == "fcos"]
    assert len(fcos_rows) == 2 and (fcos_rows["stage"] == "tune").all()

    second = Driver(["--resume", "--name", "tiny", "--storage", str(storage)], tmp_path)
    try:
        assert second.finish(timeout=600) == 0, "".join(second.text[-40:])
    finally:
        second.kill_group()
    out = "".join(second.text)
    assert "tune-fcos" not in out  # a finished stage 1 is not rerun
    assert "tune-ssd of search tiny" in out and "confirm of search tiny" in out

    df = _rows(storage)
    assert df["trial_id"].is_unique and (df["status"] == "completed").all()
    tune, confirm = df[df["stage"] == "tune"], df[df["stage"] == "confirm"]
    assert len(tune) == 4 and len(confirm) == 4 and set(df["stage"]) == {"tune", "confirm"}
    assert (tune["max_epochs"] == 1).all() and (confirm["max_epochs"] == 2).all()
    assert (confirm["epochs_completed"] == 2).all()
    after = df.set_index("trial_id")
    assert (after.loc[fcos_rows.index, "written_at"] == fcos_rows["written_at"]).all()  # untouched by the resume
    # stage 2 runs each group's best stage-1 configuration, with seeds 0 and 1
    for group in ("fcos", "ssd"):
        mine = tune[tune["param.model.name"] == group]
        best = mine.sort_values(["metric.val/mAP07", "params_json"], ascending=[False, True]).iloc[0]
        top = mine[mine["metric.val/mAP07"] == best["metric.val/mAP07"]]
        chosen = confirm[confirm["model"] == group]
        assert sorted(chosen["seed"]) == [0, 1]
        points = {json.dumps({k: v for k, v in json.loads(p).items() if k != "train.seed"}, sort_keys=True)
                  for p in chosen["params_json"]}
        assert len(points) == 1
        candidates = {json.dumps({k: v for k, v in json.loads(p).items() if k != "train.seed"}, sort_keys=True)
                      for p in top["params_json"]}
        assert points <= candidates  # the best value (ties: the first configuration by its JSON)
    assert "statistically indistinguishable from the best" in out and "paired" in out
    report = storage / "tiny" / "report" / "report.md"
    assert f"report:        {report}" in out
    text = report.read_text()
    assert "## Tuned recipes" in text and "`optim.lr`" in text and "![learning curves](curves.png)" in text
    for png in ("pareto.png", "ranking.png", "curves.png"):
        assert (report.parent / png).read_bytes()[:4] == b"\x89PNG"
    # the follow-up comparison ranks the stage-2 rows only, and says so
    shown = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", "leaderboard", "compare", "--storage",
                            str(storage), "--search", "tiny", "--group-by", "model"], capture_output=True,
                           text=True, timeout=120)
    assert shown.returncode == 0 and "stage-2 (confirm) rows only: 4 stage-1 (tune) row(s)" in shown.stdout
