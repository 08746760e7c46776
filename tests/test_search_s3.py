"""``irstdlab search --storage s3://…`` against a real S3 wire-protocol server on loopback (moto):
a search killed with SIGKILL, its local folders wiped, resumed from another folder; and storage that
cannot be used refused in one line before Ray starts."""

from __future__ import annotations

import os

# Keep every Ray process of these tests on loopback (read when Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from search_driver import Driver, wait_for_snapshot  # noqa: E402  (tests/ is on sys.path under pytest)

TINY = ["--set", "data.synthetic_images=[16,8,8]", "--num-cpus", "2"]


def s3_objects(bucket_uri: str, prefix: str) -> list[str]:
    """Object keys under ``prefix``, listed with plain pyarrow (no irstdlab code)."""
    import pyarrow.fs as pafs

    fs = _s3_fs()
    bucket = bucket_uri.removeprefix("s3://")
    infos = fs.get_file_info(pafs.FileSelector(f"{bucket}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(i.path.removeprefix(f"{bucket}/") for i in infos if i.type == pafs.FileType.File)


def s3_rows(bucket_uri: str, prefix: str):
    """The leaderboard read with plain ``pyarrow.dataset`` over S3 (hive partitions), as a user would."""
    import pyarrow.dataset as ds

    root = f"{bucket_uri.removeprefix('s3://')}/{prefix}/leaderboard"
    return ds.dataset(root, filesystem=_s3_fs(), format="parquet", partitioning="hive").to_table().to_pandas()


def _no_parquet(*folders: Path) -> None:
    local = [p for folder in folders if folder.exists() for p in folder.rglob("*.parquet")]
    assert not local, f"Parquet files on local disk: {local}"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_s3_search_survives_sigkill_and_a_wiped_work_folder(tmp_path, s3_bucket, monkeypatch):
    storage = f"{s3_bucket}/runs"
    first_cwd, first_work = tmp_path / "first", tmp_path / "first-work"
    first_cwd.mkdir()
    monkeypatch.setenv("IRSTDLAB_WORK_DIR", str(first_work))  # the driver-local scratch folder
    args = ["quickstart", "--name", "s3kr", "--storage", storage, "--num-samples", "2", "--max-epochs", "3",
            "--max-concurrent", "1", "--scheduler", "none", *TINY]
    first = Driver(args, first_cwd)
    try:
        done = first.wait_for(lambda m: m.group(5) == "completed", 300).group(1)
        victim = first.wait_for(lambda m: m.group(1) != done and m.group(2) == "2" and m.group(5) == "running",
                                300).group(1)
        # kill only once S3 holds a snapshot with the victim's 2nd checkpoint (uploaded in the background)
        wait_for_snapshot(_s3_fs(), f"{s3_bucket.removeprefix('s3://')}/runs/s3kr", victim, "checkpoint_000001")
        os.killpg(first.proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        first.proc.wait(timeout=60)
    finally:
        first.kill_group()
    assert first_work.is_dir() and any(first_work.rglob("optuna-journal.log"))  # the journal's working copy
    shutil.rmtree(first_cwd)
    shutil.rmtree(first_work)  # nothing local survives: the resume must come from S3 alone

    second_cwd, second_work = tmp_path / "second", tmp_path / "second-work"
    second_cwd.mkdir()
    monkeypatch.setenv("IRSTDLAB_WORK_DIR", str(second_work))
    second = Driver(["--resume", "--name", "s3kr", "--storage", storage], second_cwd)
    assert second.finish(timeout=400) == 0, "".join(second.text[-60:])
    text = "".join(second.text)
    assert f"resuming search s3kr from {storage}/s3kr" in text
    assert victim in text and "2/2 trials finished (2 completed)" in text

    # exactly one row per planned trial, read by irstdlab and by plain pyarrow
    from irstdlab.leaderboards import open as open_leaderboard

    ours = open_leaderboard(f"{storage}/leaderboard").read_table(search="s3kr").table.to_pandas()
    assert sorted(ours["trial_id"]) == sorted({done, victim}) and (ours["status"] == "completed").all()
    plain = s3_rows(s3_bucket, "runs")
    assert len(plain) == 2 and sorted(plain["trial_id"]) == sorted({done, victim})
    assert (plain["search"] == "s3kr").all() and (plain["epochs_completed"] == 3).all()
    keys = s3_objects(s3_bucket, "runs")
    # the search compacted its partition when it ended: one object
    assert len([k for k in keys if k.startswith("runs/leaderboard/search=s3kr/")]) == 1, keys
    for name in ("irstdlab-search.json", "tuner.pkl", "optuna-journal.log",
                 f"trial_records/{done}.json", f"trial_records/{victim}.json"):
        assert f"runs/s3kr/{name}" in keys, keys
    assert any(k.startswith(f"runs/s3kr/trial_{victim}/checkpoint_") for k in keys)
    _no_parquet(tmp_path, second_work)

    # the journal copied up to S3 holds the whole study, both trials finished, none duplicated
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "journal.log"
    journal.write_bytes(_read_s3(s3_bucket, "runs/s3kr/optuna-journal.log"))
    state = json.loads(_read_s3(s3_bucket, "runs/s3kr/irstdlab-search.json"))
    study = optuna.load_study(study_name=state["study_name"], storage=JournalStorage(JournalFileBackend(str(journal))))
    assert sorted(t.user_attrs["trial_id"] for t in study.trials) == sorted({done, victim})
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _s3_fs():
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")


def _read_s3(bucket_uri: str, key: str) -> bytes:
    with _s3_fs().open_input_stream(f"{bucket_uri.removeprefix('s3://')}/{key}") as fh:
        return fh.read()


def _cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> tuple[int, str, str, float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def _free_closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again on return: nothing listens there


@pytest.mark.parametrize("case", ["missing_bucket", "unreachable"])
@pytest.mark.parametrize("command", ["search", "train"])
def test_unusable_s3_storage_is_one_line_before_ray(tmp_path, s3_bucket, case, command):
    env = dict(os.environ, IRSTDLAB_WORK_DIR=str(tmp_path / "work"))
    storage = f"{s3_bucket}/runs"
    if case == "missing_bucket":
        storage = f"{s3_bucket}-missing/runs"
        reason = "does not exist"
    else:  # (refused credentials need an authenticating server: tests/test_leaderboard_s3.py covers the wording)
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{_free_closed_port()}"
        reason = "unreachable"
    if command == "search":
        args = ["search", "quickstart", "--name", "s", "--storage", storage, *TINY]
    else:
        args = ["train", "quickstart", "--name", "t", "--storage", storage, "--set", "data.synthetic_images=[16,8,8]"]
    rc, out, err, took = _cli(args, tmp_path, env)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1, err
    assert lines[0].startswith("irstdlab: error: ") and storage in lines[0] and reason in lines[0], lines[0]
    assert "Traceback" not in err and "Ray" not in out
    assert took < 30
    assert not (tmp_path / "work").exists()  # nothing was written anywhere


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_train_on_s3_keeps_its_run_in_the_bucket(tmp_path, s3_bucket):
    env = dict(os.environ, IRSTDLAB_WORK_DIR=str(tmp_path / "work"))
    storage = f"{s3_bucket}/tr"
    args = ["train", "quickstart", "--storage", storage, "--name", "t1", "--set", "schedule.epochs=1",
            "--set", "data.synthetic_images=[16,8,8]", "--num-cpus", "2", "--json"]
    rc, out, err, _ = _cli(args, tmp_path, env, timeout=240)  # Ray's start and a training epoch on a busy machine
    assert rc == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["checkpoint"] == f"{storage}/t1/epoch_0001" and summary["run_dir"] == f"{storage}/t1"
    keys = s3_objects(s3_bucket, "tr")
    assert {"tr/t1/config.yaml", "tr/t1/summary.json", "tr/t1/epoch_0001/checkpoint.pt"} <= set(keys), keys
    assert json.loads(_read_s3(s3_bucket, "tr/t1/summary.json"))["config_hash"] == summary["config_hash"]
    # the finished run is found in the bucket, from another work folder
    env["IRSTDLAB_WORK_DIR"] = str(tmp_path / "other-work")
    rc, _, err, _ = _cli(args, tmp_path, env)
    assert rc == 2 and err.strip() == f"irstdlab: error: {storage}/t1: run 't1' already finished; choose another --name"
