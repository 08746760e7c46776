"""Issue 17 part B through the real CLI: corrupt state, out-of-range config values, silently wrong input.

Every case runs ``python -m irstdlab.harness.cli`` in a subprocess and asserts exit 2, exactly one
line on stderr naming the file or key, no traceback, and that nothing written before is touched.
The checkpoint and search-state cases start from files written by the real code (a one-epoch
training run, ``search.prepare`` and ``PersistentASHA.rung_state``) and then break them one way each.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from irstdlab.harness import trial_metrics

TINY = ["--set", "data.synthetic_images=[4, 2, 2]", "--set", "data.batch_size=2", "--set", "data.eval_batch_size=2",
        "--set", "train.max_iters_per_epoch=1", "--set", "schedule.epochs=1", "--set", "model.backbone=resnet18"]
SPACE = "base: quickstart\nparameters:\n  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\nbudget: {num_samples: 2}\n"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def refused(result: subprocess.CompletedProcess, *words: str, after_progress: bool = False) -> str:
    """Exit 2, one stderr line without a traceback, containing every word.

    ``after_progress``: a run that had started prints its progress header first; then the error
    must be the one ``irstdlab: error:`` line and the last one."""
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    if after_progress:
        errors = [line for line in err.splitlines() if line.startswith("irstdlab: error:")]
        assert len(errors) == 1 and err.splitlines()[-1] == errors[0], err
        err = errors[0]
    else:
        assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, (word, err)
    return err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ a real checkpoint
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    """One-epoch resnet18 FCOS on 8 in-memory synthetic images: (storage, summary)."""
    storage = tmp_path_factory.mktemp("runs")
    result = cli("train", "quickstart", "--no-ray", "--storage", str(storage), "--name", "tiny", "--json", *TINY,
                 cwd=storage)
    assert result.returncode == 0, result.stderr[-3000:]
    return storage, json.loads(result.stdout.strip().splitlines()[-1])


def broken_copy(trained, tmp_path: Path, edit) -> Path:
    """A copy of the run's checkpoint with ``edit(state)`` applied, saved with torch.save."""
    storage, summary = trained
    state = torch.load(storage / summary["checkpoint"] / "checkpoint.pt", weights_only=True)
    edit(state)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    torch.save(state, folder / "checkpoint.pt")
    return folder


