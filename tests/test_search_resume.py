"""Resuming a search after SIGKILL / SIGINT of its driver, and ASHA rungs that survive a restart."""

from __future__ import annotations

import os

# Keep every Ray process of these tests on loopback (read when Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import signal
from pathlib import Path
from types import SimpleNamespace

import pyarrow.fs as pafs
import pytest

from irstdlab.harness.asha import PersistentASHA
from search_driver import LINE, Driver, wait_for_snapshot  # tests/ is on sys.path under pytest

TINY = ["--set", "data.synthetic_images=[48,8,8]", "--num-cpus", "2"]


# ---------------------------------------------------------------------------------- ASHA state
def _asha(path: Path) -> PersistentASHA:
    return PersistentASHA(str(path), time_attr="epoch", metric="m", mode="max", max_t=4, grace_period=1,
                          reduction_factor=2)


def test_asha_rungs_survive_a_restart(tmp_path):
    path = tmp_path / "asha_rungs.jsonl"
    first = _asha(path)
    for i, value in enumerate([0.9, 0.8, 0.7]):
        trial = SimpleNamespace(trial_id=f"t{i}")
        first.on_trial_add(None, trial)
        assert first.on_trial_result(None, trial, {"epoch": 1, "m": value}) == "CONTINUE" or i > 0
    assert path.is_file()
    bad = SimpleNamespace(trial_id="late")
    # A restarted search (Ray restores the scheduler as pickled at start: empty rungs) ...
    fresh = _asha(tmp_path / "other" / "asha_rungs.jsonl")
    fresh.on_trial_add(None, bad)
    assert fresh.on_trial_result(None, bad, {"epoch": 1, "m": 0.1}) == "CONTINUE"  # no records: no cut
    # ... but ours reads the rungs back and cuts the weak newcomer as the first run would have.
    restored = _asha(path)
    restored.on_trial_add(None, bad)
    assert restored.on_trial_result(None, bad, {"epoch": 1, "m": 0.1}) == "STOP"
    assert set(restored.rung_state()["brackets"][0][-1][1]) >= {"t0", "t1", "t2", "late"}


# ---------------------------------------------------------------------------------- kill and resume
def _rows(storage: Path):
    import warnings

    from irstdlab.leaderboards import open as open_leaderboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_leaderboard(storage / "leaderboard").read_table(search="kr").table.to_pandas()


def _expected_configs() -> list[dict]:
    """The first 2 suggestions of the seeded searcher (TPE's random start-up phase)."""
    from irstdlab.harness.search import SearchOptions, _preview, build_space

    space = build_space(SearchOptions(space="quickstart", max_epochs=4, overrides=("data.synthetic_images=[48,8,8]",)))
    return _preview(space, 2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ctrl_c_and_resume(tmp_path):
    """Ctrl-C (SIGINT) mid-trial, then --resume. SIGKILL of the driver and every Ray process is tested
    on S3 with the local folders wiped (test_search_s3) and, locally, before --more (test_search_extend)."""
    storage = tmp_path / "runs"
    args = ["quickstart", "--name", "kr", "--storage", str(storage), "--num-samples", "2", "--max-epochs", "4",
            "--max-concurrent", "1", "--scheduler", "none", *TINY]
    first = Driver(args, tmp_path)
    try:
        done = first.wait_for(lambda m: m.group(5) == "completed", 400).group(1)
        victim = first.wait_for(lambda m: m.group(1) != done and m.group(2) == "2" and m.group(5) == "running",
                                300).group(1)
        wait_for_snapshot(pafs.LocalFileSystem(), str(storage / "kr"), victim, "checkpoint_000001")
        os.kill(first.proc.pid, signal.SIGINT)  # Ctrl-C: Tune saves its state and we exit non-zero
        assert first.proc.wait(timeout=240) == 130, "".join(first.text[-40:])
        assert f"irstdlab search --resume --name kr --storage {storage}" in "".join(first.text)
        before = _rows(storage).set_index("trial_id")
        assert before.loc[victim, "status"] == "interrupted" and before.loc[done, "status"] == "completed"
    finally:
        first.kill_group()
    row_files = sorted((storage / "leaderboard").rglob("*.parquet"))
    done_row = _rows(storage).set_index("trial_id").loc[done]

    second = Driver(["--resume", "--name", "kr", "--storage", str(storage)], tmp_path)
    resumed = second.wait_for(lambda m: m.group(1) == victim and m.group(5) == "running", 400)
    assert int(resumed.group(2)) >= 2, "the interrupted trial restarted from scratch instead of its checkpoint"
    assert second.finish(timeout=500) == 0, "".join(second.text[-60:])
    assert all(LINE.match(ln) is None or LINE.match(ln).group(1) != done for ln in second.text)  # not re-run

    df = _rows(storage)
    assert len(df) == 2 and df["trial_id"].is_unique
    assert (df["status"] == "completed").all() and (df["epochs_completed"] == 4).all()
    after = df.set_index("trial_id").loc[done]
    assert after["written_at"] == done_row["written_at"]  # the finished trial's row is untouched
    assert row_files and [p.name[:8] for p in (storage / "leaderboard").rglob("*.parquet")] == ["compact-"]  # compacted
    # the restored, seeded searcher went on with the same suggestion sequence as an uninterrupted run
    got = sorted(df["params_json"])
    import json

    want = sorted(json.dumps({**c, "train.seed": 0}, sort_keys=True) for c in _expected_configs())
    assert got == want
