"""Extending a search: `start_with:` points, `--resume --more K`, `--resume --retry-failed`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from irstdlab.harness.errors import ConfigError
from irstdlab.harness import space_loader
from search_driver import Driver  # the kill-and-resume driver (tests/ is on sys.path)

SPACE = """\
name: ext
base: quickstart
overrides:
  data.synthetic_images: [16, 8, 8]
parameters:
  model.name: {choice: [bafenet, fcos]}
  optim.lr: {loguniform: [5.0e-4, 5.0e-3]}
  model.p: {choice: [0.25, 0.5, 0.75], when: {model.name: bafenet}}
start_with:
  - {model.name: fcos, optim.lr: 1.0e-3}
objective: {metric: val/mAP07, mode: max}
budget: {num_samples: 2, max_epochs: 2, grace_period: 1}
"""
START = {"model.name": "fcos", "optim.lr": 1.0e-3}


def _space_with(tmp_path: Path, start_with: str, extra: str = "") -> str:
    text = SPACE.split("start_with:")[0] + start_with + "objective: {metric: val/mAP07, mode: max}\n" + extra
    text += "" if "budget" in extra else "budget: {num_samples: 2, max_epochs: 2, grace_period: 1}\n"
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return str(path)


# ------------------------------------------------------------------------------ start_with, no Ray
@pytest.mark.parametrize("start_with, extra, message", [
    ("start_with:\n  - {model.depth: 3}\n", "", "point 1: model.depth is not a searched parameter"),
    ("start_with:\n  - {model.name: yolo}\n", "", "model.name: 'yolo' is not one of its choices"),
    ("start_with:\n  - {optim.lr: 0.5}\n", "", "optim.lr: 0.5 is outside loguniform [0.0005, 0.005]"),
    ("start_with:\n  - {optim.lr: fast}\n", "", "optim.lr: 'fast' is not a number"),
    ("start_with:\n  - {model.name: fcos, model.p: 0.5}\n", "",
     "model.p is searched only when model.name is in ['bafenet'], and this point has model.name 'fcos'"),
    ("start_with:\n  - {model.p: 0.5}\n", "", "model.p is searched only when model.name is in ['bafenet']; give"),
    ("start_with:\n  - {model.name: fcos}\n  - {model.name: fcos}\n", "", "point 2 repeats point 1"),
    ("start_with:\n  - {model.name: fcos}\n  - {model.name: bafenet}\n",
     "budget: {num_samples: 1, max_epochs: 2, grace_period: 1}\n", "2 points but budget.num_samples is 1"),
    ("start_with:\n  - {model.name: fcos}\n", "sampler: grid\n", "not for sampler: grid"),
    ("start_with: {model.name: fcos}\n", "", "expected a non-empty list of mappings"),
])
def test_start_with_errors_name_the_file_line_and_point(tmp_path, start_with, extra, message):
    path = _space_with(tmp_path, start_with, extra)
    with pytest.raises(ConfigError) as exc:
        space_loader.load(path)
    text = str(exc.value)
    line = next(i for i, ln in enumerate(Path(path).read_text().splitlines(), 1) if ln.startswith("start_with"))
    assert text.startswith(f"{path}:{line}: start_with: ") and message in text and "\n" not in text


def test_start_with_a_combination_the_config_rejects(tmp_path):
    # each value alone fits the base (head_width 64, norm_groups 16); together 48 % 32 != 0
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("  optim.lr: {loguniform: [5.0e-4, 5.0e-3]}\n",
                                  "  optim.lr: {loguniform: [5.0e-4, 5.0e-3]}\n  model.head_width: {choice: [64, 48]}\n"
                                  "  model.norm_groups: {choice: [16, 32]}\n")
                    .replace("{model.name: fcos, optim.lr: 1.0e-3}", "{model.head_width: 48, model.norm_groups: 32}"))
    with pytest.raises(ConfigError) as exc:
        space_loader.load(str(path))
    assert "start_with: point 1: rejected by the config:" in str(exc.value) and "norm_groups" in str(exc.value)
    path.write_text(path.read_text().replace("model.norm_groups: 32}", "model.norm_groups: 16}"))
    assert space_loader.load(str(path)).start_with == ({"model.head_width": 48, "model.norm_groups": 16},)


def test_start_with_points_are_the_searchers_first_suggestions(tmp_path):
    from irstdlab.harness.search_tuner import make_searcher

    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("start_with:\n", "start_with:\n  - {model.name: bafenet, model.p: 0.75}\n")
                    .replace("num_samples: 2", "num_samples: 4"))
    space = space_loader.load(str(path))
    searcher = make_searcher(space)  # Ray's OptunaSearch itself, asked without a running Tune
    got = [searcher.suggest(f"t{i}") for i in range(4)]
    assert got[0]["model.name"] == "bafenet" and got[0]["model.p"] == 0.75  # optim.lr left out: sampled
    assert 5e-4 <= got[0]["optim.lr"] <= 5e-3
    assert got[1] == START
    assert got[2:] != got[:2] and all(g not in got[:2] for g in got[2:])
    from irstdlab.harness.search import _preview  # --dry-run shows the same order

    assert _preview(space, 4) == got


def test_more_and_retry_need_resume_one_line_exit_2(tmp_path):
    for flags in (["--more", "2"], ["--retry-failed"]):
        proc = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", "search", *flags, "--storage",
                               str(tmp_path / "runs")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert f"{flags[0]}: needs --resume --name NAME" in proc.stderr


# ------------------------------------------------------------------------------ through Ray
TINY = ["--num-cpus", "2", "--max-concurrent", "1", "--scheduler", "none"]


def _rows(storage: Path, search: str):
    from irstdlab.leaderboards import open as open_leaderboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_leaderboard(storage / "leaderboard").read_table(search=search).table.to_pandas()


def _params(df) -> list[dict]:
    return [{k: v for k, v in json.loads(p).items() if k != "train.seed"} for p in df["params_json"]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_then_resume_more_continues_the_seeded_sequence(tmp_path):
    space_file = tmp_path / "ext.yaml"
    space_file.write_text(SPACE)
    storage = tmp_path / "runs"
    first = Driver([str(space_file), "--name", "ext", "--storage", str(storage), *TINY], tmp_path)
    try:
        done = first.wait_for(lambda m: m.group(5) == "completed", 400).group(1)
        first.wait_for(lambda m: m.group(1) != done and m.group(2) == "1" and m.group(5) == "running", 300)
        time.sleep(1.5)  # let Tune snapshot the experiment after that checkpoint
        os.killpg(first.proc.pid, signal.SIGKILL)
        first.proc.wait(timeout=60)
    finally:
        first.kill_group()

    second = Driver(["--resume", "--name", "ext", "--storage", str(storage), "--more", "2"], tmp_path)
    assert second.finish(timeout=600) == 0, "".join(second.text[-60:])
    text = "".join(second.text)
    assert "trials: 4 = 4 configurations x 1 seed(s)" in text and "4/4 trials finished" in text
    state = json.loads((storage / "ext" / "irstdlab-search.json").read_text())
    assert (state["planned_configs"], state["planned_trials"]) == (4, 4)

    df = _rows(storage, "ext").sort_values("started_at")
    assert len(df) == 4 and df["trial_id"].is_unique
    assert (df["status"] == "completed").all() and (df["epochs_completed"] == 2).all()
    params = _params(df)
    assert params[0] == START  # the start_with point ran first
    assert all(p not in params[:2] for p in params[2:])  # the 2 added ones are new configurations ...
    from irstdlab.harness.search import SearchOptions, _preview, build_space

    expected = _preview(build_space(SearchOptions(space=str(space_file))), 4)
    def canonical(points: list[dict]) -> list[str]:
        return sorted(json.dumps(p, sort_keys=True) for p in points)

    assert canonical(params) == canonical(expected)  # ... of the seeded sequence


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_retry_failed_replaces_the_failed_rows(tmp_path):
    import torch
    import torchvision

    weights = tmp_path / "resnet18.pth"  # missing at first: the trial that needs it raises
    space_file = tmp_path / "rt.yaml"
    space_file.write_text(f"""\
