"""Issue 17, CLI part: bad paths, names, numbers and misplaced blame, through the real CLI.

Every case runs ``python -m irstdlab.harness.cli`` in a subprocess and checks the contract for
bad input: exit 2, exactly one line on stderr, no traceback, the option or file named, and what
was on disk before left as it was.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["--set", "data.synthetic_images=[8, 4, 4]", "--set", "data.batch_size=4", "--set", "data.eval_batch_size=4",
        "--set", "train.max_iters_per_epoch=2", "--set", "model.score_thr=0.0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=ENV, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders): 'nothing changed' checks."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture()
def blocker(tmp_path) -> Path:
    """A plain file where a folder is expected; it must survive every refused command."""
    path = tmp_path / "blocker"
    path.write_text("earlier results\n")
    return path


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    """A storage folder holding a small leaderboard (two models x three seeds)."""
    import irstdlab.leaderboards as lb

    storage = tmp_path_factory.mktemp("lb")
    store = lb.open(storage / "leaderboard")
    for seed in range(3):
        for model, value in (("bafenet", 0.30), ("fcos", 0.20)):
            store.append({"search": "demo", "trial_id": f"{model}{seed}", "status": "completed", "model": model,
                          "backbone": "resnet18", "dataset": "densesirst", "protocol": "reference", "seed": seed,
                          "gmacs": 50.0, "params_m": 20.0, "started_at": f"2026-01-01T00:0{seed}:00+00:00",
                          "params": {"p": 0.25}, "metrics": {"val/mAP07": value + 0.01 * seed}})
    return storage


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """One tiny finished run (--no-ray, 1 epoch); returns its checkpoint folder."""
    storage = tmp_path_factory.mktemp("runs")
    proc = cli("train", "quickstart", "--no-ray", "--storage", str(storage), "--name", "tiny", "--json", *TINY,
               "--set", "schedule.epochs=1", cwd=storage)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(json.loads(proc.stdout.strip().splitlines()[-1])["checkpoint"])


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "set"
    proc = cli("data", "synth", "--out", str(root), "--images", "10", cwd=root.parent)
    assert proc.returncode == 0, proc.stderr
    return root


# ------------------------------------------------------------------- class 1: output paths
@pytest.mark.parametrize("under", [False, True], ids=["is-a-file", "under-a-file"])
@pytest.mark.parametrize("command", [
    ["train", "quickstart", "--no-ray", "--storage", "{out}"],
    ["train", "quickstart", "--storage", "{out}"],  # the Ray path: refused before Ray starts
    ["search", "--storage", "{out}"],
    ["search", "--dry-run", "--storage", "{out}"],
    ["data", "synth", "--images", "5", "--out", "{out}"],
], ids=["train-no-ray", "train-ray", "search", "search-dry-run", "data-synth"])
def test_a_storage_or_out_that_cannot_be_a_folder(command, under, blocker, tmp_path):
    out = blocker / "sub" if under else blocker
    before = tree(tmp_path)
    start = time.perf_counter()
    line = one_line_error(cli(*[a.format(out=out) for a in command], cwd=tmp_path), str(out))
    assert ("cannot be created" in line) if under else ("is a file" in line)
    assert time.perf_counter() - start < 60  # no Ray start, no training
    assert tree(tmp_path) == before


def test_data_stats_out_is_checked_before_reading_images(synth_root, blocker, tmp_path):
    one_line_error(cli("data", "stats", "--dataset", "synthetic", "--root", str(synth_root), "--out",
                       str(blocker / "x"), cwd=tmp_path), "--out", str(blocker))
    assert blocker.read_text() == "earlier results\n"


@pytest.mark.parametrize("action", [["export", "--format", "csv"], ["export", "--format", "md"], ["plot", "bars"]])
def test_leaderboard_out_under_a_file_or_on_a_folder(action, board, blocker, tmp_path):
    before = tree(board)
    one_line_error(cli("leaderboard", *action, "--storage", str(board), "--out", str(blocker / "t.png"),
                       cwd=tmp_path), "--out", str(blocker))
    one_line_error(cli("leaderboard", *action, "--storage", str(board), "--out", str(tmp_path), cwd=tmp_path),
                   "--out", "is a folder")
    assert tree(board) == before and blocker.read_text() == "earlier results\n"


def test_eval_out_is_checked_before_evaluating(checkpoint, blocker, tmp_path):
    before = tree(checkpoint.parent)
    one_line_error(cli("eval", str(checkpoint), "--out", str(blocker / "ev"), cwd=tmp_path), "--out", str(blocker))
    assert tree(checkpoint.parent) == before


# ------------------------------------------------------------------- class 2: names
@pytest.mark.parametrize("name", ["../../escaped", "/abs/escaped", "a/b", "..", ".", "", "a\\b", ".hidden",
                                  "new\nline", "spa ce"])
@pytest.mark.parametrize("command", [["train", "quickstart", "--no-ray"], ["search", "--dry-run"], ["search"]])
def test_a_name_that_is_not_one_plain_folder_name(command, name, tmp_path):
    storage = tmp_path / "deep" / "storage"
    storage.mkdir(parents=True)
    one_line_error(cli(*command, "--storage", str(storage), "--name", name, cwd=storage), "--name")
    assert tree(tmp_path) == {"deep": None, "deep/storage": None}
    assert not Path("/abs/escaped").exists()


def test_a_space_whose_own_name_escapes_is_refused(tmp_path):
    space = tmp_path / "evil.yaml"
    space.write_text("name: ../../outside\nbase: quickstart\nparameters:\n  optim.lr: {loguniform: [1.0e-4, 1.0e-3]}\n"
                     "objective: {metric: val/mAP07, mode: max}\n")
    (tmp_path / "storage").mkdir()
    one_line_error(cli("search", str(space), "--storage", str(tmp_path / "storage"), cwd=tmp_path),
                   str(space), "name", "../../outside")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.yaml", "storage"]


# ------------------------------------------------------------------- class 4: numeric options
@pytest.mark.parametrize("args,option", [
    (["leaderboard", "compare", "--confidence", "1.5"], "--confidence"),
    (["leaderboard", "compare", "--confidence", "0"], "--confidence"),
    (["leaderboard", "compare", "--confidence", "nan"], "--confidence"),
    (["leaderboard", "compare", "--n-boot", "0"], "--n-boot"),
    (["leaderboard", "compare", "--n-boot", "-5"], "--n-boot"),
    (["leaderboard", "compare", "--n-boot", "1e12"], "--n-boot"),
    (["leaderboard", "compare", "--top", "-1"], "--top"),
    (["leaderboard", "show", "--top", "-3"], "--top"),
    (["leaderboard", "plot", "pr", "--top", "0"], "--top"),
    (["train", "--workers", "0"], "--workers"),
    (["train", "--gpus-per-worker", "inf"], "--gpus-per-worker"),
    (["train", "--gpus-per-worker", "-1"], "--gpus-per-worker"),
    (["train", "--num-cpus", "0"], "--num-cpus"),
    (["eval", "ckpt", "--show", "-1"], "--show"),
    (["eval", "ckpt", "--batch-size", "0"], "--batch-size"),
    (["search", "--num-samples", "0"], "--num-samples"),
    (["search", "--max-epochs", "-2"], "--max-epochs"),
    (["search", "--max-concurrent", "0"], "--max-concurrent"),
    (["search", "--workers-per-trial", "0"], "--workers-per-trial"),
    (["search", "--cpus-per-worker", "0"], "--cpus-per-worker"),
    (["search", "--cpus-per-worker", "inf"], "--cpus-per-worker"),
    (["search", "--cpus-per-worker", "1e-9"], "--cpus-per-worker"),
    (["train", "--gpus-per-worker", "0.00001"], "--gpus-per-worker"),
    (["train", "--workers", "100000"], "--workers"),
    (["search", "--max-epochs", "1000000000"], "--max-epochs"),
    (["search", "--num-samples", "1.5"], "--num-samples"),
    (["search", "--gpus-per-worker", "nan"], "--gpus-per-worker"),
    (["search", "--searcher-seed", "-1"], "--searcher-seed"),
    (["search", "--searcher-seed", str(2**64)], "--searcher-seed"),
    (["data", "synth", "--out", "x", "--images", "0"], "--images"),
    (["data", "synth", "--out", "x", "--images", "5", "--size", "64"], "--size"),
    (["data", "synth", "--out", "x", "--images", "5", "--seed", "-1"], "--seed"),
    (["data", "synth", "--out", "x", "--images", "five"], "--images"),
])
def test_numeric_options_are_range_checked(args, option, board, tmp_path):
    if args[0] == "leaderboard":
        args = [*args, "--storage", str(board)]
    one_line_error(cli(*args, cwd=tmp_path), option)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("action,option", [(["show", "--by"], "--by"), (["compare", "--metric"], "--metric"),
                                           (["plot", "bars", "--metric"], "--metric")])
def test_a_label_column_is_not_a_metric(action, option, board, tmp_path):
    line = one_line_error(cli("leaderboard", *action, "model", "--storage", str(board), cwd=tmp_path), option)
    assert "val/mAP07" in line  # says which metrics there are


def test_show_ranks_by_a_numeric_non_metric_column(board, tmp_path):
    proc = cli("leaderboard", "show", "--by", "gmacs", "--storage", str(board), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ranked by gmacs" in proc.stdout


# ------------------------------------------------------------------- class 6: the right blame
def test_a_bad_set_value_blames_the_set_option_not_the_space_file(tmp_path):
    line = one_line_error(cli("search", "--dry-run", "--set", "data.batch_size=0", "--storage", str(tmp_path),
                              cwd=tmp_path), "--set data.batch_size", "must be >= 1")
    assert ".yaml" not in line
    one_line_error(cli("train", "quickstart", "--no-ray", "--set", "optim.lr=abc", "--storage", str(tmp_path),
                       cwd=tmp_path), "--set optim.lr", "expected a number")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["search", "--dry-run"], ["search"], ["train", "quickstart", "--no-ray"]])
@pytest.mark.parametrize("setting,words", [
    ("model.name=bogus", ["--set model.name", "'bogus' is not a registered detector"]),
    ("data.dataset=densesirst", ["--set data.dataset", "data.root: required"]),  # a consequence of the --set
])
def test_a_set_value_that_breaks_the_space_or_config_is_blamed_on_set(command, setting, words, tmp_path):
    if command[0] == "search" and setting.startswith("model.name="):  # quickstart searches model.name
        words = ["--set model.name", "also searches model.name"]
    line = one_line_error(cli(*command, "--set", setting, "--storage", str(tmp_path), cwd=tmp_path), *words)
    assert line.split("error: ", 1)[1].startswith("--set")  # blamed on the option (the space file may follow)
    assert list(tmp_path.iterdir()) == []


def test_no_rows_names_what_selected_them(board, tmp_path):
    line = one_line_error(cli("leaderboard", "show", "--protocol", "clean", "--storage", str(board), cwd=tmp_path),
                          "no rows match the selection", "--protocol clean")
    assert "--filter" not in line
    one_line_error(cli("leaderboard", "compare", "--dataset", "nope", "--storage", str(board), cwd=tmp_path),
                   "--dataset nope")


def test_eval_builds_only_the_split_it_scores(checkpoint, synth_root, tmp_path):
    root = tmp_path / "only-test"
    root.mkdir()
    for sub in synth_root.iterdir():  # the same images, but a Splits/ folder with test_v2 only
        if sub.name != "Splits":
            (root / sub.name).symlink_to(sub)
    (root / "Splits").mkdir()
    (root / "Splits" / "test_v2.txt").write_text((synth_root / "Splits" / "test_v2.txt").read_text())
    proc = cli("eval", str(checkpoint), "--dataset", "synthetic", "--root", str(root), "--split", "test_v2",
               "--out", str(tmp_path / "ev"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["split"] == "test_v2" and report["metrics"]["num_images"] == 2
    # a split that really is missing is the one named
    one_line_error(cli("eval", str(checkpoint), "--dataset", "synthetic", "--root", str(root), "--split", "val",
                       "--out", str(tmp_path / "ev2"), cwd=tmp_path), "val_v2.txt", "split file not found")
    # the in-memory synthetic set has no split of another name
    one_line_error(cli("eval", str(checkpoint), "--split", "nosplit", "--out", str(tmp_path / "ev3"), cwd=tmp_path),
                   "--split nosplit")
    assert not (tmp_path / "ev2").exists() and not (tmp_path / "ev3").exists()


# ------------------------------------------------------------------- also
def test_dry_run_lists_as_many_configurations_as_the_plan_runs(tmp_path):
    proc = cli("search", "--dry-run", "--num-samples", "2", "--storage", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if "first configurations" in line)
    assert "first configurations (2 of 2)" in lines[head]
    assert len([line for line in lines[head + 1:] if line.startswith("    {")]) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_an_empty_config_file_is_an_error(text, tmp_path):
    config = tmp_path / "empty.yaml"
    config.write_text(text)
    one_line_error(cli("train", str(config), "--no-ray", "--storage", str(tmp_path / "runs"), cwd=tmp_path),
                   str(config), "empty")
    assert not (tmp_path / "runs").exists()


def test_a_train_failing_before_its_first_epoch_removes_only_what_it_created(tmp_path):
    storage = tmp_path / "new" / "storage"
    fail = [*TINY, "--set", "train.debug_nan_at_iter=0"]
    proc = cli("train", "quickstart", "--no-ray", "--storage", str(storage), "--name", "r", *fail, cwd=tmp_path)
    assert proc.returncode == 2 and "diverged" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # the run folder and the storage made for it are gone
    earlier = tmp_path / "kept" / "r"
    earlier.mkdir(parents=True)
    (earlier / "notes.txt").write_text("earlier results")
    proc = cli("train", "quickstart", "--no-ray", "--storage", str(earlier.parent), "--name", "r", *fail, cwd=tmp_path)
    assert proc.returncode == 2
    assert (earlier / "notes.txt").read_text() == "earlier results"


def test_resuming_a_name_with_another_config_leaves_its_config_alone(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("earlier: config\n")
    one_line_error(cli("train", "quickstart", "--no-ray", "--storage", str(tmp_path), "--name", "r", cwd=tmp_path),
                   str(run / "config.yaml"), "different config")
    assert tree(tmp_path) == {"r": None, "r/config.yaml": b"earlier: config\n"}


def test_ctrl_c_prints_the_command_that_resumes_the_run(tmp_path):
    args = ["train", "quickstart", "--no-ray", "--storage", str(tmp_path), "--name", "cc", *TINY,
            "--set", "schedule.epochs=3", "--set", "train.max_iters_per_epoch=4"]
    proc = subprocess.Popen([sys.executable, "-m", "irstdlab.harness.cli", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, cwd=tmp_path, env=ENV)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch 1/3"):
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=120) == 130, "".join(seen) + rest
    hint = rest.strip().splitlines()[-1]
    assert "Traceback" not in rest and "resume with: irstdlab train quickstart" in hint, rest
    words = shlex.split(hint.split("resume with: ", 1)[1])
    assert words[:2] == ["irstdlab", "train"] and "--no-ray" in words
    resumed = cli(*words[1:], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    assert (tmp_path / "cc" / "summary.json").is_file()


def test_ctrl_c_on_the_ray_path_also_prints_the_resume_command(tmp_path):
    """Ray Train installs its own Ctrl-C handler (a graceful abort, then exit): still a hint, no summary."""
    args = ["train", "quickstart", "--storage", str(tmp_path), "--name", "ray", "--num-cpus", "2", *TINY,
            "--set", "schedule.epochs=30"]
    proc = subprocess.Popen([sys.executable, "-m", "irstdlab.harness.cli", *args], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, cwd=tmp_path, env=ENV)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "epoch 1/30" in line:  # Ray prefixes the driver's lines with the controller's pid
            proc.send_signal(signal.SIGINT)
            break
    rest = proc.stderr.read()
    assert proc.wait(timeout=180) == 130, "".join(seen)[-3000:] + rest
    hint = rest.strip().splitlines()[-1]
    assert hint.startswith("irstdlab: train interrupted; resume with: irstdlab train quickstart"), rest
    assert "--name ray" in hint and "--num-cpus 2" in hint and "--no-ray" not in hint
    assert (tmp_path / "ray" / "progress.jsonl").is_file() and not (tmp_path / "ray" / "summary.json").exists()
