"""`irstdlab search` end to end on CPU: rows per trial, statuses, the Optuna journal, failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

TINY = ["--set", "data.synthetic_images=[24,8,8]", "--num-cpus", "2"]


def run_cli(args: list[str], cwd: Path, timeout: int = 420) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "irstdlab.harness.cli", "search", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None or True:  # Ray helpers can outlive the driver: end its whole group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def rows(storage: Path, search: str):
    import warnings

    from irstdlab.leaderboards import open as open_leaderboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_leaderboard(storage / "leaderboard").read_table(search=search).table.to_pandas()


def test_quickstart_end_to_end(tmp_path):
    storage = tmp_path / "runs"
    proc = run_cli(["quickstart", "--num-samples", "3", "--max-epochs", "2", "--storage", str(storage), *TINY],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best full-fidelity trials" in proc.stdout and "val/mAP07" in proc.stdout
    # the follow-up command the search prints runs as printed, from the same folder
    import re
    import shlex

    (follow_up,) = re.findall(r"\((irstdlab leaderboard show [^)]*)\)", proc.stdout)
    shown = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", *shlex.split(follow_up)[1:]],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0 and "quickstart" in shown.stdout, shown.stderr
    df = rows(storage, "quickstart")
    assert len(df) == 3 and df["trial_id"].is_unique
    assert set(df["status"]) <= {"completed", "early_stopped"} and "completed" in set(df["status"])
    done = df[df["status"] == "completed"]
    assert (done["epochs_completed"] == 2).all() and (done["fidelity"] == 1.0).all()
    assert done["metric.val/mAP07"].between(0, 1).all() and done["best_epoch"].between(1, 2).all()
    assert (df["gmacs"] > 0).all() and df["space_hash"].nunique() == 1 and df["config_hash"].is_unique
    # direct trials reuse Tune's actors: with 2 CPUs for 3 trials, the third starts in a finished one's
    import json

    last_results = [json.loads(f.read_text().splitlines()[-1]) for f in (storage / "quickstart").glob("trial_*/result.json")]
    assert len(last_results) == 3 and sum(r["time/warm_actor"] for r in last_results) >= 1
    assert all(r["time/trial_setup_s"] > 0 for r in last_results)
    # a report carries the hand-over time of the reports before it: > 0 from the second epoch on
    later = [r for r in last_results if r["training_iteration"] >= 2]
    assert later and all(r["time/report_s"] > 0 for r in later), [r["time/report_s"] for r in last_results]
    # inactive conditional parameters are null; the JSON copy is lossless
    for _, row in df.iterrows():
        assert (row["param.model.name"] == "bafenet") == (row["param.model.p"] is not None
                                                          and row["param.model.p"] == row["param.model.p"])
        assert f'"model.name": "{row["param.model.name"]}"' in row["params_json"]
    # the Optuna journal opens with the public API and holds every trial
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    names = optuna.get_all_study_names(JournalStorage(JournalFileBackend(str(storage / "quickstart" / "optuna-journal.log"))))
    assert len(names) == 1 and names[0].startswith("quickstart-")
    study = optuna.load_study(study_name=names[0], storage=JournalStorage(
        JournalFileBackend(str(storage / "quickstart" / "optuna-journal.log"))))
    assert len(study.trials) == 3
    assert {t.user_attrs["trial_id"] for t in study.trials} == set(df["trial_id"])
    # the same name again without --resume is refused, naming both ways out
    again = run_cli(["quickstart", "--storage", str(storage), "--dry-run"], tmp_path, timeout=120)
    assert again.returncode == 0  # a dry run touches nothing
    again = run_cli(["quickstart", "--storage", str(storage)], tmp_path, timeout=120)
    assert again.returncode == 2
    assert "already exists" in again.stderr and "--resume" in again.stderr and "--name" in again.stderr


def test_diverging_trial_is_a_failed_row_and_the_search_goes_on(tmp_path):
    space = tmp_path / "diverge.yaml"
    space.write_text(textwrap.dedent("""\
        base: quickstart
        parameters:
          model.name: {choice: [fcos]}
          train.debug_nan_at_iter: {choice: [null, 1]}
        objective: {metric: val/mAP07, mode: max}
        budget: {num_samples: 2, max_epochs: 1, grace_period: 1, reduction_factor: 2}
        sampler: grid
        """))
    storage = tmp_path / "runs"
    proc = run_cli([str(space), "--name", "div", "--storage", str(storage), "--scheduler", "none", *TINY], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = rows(storage, "div").set_index("param.train.debug_nan_at_iter", drop=False)
    assert len(df) == 2
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and failed.iloc[0]["param.train.debug_nan_at_iter"] == 1
    assert "diverged" in failed.iloc[0]["failure_reason"]
    ok = df[df["status"] == "completed"]
    assert len(ok) == 1 and ok.iloc[0]["epochs_completed"] == 1


@pytest.mark.timeout(120)
def test_ray_for_direct_trials_starts_without_its_dashboard():
    """A search of direct trials starts the embedded Ray without its dashboard (nothing of theirs
    uses it, and it costs seconds of start-up); nested Ray Train runs get it (test_search_cluster)."""
    import ray

    from irstdlab.harness import ray_runtime
    from irstdlab.harness.search_tuner import start_ray

    if ray.is_initialized():  # a Ray left by an earlier test would be joined, not started
        ray.shutdown()
    assert start_ray(None, 1, dashboard=False)
    try:
        assert not ray._private.worker.get_dashboard_url()  # "" when Ray runs without it
        ray_runtime.check_loopback()
        assert not start_ray(None, 1, dashboard=False)  # an existing Ray is joined, never restarted
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------------- no Ray needed
@pytest.mark.timeout(120)
def test_plan_validation_without_ray(tmp_path):
    from irstdlab.harness.errors import ConfigError
    from irstdlab.harness.search import SearchOptions, check_models, prepare
    from irstdlab.harness.search_trainable import TrialResources, split_config
    from irstdlab.harness.space_loader import parse

    # grid configs nest the point; Optuna configs are flat; the seed index rides along
    assert split_config({"params": {"model.p": 0.5}, "__trial_index__": 2}) == ({"model.p": 0.5}, 2)
    assert split_config({"model.p": 0.5}) == ({"model.p": 0.5}, 0)
    assert TrialResources().resolved_backend() == "direct"
    assert TrialResources(workers_per_trial=2).resolved_backend() == "train"
    assert TrialResources(workers_per_trial=2).tune_resources()["cpu"] < 0.1  # the nested driver is tiny

    space, name, storage, state = prepare(SearchOptions(space="detectors", storage=str(tmp_path), num_samples=1))
    assert name == "detectors" and state["planned_trials"] == 1 * 3  # one detector x three seeds
    assert state["study_name"] == f"detectors-{space.space_hash}"
    (tmp_path / "detectors").mkdir()
    with pytest.raises(ConfigError, match="--resume.*--name"):
        prepare(SearchOptions(space="detectors", storage=str(tmp_path)))
    with pytest.raises(ConfigError, match="no search to resume"):
        prepare(SearchOptions(storage=str(tmp_path), name="detectors", resume=True))
    with pytest.raises(ConfigError, match="needs --name"):
        prepare(SearchOptions(storage=str(tmp_path), resume=True))
    bad = parse("parameters: {model.name: {choice: [fcos, yolo9]}}\n", "bad.yaml", None, "bad")
    with pytest.raises(ConfigError, match="'yolo9' is not a registered detector"):
        check_models(bad)


@pytest.mark.timeout(120)
def test_searcher_multi_objective_and_seed_repeats():
    from irstdlab.harness.search_tuner import make_searcher as _make_searcher
    from irstdlab.harness.space_loader import parse

    text = textwrap.dedent("""\
        base: quickstart
        parameters:
          model.name: {choice: [bafenet, fcos]}
          model.p: {choice: [0.25, 0.5], when: {model.name: bafenet}}
        objective: [{metric: val/mAP07, mode: max}, {metric: gmacs, mode: min}]
        budget: {num_samples: 4, max_epochs: 2}
        seeds: 2
        searcher_seed: 5
        """)
    from irstdlab.harness.errors import ConfigError

    with pytest.raises(ConfigError, match="mo.yaml:7: seeds: repeating .* needs a single objective"):
        parse(text, "mo.yaml", None, "mo")
    # one objective, two seeds: each sampled configuration runs once per seed (Repeater's index)
    single = parse(text.replace("objective: [{metric: val/mAP07, mode: max}, {metric: gmacs, mode: min}]",
                                "objective: {metric: val/mAP07, mode: max}"), "s.yaml", None, "s")
    searcher = _make_searcher(single)
    configs = [searcher.suggest(f"t{i}") for i in range(4)]
    assert [c["__trial_index__"] for c in configs] == [0, 1, 0, 1]
    strip = [{k: v for k, v in c.items() if k != "__trial_index__"} for c in configs]
    assert strip[0] == strip[1] and strip[2] == strip[3]
    for i, c in enumerate(configs):
        assert ("model.p" in c) == (c["model.name"] == "bafenet")
        searcher.on_trial_complete(f"t{i}", {"val/mAP07": 0.1 * i})
    trials = searcher.searcher._ot_study.trials
    assert len(trials) == 2 and [t.value for t in trials] == pytest.approx([0.05, 0.25])  # seed means
    # two objectives, one seed: a multi-objective study
    multi = parse(text.replace("seeds: 2", "seeds: 1"), "mo.yaml", None, "mo")
    searcher = _make_searcher(multi)
    for i in range(3):
        assert searcher.suggest(f"m{i}")
        searcher.on_trial_complete(f"m{i}", {"val/mAP07": 0.1 * i, "gmacs": 1.0 + i})
    study = searcher._ot_study
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert len(study.trials) == 3 and all(len(t.values) == 2 for t in study.trials)