name: rt
base: quickstart
overrides:
  data.synthetic_images: [16, 8, 8]
  model.name: fcos
parameters:
  model.pretrained: {{choice: [null, {weights}]}}
objective: {{metric: val/mAP07, mode: max}}
budget: {{num_samples: 2, max_epochs: 1, grace_period: 1}}
sampler: grid
""")
    storage = tmp_path / "runs"
    first = Driver([str(space_file), "--name", "rt", "--storage", str(storage), *TINY], tmp_path)
    assert first.finish(timeout=600) == 0, "".join(first.text[-60:])
    before = _rows(storage, "rt").set_index("trial_id")
    assert sorted(before["status"]) == ["completed", "failed"]
    failed = before.index[before["status"] == "failed"][0]
    assert "no such file" in before.loc[failed, "failure_reason"]

    torch.save(torchvision.models.resnet18().state_dict(), weights)  # the cause is fixed
    second = Driver(["--resume", "--name", "rt", "--storage", str(storage), "--retry-failed"], tmp_path)
    assert second.finish(timeout=600) == 0, "".join(second.text[-60:])
    after = _rows(storage, "rt").set_index("trial_id")
    assert len(after) == 2 and set(after.index) == set(before.index)  # replaced, not added
    assert (after["status"] == "completed").all()
    assert after.loc[failed, "written_at"] > before.loc[failed, "written_at"]
    ok = next(t for t in before.index if t != failed)
    assert after.loc[ok, "written_at"] == before.loc[ok, "written_at"]  # the completed trial did not rerun
    assert json.loads(after.loc[failed, "params_json"])["model.pretrained"] == str(weights)
