"""The driver simulation (benchmarks/bench_driver.py): a small search of no-op trials through the
real Ray Tune, OptunaSearch, fair ASHA, leaderboard callback, journal and store."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_driver.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_driver", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_curve_is_deterministic_and_rises():
    bench = _bench_module()
    point = {"model.name": "fcos", "optim.lr": 1.5e-3, "model.head_depth": 2}
    curve = bench.synthetic_curve(point, 0, 4)
    assert curve == bench.synthetic_curve(dict(point), 0, 4)
    assert curve == sorted(curve) and curve[0] < curve[-1] < 1.0
    assert bench.synthetic_curve({**point, "optim.lr": 5e-3}, 0, 4)[-1] < curve[-1]  # far from the best lr


@pytest.mark.timeout(300)
def test_driver_simulation_writes_a_row_per_trial(tmp_path):
    trials = 20
    done = subprocess.run([sys.executable, str(BENCH), "--trials", str(trials), "--storage", str(tmp_path),
                           "--concurrent", "4"], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    (result,) = report["results"]
    assert result["rows"] == trials and result["files"] == trials
    assert result["compacted_files"] == 1  # as `irstdlab search` leaves its partition
    assert not any(k.endswith("_error") for k in result)
    parts = result["components_ms_per_trial"]
    timed = sum(v for k, v in parts.items() if k != "tune")
    assert all(parts[k] > 0 for k in ("tpe", "asha", "row_write", "journal"))
    assert 0 < timed <= result["cpu_ms_per_trial"]
    late = result["components_ms_last_quarter"]  # the same split over the last quarter of the trials
    assert set(late) == set(parts) and all(late[k] > 0 for k in ("tpe", "asha", "row_write", "journal"))
    assert sum(late.values()) == pytest.approx(result["cpu_ms_last_quarter"], rel=0.05)
    assert 0 <= result["gc_ms_last_quarter"] and 0 <= result["gc_ms_per_trial"] < result["cpu_ms_per_trial"]

    from irstdlab.leaderboards import open as open_leaderboard

    rows = open_leaderboard(tmp_path / f"n{trials}" / "leaderboard").read_table(search=f"driver{trials}").table.to_pandas()
    assert len(rows) == trials and rows["trial_id"].is_unique
    assert set(rows["status"]) <= {"completed", "early_stopped"}
    assert (rows["status"] == "early_stopped").any(), "ASHA saw the synthetic landscape and cut some trials"
    # the scheduler's decision reaches the row (read from the live scheduler in the driver) ...
    stopped = rows[rows["status"] == "early_stopped"]
    assert stopped["stop_reason"].str.startswith("stopped at rung epoch ").all()
    # ... and its record file holds one line per change, each decision once
    records = [json.loads(line) for line in
               (tmp_path / f"n{trials}" / f"driver{trials}" / "asha_rungs.jsonl").read_text().splitlines()]
    logged_stops = [r["trial"] for r in records if r.get("decision", {}).get("decision") == "stopped"]
    assert sorted(logged_stops) == sorted(stopped["trial_id"])
    bench = _bench_module()
    for _, row in rows.iterrows():  # each row holds exactly what its no-op trial reported
        params = json.loads(row["params_json"])
        seed = params.pop("train.seed")
        curve = bench.synthetic_curve(params, seed, int(row["max_epochs"]))
        assert row["metric.val/mAP07"] == pytest.approx(curve[int(row["epochs_completed"]) - 1])

    import optuna

    journal = tmp_path / f"n{trials}" / f"driver{trials}" / "optuna-journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (study,) = optuna.get_all_study_summaries(storage)
    assert study.n_trials == trials