def test_every_metric_a_trial_reports_is_known_and_bogus_ones_are_not(trained):
    _, summary = trained
    numeric = [k for k, v in summary["metrics"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert numeric and all(trial_metrics.is_reported(k) for k in numeric), numeric
    assert not any(trial_metrics.is_reported(k) for k in ("val/bogus", "val/map07", "mAP07", "test/", "bogus"))


def _truncate_config(state):
    state["config_json"] = state["config_json"][: len(state["config_json"]) // 2]


def _drop_weight(state):
    state["model"].pop(next(iter(state["model"])))
    state.pop("best_model", None)


def _reshape_weight(state):
    key = next(k for k, v in state["model"].items() if v.ndim == 4)
    state["model"][key] = torch.zeros(3, 3, 3, 3)


def _future_format(state):
    state["format"] = 99


def _no_optimizer(state):
    state.pop("optimizer")


def _history_not_a_list(state):
    state["history"] = 3


@pytest.mark.parametrize("edit, words", [
    (_truncate_config, ("stored config does not load", "new --name")),
    (_drop_weight, ("weights do not match", "missing", "new --name")),
    (_reshape_weight, ("weights do not match", "another shape")),
    (_future_format, ("format 99", "irstdlab version")),
    (_no_optimizer, ("misses 'optimizer'", "new --name")),
    (_history_not_a_list, ("history is not what irstdlab writes (got int)",)),
])
def test_eval_of_a_corrupt_checkpoint_is_one_line(trained, tmp_path, edit, words):
    folder = broken_copy(trained, tmp_path, edit)
    before = digest(folder / "checkpoint.pt")
    refused(cli("eval", str(folder), cwd=tmp_path), str(folder / "checkpoint.pt"), *words)
    assert digest(folder / "checkpoint.pt") == before
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint.pt"]  # no eval-* folder


def test_resume_from_a_checkpoint_with_a_truncated_config_is_one_line(trained, tmp_path):
    storage, summary = trained
    run = tmp_path / "runs" / "again"
    folder = broken_copy(trained, tmp_path, _truncate_config)
    (run / "checkpoints").mkdir(parents=True)
    os.replace(folder, run / "checkpoints" / "epoch_0001")
    before = digest(run / "checkpoints" / "epoch_0001" / "checkpoint.pt")
    refused(cli("train", "quickstart", "--no-ray", "--storage", str(tmp_path / "runs"), "--name", "again", *TINY,
                cwd=tmp_path), "epoch_0001", "stored config does not load", "new --name", after_progress=True)
    assert digest(run / "checkpoints" / "epoch_0001" / "checkpoint.pt") == before


def test_eval_of_a_split_the_synthetic_set_does_not_have_names_the_splits(trained, tmp_path):
    storage, summary = trained
    refused(cli("eval", str(storage / summary["checkpoint"]), "--split", "nosplit", cwd=tmp_path),
            "--split nosplit", "train_v2, val_v2, test_v2, trainval_v2")


# ------------------------------------------------------------------------------ search state
@pytest.fixture
def stored_search(tmp_path) -> tuple[Path, Path]:
    """A search folder holding the state files a started search writes: (storage, search dir)."""
    from optuna.distributions import FloatDistribution

    from irstdlab.harness.search import ASHA_FILE, JOURNAL_FILE, STATE_FILE, SearchOptions, prepare
    from irstdlab.harness.asha import PersistentASHA
    from irstdlab.harness.search_callbacks import open_journal_study

    (tmp_path / "space.yaml").write_text(SPACE)
    storage = tmp_path / "runs"
    space, name, _, state = prepare(SearchOptions(space=str(tmp_path / "space.yaml"), name="s", storage=str(storage)))
    search_dir = storage / name
    search_dir.mkdir(parents=True)
    (search_dir / STATE_FILE).write_text(json.dumps(state, indent=1, sort_keys=True))
    study = open_journal_study(str(search_dir / JOURNAL_FILE), state["study_name"], space)
    study.tell(study.ask({"optim.lr": FloatDistribution(1e-4, 1e-2, log=True)}), 0.5)  # one finished trial
    asha = PersistentASHA(str(search_dir / ASHA_FILE), time_attr="epoch", metric="val/mAP07", mode="max",
                          max_t=3, grace_period=1, reduction_factor=2)
    rungs = asha.rung_state()
    rungs["brackets"][0][0][1]["t1"] = 0.25
    change = {"trial": "t2", "num_stopped": 0, "rungs": [[0, 1, 0.5]]}
    (search_dir / ASHA_FILE).write_text(json.dumps({"snapshot": rungs}) + "\n" + json.dumps(change) + "\n")
    return storage, search_dir


def resume_dry_run(storage: Path, cwd: Path) -> subprocess.CompletedProcess:
    return cli("search", "--resume", "--name", "s", "--storage", str(storage), "--dry-run", cwd=cwd)


def test_intact_search_state_resumes(stored_search, tmp_path):
    storage, _ = stored_search
    result = resume_dry_run(storage, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "search s:" in result.stdout


@pytest.mark.parametrize("file, damage, words", [
    ("irstdlab-search.json", lambda t: t[: len(t) // 2], ("not valid JSON", "truncated")),
    ("irstdlab-search.json", lambda t: json.dumps({k: v for k, v in json.loads(t).items() if k != "planned_trials"}),
     ("misses key 'planned_trials'",)),
    ("irstdlab-search.json", lambda t: json.dumps({**json.loads(t), "resources": {"workers": 1}}), ("resources",)),
    ("irstdlab-search.json", lambda t: json.dumps({**json.loads(t), "space_text": "parameters: [\n"}),
     ("stored search space (space_text) does not load", "line 2")),
    ("irstdlab-search.json", lambda t: "[]", ("not an object",)),
    ("asha_rungs.jsonl", lambda t: t[5:], ("line 1 of the ASHA record file is not valid JSON",)),
    ("asha_rungs.jsonl", lambda t: json.dumps({"snapshot": {"num_stopped": 0}}) + "\n", ("line 1: snapshot.", "'brackets'")),
    ("asha_rungs.jsonl", lambda t: t.replace('[[0, 1, 0.5]]', '[["x"]]'), ("line 2: rungs[0]",)),
    ("asha_rungs.jsonl", lambda t: t.replace('"t2"', "2"), ("line 2: trial",)),
])
def test_broken_search_state_is_one_line_and_kept(stored_search, tmp_path, file, damage, words):
    storage, search_dir = stored_search
    path = search_dir / file
    path.write_text(damage(path.read_text()))
    before = {p.name: digest(p) for p in search_dir.iterdir()}
    refused(resume_dry_run(storage, tmp_path), str(path), "cannot be resumed", "new --name", *words)
    assert {p.name: digest(p) for p in search_dir.iterdir()} == before


def test_a_search_started_before_the_asha_record_file_resumes_and_its_broken_state_is_named(stored_search, tmp_path):
    from irstdlab.harness.search import ASHA_FILE
    from irstdlab.harness.search_state import LEGACY_ASHA_FILE

    storage, search_dir = stored_search
    snapshot = json.loads((search_dir / ASHA_FILE).read_text().splitlines()[0])["snapshot"]
    (search_dir / ASHA_FILE).unlink()
    legacy = search_dir / LEGACY_ASHA_FILE
    legacy.write_text(json.dumps(snapshot))
    result = resume_dry_run(storage, tmp_path)
    assert result.returncode == 0, result.stderr
    legacy.write_text(json.dumps({"brackets": [[["x", {}]]]}))
    refused(resume_dry_run(storage, tmp_path), str(legacy), "cannot be resumed", "brackets[0][0]")
    legacy.write_text(json.dumps(snapshot)[:-5])
    refused(resume_dry_run(storage, tmp_path), str(legacy), "cannot be resumed", "not valid JSON")


# ------------------------------------------------------------------------------ config values
@pytest.mark.parametrize("override, words", [
    (f"train.seed={2**64}", ("train.seed", "64 bits")),
    (f"train.seed={2**63}", ("train.seed", "64 bits")),
    (f"train.seed={2**40}", ("train.seed", "0..4294967295")),
    ("optim.lr=.inf", ("optim.lr", "finite")),
    ("optim.lr=1.0e+400", ("optim.lr", "finite")),
    ("model.p=-.inf", ("model.p", "finite")),
    ("optim.weight_decay=.nan", ("optim.weight_decay", "NaN")),
    (f"data.synthetic_images=[4, 2, {10**30}]", ("data.synthetic_images[2]", "64 bits")),
    ("data.synthetic_seed=-1", ("data.synthetic_seed", "0..4294967295")),
    (f"data.size={2**20}", ("data.size", "32..8192")),
    ("data.batch_size=100000", ("data.batch_size", "<= 4096")),
    (f"model.fpn_channels={10**9}", ("model.fpn_channels", "<= 4096")),
    ("model.regress_ranges=[[-.inf, 64], [64, .inf]]",
     ("model.regress_ranges", "lower bound must be finite")),
])
def test_out_of_range_config_values_are_refused_before_the_run_folder(tmp_path, override, words):
    refused(cli("train", "quickstart", "--no-ray", "--storage", str(tmp_path / "runs"), "--name", "r",
                "--set", override, cwd=tmp_path), *words)
    assert not (tmp_path / "runs").exists()


def test_an_open_top_regression_range_stays_allowed():
    from irstdlab.harness.config import load_config

    cfg = load_config("quickstart", ["model.regress_ranges=[[-1, 64], [64, .inf]]"])  # quickstart: 2 levels
    assert cfg.model.regress_ranges[-1] == (64.0, float("inf"))
    assert cfg.to_dict()["model"]["regress_ranges"][-1] == [64.0, "inf"]
    assert type(cfg).from_json(cfg.canonical_json()) == cfg  # what a checkpoint stores reads back


def test_a_config_file_with_a_repeated_key_or_not_utf8_is_one_line(tmp_path):
    (tmp_path / "dup.yaml").write_text("optim:\n  lr: 0.001\n  weight_decay: 0.0\n  lr: 1.0\n")
    refused(cli("train", "dup.yaml", "--no-ray", "--storage", "runs", cwd=tmp_path),
            "dup.yaml", "'lr' appears twice (lines 2 and 4)")
    (tmp_path / "latin1.yaml").write_bytes("# caf\xe9\ntrain: {seed: 1}\n".encode("latin-1"))
    refused(cli("train", "latin1.yaml", "--no-ray", "--storage", "runs", cwd=tmp_path),
            "latin1.yaml:1", "not UTF-8")
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ search spaces
def space_refused(tmp_path: Path, text: str | bytes, *args: str, words=()) -> str:
    path = tmp_path / "space.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return refused(cli("search", str(path), "--dry-run", "--storage", str(tmp_path / "runs"), *args, cwd=tmp_path),
                   *words)


@pytest.mark.parametrize("bounds, kind", [
    ("[1.0e-4, 1.0e+400]", "loguniform"), (f"[1, {10**400}]", "loguniform"), ("[-.inf, 0.5]", "uniform"),
    (f"[1, {2**70}]", "int"),
])
def test_space_bounds_must_be_finite(tmp_path, bounds, kind):
    path = "optim.lr" if kind != "int" else "model.adapter_hidden"
    text = f"base: quickstart\nparameters:\n  {path}: {{{kind}: {bounds}}}\n"
    space_refused(tmp_path, text, words=("space.yaml:3", path, "finite"))


def test_space_with_a_repeated_block_names_both_lines(tmp_path):
    space_refused(tmp_path, SPACE + "objective: {metric: val/mAP07, mode: max}\nbudget: {num_samples: 99}\n",
                  words=("space.yaml:6", "'budget' appears twice (lines 4 and 6)"))


def test_space_not_utf8_is_one_line(tmp_path):
    space_refused(tmp_path, SPACE.encode() + b"description: \xff\xfe\n", words=("space.yaml:5", "not UTF-8"))


@pytest.mark.parametrize("metric, words", [
    ("val/bogus", ("'val/bogus' is not a metric a trial reports",)),
    ("val/mNoCoAP", ("only with NoCo scoring", "eval.mnocoap")),
    ("best/val/recall", ("only with eval.select_metric recall", "selects on mAP07")),
])
def test_objective_no_trial_reports_is_refused_at_plan_time(tmp_path, metric, words):
    space_refused(tmp_path, SPACE + f"objective: {{metric: {metric}, mode: max}}\n", words=("space.yaml:5", *words))


def test_noco_objective_with_noco_scoring_on_is_planned(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE + "overrides: {eval.mnocoap: true}\n"
                                         "objective: {metric: val/mNoCoAP, mode: max}\n")
    result = cli("search", "space.yaml", "--dry-run", "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "val/mNoCoAP (max)" in result.stdout


def test_set_on_a_searched_key_is_refused_naming_it(tmp_path):
    space_refused(tmp_path, SPACE, "--set", "optim.lr=0.5", words=("--set optim.lr", "also searches optim.lr"))


def test_a_key_both_fixed_and_searched_in_the_space_names_both_lines(tmp_path):
    space_refused(tmp_path, SPACE + "overrides: {optim.lr: 0.5}\n",
                  words=("space.yaml:3", "also fixed under overrides (line 5)"))


@pytest.mark.parametrize("flag", [["--set", "optim.lr=0.5"], ["--max-epochs", "9"], ["--num-samples", "99"]])
def test_resume_refuses_flags_it_would_silently_ignore(stored_search, tmp_path, flag):
    storage, search_dir = stored_search
    before = {p.name: digest(p) for p in search_dir.iterdir()}
    refused(cli("search", "--resume", "--name", "s", "--storage", str(storage), "--dry-run", *flag, cwd=tmp_path),
            f"{flag[0]}: --resume continues the search exactly as it was planned", "--name")
    assert {p.name: digest(p) for p in search_dir.iterdir()} == before


def test_config_and_space_files_with_a_utf8_bom_load(tmp_path):
    (tmp_path / "space.yaml").write_bytes(b"\xef\xbb\xbf" + SPACE.encode())
    result = cli("search", "space.yaml", "--dry-run", "--storage", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "optim.lr" in result.stdout


def test_resume_with_a_broken_tune_snapshot_is_one_error_line(stored_search, tmp_path):
    """Tune's own tuner.pkl is read only after Ray starts; a cut-off one still ends in one error line."""
    storage, search_dir = stored_search
    (search_dir / "tuner.pkl").write_bytes(b"\x80\x04garbage")
    (search_dir / "experiment_state-2026-01-01_00-00-00.json").write_text('{"trial_data": [')
    before = {p.name: digest(p) for p in search_dir.iterdir()}
    refused(cli("search", "--resume", "--name", "s", "--storage", str(storage), "--num-cpus", "1", cwd=tmp_path),
            str(search_dir), "Tune cannot read its saved state", "new --name", after_progress=True)
    assert {p.name: digest(p) for p in search_dir.iterdir()} == before


def test_resume_before_tunes_first_snapshot_is_one_error_line(stored_search, tmp_path, monkeypatch):
    """A driver killed after Tune wrote tuner.pkl but before its first experiment snapshot: Tune's own
    can_restore says yes, its fit would fail; the resume says why in one line instead."""
    import pickle

    from irstdlab.harness.search_state import has_tune_snapshot

    storage, search_dir = stored_search
    (search_dir / "tuner.pkl").write_bytes(pickle.dumps({"written": "by fit before its first step"}))
    assert not has_tune_snapshot(str(search_dir))
    before = {p.name: digest(p) for p in search_dir.iterdir()}
    refused(cli("search", "--resume", "--name", "s", "--storage", str(storage), "--num-cpus", "1", cwd=tmp_path),
            str(search_dir), "stopped before its first snapshot", "new --name", after_progress=True)
    assert {p.name: digest(p) for p in search_dir.iterdir()} == before
    (search_dir / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    monkeypatch.chdir(storage)
    assert has_tune_snapshot(str(search_dir)) and has_tune_snapshot(search_dir.name)  # absolute or relative


def test_yaml_alias_bombs_are_refused_before_expanding(tmp_path):
    nested = "[&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]" + "".join(
        f", &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)) + "]"
    (tmp_path / "laughs.yaml").write_text(f"model:\n  p: {nested}\n")
    refused(cli("train", "laughs.yaml", "--no-ray", "--storage", "runs", cwd=tmp_path),
            "laughs.yaml", "expand to more than 100000 values")
    space_refused(tmp_path, SPACE + "description: &d [*d]\n", words=("space.yaml", "contains it"))
    assert not (tmp_path / "runs").exists()


def test_journal_with_a_broken_record_names_the_line_and_the_way_out(stored_search, tmp_path):
    storage, search_dir = stored_search
    path = search_dir / "optuna-journal.log"
    path.write_text(path.read_text().replace("\n", "\n{oops\n", 1))
    refused(resume_dry_run(storage, tmp_path), str(path), "line 2 of the Optuna journal", "move the file aside")


def test_journal_cut_off_mid_record_resumes_and_is_trimmed_before_the_next_write(stored_search, tmp_path):
    import optuna

    from irstdlab.harness.search import SearchOptions, build_space
    from irstdlab.harness.search_callbacks import open_journal_study

    storage, search_dir = stored_search
    path = search_dir / "optuna-journal.log"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code": 4, "worker_id": "CUT-OFF", "study_id": 0, "da')  # killed mid-write
    result = resume_dry_run(storage, tmp_path)
    assert result.returncode == 0, result.stderr
    assert path.read_bytes().endswith(b'"CUT-OFF", "study_id": 0, "da')  # a dry run writes nothing
    state = json.loads((search_dir / "irstdlab-search.json").read_text())
    space = build_space(SearchOptions(), state)
    study = open_journal_study(str(path), state["study_name"], space)
    assert path.read_bytes().startswith(whole) and b"CUT-OFF" not in path.read_bytes()  # the fragment is gone
    study.add_trial(optuna.trial.create_trial(value=0.75, params={}, distributions={}))
    reread = optuna.load_study(study_name=state["study_name"], storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path))))
    assert sorted(t.value for t in reread.trials) == [0.5, 0.75]
