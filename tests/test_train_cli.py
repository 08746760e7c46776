"""`irstdlab train --no-ray` and `irstdlab eval`: files, the --json contract, one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import pytest
import torch

from irstdlab.harness.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

# score_thr 0 keeps every top-100 box, so the metrics are non-zero even after a few iterations
TINY = ["--set", "data.synthetic_images=[8, 4, 4]", "--set", "data.batch_size=4", "--set", "data.eval_batch_size=4",
        "--set", "train.max_iters_per_epoch=2", "--set", "schedule.epochs=2", "--set", "model.score_thr=0.0"]


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `irstdlab train --no-ray --json` run shared by the tests below."""
    torch.set_num_threads(1)
    storage = tmp_path_factory.mktemp("runs")
    capture = io.StringIO()
    err = io.StringIO()
    with contextlib.redirect_stdout(capture), contextlib.redirect_stderr(err):
        code = main(["train", "quickstart", "--no-ray", "--storage", str(storage), "--name", "tiny", "--json", *TINY])
    assert code == 0, err.getvalue()
    return storage, capture.getvalue(), err.getvalue()


def test_train_json_contract_and_files(tiny_run):
    storage, out, err = tiny_run
    summary = json.loads(out.strip().splitlines()[-1])  # the contract: last stdout line is the JSON
    assert set(summary) >= {"metrics", "best_epoch", "checkpoint", "config_hash"}
    metrics = summary["metrics"]
    for key in ("epoch", "train/loss_cls", "train/loss_box", "train/loss_centerness", "val/mAP07", "val/mAP12",
                "val/recall", "test/mAP07", "test/mAP12", "test/recall", "lr", "images_per_s"):
        assert key in metrics, key
    assert metrics["epoch"] == 2 and summary["best_epoch"] in (1, 2)
    assert metrics["test/num_dets"] > 0 and 0 < metrics["test/recall"] <= 1
    # progress: one console line per epoch on stderr, one JSON record per epoch, TensorBoard events
    assert err.count("epoch 1/2") == 1 and err.count("epoch 2/2") == 1
    run_dir = storage / "tiny"
    records = [json.loads(line) for line in (run_dir / "progress.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "config.yaml").is_file() and (run_dir / "summary.json").is_file()
    state = torch.load(f"{summary['checkpoint']}/checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["config_hash"] == summary["config_hash"] and state["epoch"] == 2


def test_eval_reproduces_the_runs_test_numbers(tiny_run, tmp_path, capsys):
    storage, out, _ = tiny_run
    summary = json.loads(out.strip().splitlines()[-1])
    metrics = summary["metrics"]
    # eval of the checkpoint's selected weights on the test split gives the run's test numbers
    code, out, err = run_cli(["eval", summary["checkpoint"], "--out", str(tmp_path / "ev"), "--show", "2"], capsys)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["metrics"]["mAP07"] == pytest.approx(metrics["test/mAP07"])
    assert report["metrics"]["mAP12"] == pytest.approx(metrics["test/mAP12"])
    assert report["metrics"]["recall"] == pytest.approx(metrics["test/recall"])
    assert (tmp_path / "ev" / "metrics.json").is_file()
    assert (tmp_path / "ev" / "pr_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "ev").glob("det_*.png"))) == 2


def test_eval_on_real_densesirst_counts_ground_truth_in_original_coordinates(tiny_run, densesirst_root, tmp_path,
                                                                             capsys):
    from irstdlab.datasets.readers import open_dataset

    storage, out, _ = tiny_run
    checkpoint = json.loads(out.strip().splitlines()[-1])["checkpoint"]
    code, out, err = run_cli(["eval", checkpoint, "--dataset", "densesirst", "--root", str(densesirst_root),
                              "--split", "test_v2", "--protocol", "reference", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    reader = open_dataset("densesirst", densesirst_root, split="test_v2", protocol="reference", load_masks=False)
    assert report["metrics"]["num_images"] == len(reader) == 24
    assert report["metrics"]["num_gts"] == sum(sample.num_targets for sample in reader)
    assert report["protocol"] == "reference" and report["split"] == "test_v2"


def test_a_finished_run_is_not_overwritten(tiny_run, capsys):
    storage, _, _ = tiny_run
    code, _, err = run_cli(["train", "quickstart", "--no-ray", "--storage", str(storage), "--name", "tiny", *TINY],
                           capsys)
    assert code == 2 and "already finished" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["train", "no_such_preset", "--no-ray"], "no_such_preset: neither a YAML file nor a preset"),
    (["train", "quickstart", "--no-ray", "--set", "model.p=1.5"], "model.p: must be in (0, 1], got 1.5"),
    (["train", "quickstart", "--no-ray", "--set", "model.adapter_hidden=0"], "model.adapter_hidden: must be >= 1"),
    (["train", "quickstart", "--no-ray", "--set", "optim.bogus=1"], "optim.bogus: unknown key; valid keys are"),
    (["train", "quickstart", "--no-ray", "--set", "schedule.epochs=two"], "schedule.epochs: expected an integer"),
    (["train", "quickstart", "--no-ray", "--workers", "2"], "--no-ray runs one process"),
    (["eval", "/no/such/checkpoint"], "/no/such/checkpoint: checkpoint not found"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path):
    code, _, err = run_cli([*args[:2], *args[2:], *(["--storage", str(tmp_path)] if args[0] == "train" else [])],
                           capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irstdlab: error: ") and message in lines[0]


def test_console_script_help_and_exit_code(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "train" in help_text and "eval" in help_text
    bad = tmp_path / "bad.yaml"
    bad.write_text("schedule:\n  epochs: 0\n")
    proc = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", "train", str(bad), "--no-ray",
                           "--storage", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"irstdlab: error: {bad}: schedule.epochs: must be >= 1, got 0"
