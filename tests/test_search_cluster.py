"""Nested Ray Train trials (2 CPU workers, DDP over gloo) that ASHA stops, and the space the cluster
tests share. Losing a worker node mid-trial is tested once, in its harder form, by
tests/test_search_cluster_s3.py: nodes that share no folder, storage on S3."""

from __future__ import annotations

import os

# Keep every Ray process of these tests on loopback (read when Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
import warnings
from pathlib import Path

import pytest

from search_driver import Driver  # noqa: E402  (same folder; pytest puts it on sys.path)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

# Every backbone stage feeds the FPN (P3-P5), so DDP sees no unused parameters.
SPACE = """\
base: quickstart
overrides:
  model.p2: false
  model.num_levels: 3
  model.regress_ranges: null
  data.synthetic_images: [{n}, 8, 8]
parameters:
  optim.lr: {{choice: {lrs}}}
# the reported learning rate as the objective makes ASHA's decisions deterministic:
# a trial whose LR is above the first trial's is stopped after its first epoch.
objective: {{metric: lr, mode: min}}
budget: {{num_samples: {k}, max_epochs: {epochs}, grace_period: 1, reduction_factor: 2}}
sampler: grid
"""


def _rows(storage: Path, search: str):
    from irstdlab.leaderboards import open as open_leaderboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_leaderboard(storage / "leaderboard").read_table(search=search).table.to_pandas()


def test_train_backend_and_early_stopped_trial_frees_its_workers(tmp_path):
    space = tmp_path / "train.yaml"
    space.write_text(SPACE.format(n=16, lrs="[0.001, 0.002, 0.0005]", k=3, epochs=2))
    storage = tmp_path / "runs"
    # 3 CPUs: one trial's 2 workers (+ its tiny driver) at a time, so trial 3 can only start
    # once the stopped trial 2 has released its workers' placement group.
    drv = Driver([str(space), "--name", "tr", "--storage", str(storage), "--trial-backend", "train",
                  "--workers-per-trial", "2", "--cpus-per-worker", "1", "--num-cpus", "3",
                  "--max-concurrent", "1"], tmp_path)
    assert drv.finish(timeout=800) == 0, "".join(drv.text[-80:])
    df = _rows(storage, "tr").set_index("param.optim.lr")
    assert len(df) == 3
    assert df.loc[0.001, "status"] == "completed" and df.loc[0.001, "epochs_completed"] == 2
    assert df.loc[0.002, "status"] == "early_stopped" and df.loc[0.002, "epochs_completed"] == 1
    assert df.loc[0.0005, "status"] == "completed" and df.loc[0.0005, "epochs_completed"] == 2
    assert df["note"].str.contains("backend=train").all()
    # each trial's Train run lives under a name derived from its trial id (so it can resume)
    runs = sorted(p.name for p in (storage / "tr" / "train").iterdir())
    assert runs == sorted(f"train-trial_id={t}" for t in df["trial_id"])
