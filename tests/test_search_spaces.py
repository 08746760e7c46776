"""Search-space YAML: the shipped spaces load, sampling respects conditions, bad files fail in one line."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import optuna
import pytest

from irstdlab.harness.errors import ConfigError
from irstdlab.harness import space_loader

GOOD = """\
name: tiny
base: quickstart
overrides:
  data.synthetic_images: [16, 8, 8]
parameters:
  model.name: {choice: [bafenet, fcos]}
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
  model.head_depth: {int: [1, 3]}
  model.p: {choice: [0.25, 0.5], when: {model.name: bafenet}}
objective: {metric: val/mAP07, mode: max}
budget: {num_samples: 4, max_epochs: 2, grace_period: 1, reduction_factor: 2}
sampler: optuna
"""


def parse(text: str) -> space_loader.SearchSpace:
    return space_loader.parse(textwrap.dedent(text), "space.yaml", None, "tiny")


def test_shipped_spaces_load_and_validate():
    names = space_loader.builtin_names()
    assert {"quickstart", "bafe_ablation", "paper_grid", "detectors"} <= set(names)
    spaces = {n: space_loader.load(n) for n in names}
    quick = spaces["quickstart"]
    assert quick.sampler == "optuna" and quick.num_trials() >= 6
    assert {p.path for p in quick.parameters} >= {"model.name", "model.p", "model.selection"}
    # the paper grid is the exact product of bafe_ablation's axes (BAG-CP: off, or on x 2^3 toggles)
    grid = spaces["paper_grid"].grid()
    assert len(grid) == 4 * 4 * 9 * 4 * 5 * (1 + 8) == spaces["paper_grid"].num_trials()
    assert {p.path for p in spaces["paper_grid"].parameters} == {p.path for p in spaces["bafe_ablation"].parameters}
    axes = {p.path: set(p.values) for p in spaces["bafe_ablation"].parameters}
    for point in grid[:50]:
        assert all(v in axes[k] for k, v in point.items())
    # every registered detector, three seeds each, each a valid trial config on the shared base
    from irstdlab.models import list_models

    from irstdlab.harness.stage_spaces import group_values, tune_space

    detectors = spaces["detectors"]  # staged: each detector tuned on its own, then its best x 3 seeds
    assert sorted(group_values(detectors)) == list_models() and detectors.stages.confirm.seeds == 3
    for name in group_values(detectors):
        tuned = tune_space(detectors, name)
        cfg = tuned.trial_config({"model.name": name, "optim.lr": 2e-3}, seed=2)
        assert cfg.model.name == name and cfg.train.seed == 2 and cfg.data.dataset == "synthetic"
    # every shipped space builds a valid TrialConfig for its grid points / first samples
    for point in grid[:3]:
        cfg = spaces["paper_grid"].trial_config(point, seed=1)
        assert cfg.model.p == point["model.p"] and cfg.train.seed == 1 and cfg.schedule.epochs == 20
        assert cfg.data.protocol == "reference" and cfg.augment.bagcp == point["augment.bagcp"]


def test_define_by_run_is_picklable_and_respects_conditions():
    space = parse(GOOD)
    dbr = pickle.loads(pickle.dumps(space.define_by_run()))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3), direction="maximize")
    seen_names = set()
    for _ in range(30):
        trial = study.ask()
        dbr(trial)
        params = trial.params
        seen_names.add(params["model.name"])
        assert ("model.p" in params) == (params["model.name"] == "bafenet")  # conditional
        assert 1e-4 <= params["optim.lr"] <= 1e-2 and params["model.head_depth"] in (1, 2, 3)
        study.tell(trial, 0.0)
        cfg = space.trial_config(params, seed=2)
        assert cfg.optim.lr == params["optim.lr"] and cfg.schedule.epochs == 2
    assert seen_names == {"bafenet", "fcos"}


def test_seeded_sampling_is_reproducible():
    def draw(seed):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        out = []
        for i in range(12):
            t = study.ask()
            parse(GOOD).define_by_run()(t)
            out.append(t.params)
            study.tell(t, float(i % 3))
        return out

    assert draw(0) == draw(0) and draw(0) != draw(1)


def test_grid_expands_conditionals_without_duplicates():
    space = parse(GOOD.replace("optim.lr: {loguniform: [1.0e-4, 1.0e-2]}", "optim.lr: {choice: [0.001, 0.002]}")
                  .replace("sampler: optuna", "sampler: grid"))
    grid = space.grid()
    # bafenet: 2 lr x 3 depth x 2 p; fcos: 2 lr x 3 depth (p inactive, not duplicated)
    assert len(grid) == 12 + 6 == space.num_trials()
    assert all("model.p" not in g for g in grid if g["model.name"] == "fcos")
    assert space.num_trials(num_samples=5) == 5


def test_space_hash_tracks_the_space_not_the_sample_count():
    a = parse(GOOD)
    assert parse(GOOD.replace("num_samples: 4", "num_samples: 9")).space_hash == a.space_hash
    assert parse(GOOD.replace("[0.25, 0.5]", "[0.25, 0.75]")).space_hash != a.space_hash


@pytest.mark.parametrize("old,new,expected", [
    ("model.head_depth: {int", "model.head_dept: {int", "space.yaml:8: parameters: model.head_dept: not a config key (did you mean model.head_depth?)"),
    ("{choice: [0.25, 0.5],", "{choice: [0.25, 1.5],", "space.yaml:9: parameters: model.p: value 1.5 rejected by the config: model.p: must be in (0, 1], got 1.5"),
    ("{choice: [bafenet, fcos]}", "{choice: []}", "space.yaml:6: parameters: model.name: choice: needs a non-empty list of values"),
    ("[1.0e-4, 1.0e-2]", "[1.0e-2, 1.0e-4]", "space.yaml:7: parameters: optim.lr: loguniform: low 0.01 must be below high 0.0001"),
    ("[1.0e-4, 1.0e-2]", "[0, 1.0e-2]", "space.yaml:7: parameters: optim.lr: loguniform: low must be > 0, got 0"),
    ("{int: [1, 3]}", "{uniform: [1, 3]}", "space.yaml:8: parameters: model.head_depth: uniform: the config field is not a number (int); use choice"),
    ("when: {model.name: bafenet}", "when: {model.name: yolo}", "space.yaml:9: parameters: model.p: when: 'yolo' is not one of model.name's choices ['bafenet', 'fcos']"),
    ("when: {model.name: bafenet}", "when: {model.backbone: resnet18}", "space.yaml:9: parameters: model.p: when: model.backbone is not a parameter listed above this one (conditions refer to earlier choice parameters)"),
    ("data.synthetic_images: [16, 8, 8]", "data.synthetic_image: [16, 8, 8]", "space.yaml:4: overrides: data.synthetic_image: not a config key (did you mean data.synthetic_images?)"),
    ("data.synthetic_images: [16, 8, 8]", "data.synthetic_images: [0, 8, 8]", "space.yaml:4: overrides: data.synthetic_images: each of (train, val, test) must be >= 1, got [0, 8, 8]"),
    ("grace_period: 1", "grace_period: 5", "space.yaml:11: budget: grace_period: 5 is more than max_epochs 2"),
    ("sampler: optuna", "sampler: bohb", "space.yaml:12: sampler: 'bohb' is not one of optuna, random, grid"),
    ("mode: max}", "mode: best}", "space.yaml:10: objective: mode must be max or min, got 'best'"),
    ("base: quickstart", "base: nosuchpreset", "space.yaml:2: base: unknown preset 'nosuchpreset'"),
    ("name: tiny", "nme: tiny", "space.yaml:1: nme: unknown key"),
    ("sampler: optuna", "sampler: grid", "space.yaml:7: parameters: optim.lr: a grid needs 'choice' or 'int' values, not 'loguniform'"),
    ("budget: {", "budget: {{", "space.yaml:12: not valid YAML"),
])
def test_bad_spaces_give_one_line_errors(old, new, expected):
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        parse(GOOD.replace(old, new))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(expected), message


def test_cli_reports_a_bad_space_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("model.head_depth: {int", "model.head_dept: {int"))
    proc = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", "search", str(bad), "--dry-run",
                           "--storage", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"irstdlab: error: {bad}:8: parameters: model.head_dept: not a config key")
    ok = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", "search", "--dry-run",
                         "--storage", str(tmp_path / "runs")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "6 configurations" in ok.stdout and "first configurations" in ok.stdout
