"""A search on a two-node Ray cluster whose nodes share no folder (separate temp folders, storage on
a loopback S3 server): the node running a trial dies mid-trial and the search still completes."""

from __future__ import annotations

import os

# Keep every Ray process of these tests on loopback (read when Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import shutil
import tempfile
from pathlib import Path

import pytest

from test_search_cluster import SPACE  # noqa: E402  (same folder; pytest puts it on sys.path)
from search_driver import Driver  # noqa: E402
from test_search_s3 import _no_parquet, s3_objects, s3_rows  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_s3_search_survives_losing_the_worker_node(tmp_path, s3_bucket, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    space = tmp_path / "cluster.yaml"
    space.write_text(SPACE.format(n=16, lrs="[0.001, 0.0005]", k=2, epochs=3))
    storage = f"{s3_bucket}/cl"
    monkeypatch.setenv("IRSTDLAB_WORK_DIR", str(tmp_path / "driver-work"))
    # every node has its own temp folder (short: Ray's socket paths must fit in 107 bytes), so trials
    # can only meet through the S3 storage
    temp = Path(tempfile.mkdtemp(prefix="irs3", dir="/tmp"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": str(temp / "h")})
    drv = None
    try:
        worker = cluster.add_node(num_cpus=1, temp_dir=str(temp / "w1"))
        cluster.wait_for_nodes()
        drv = Driver([str(space), "--name", "cl", "--storage", storage, "--address", cluster.address,
                      "--scheduler", "none", "--max-concurrent", "1"], tmp_path)
        victim = drv.wait_for(lambda m: m.group(2) == "1" and m.group(5) == "running", 300).group(1)
        cluster.remove_node(worker)  # the node running the trial dies mid-trial
        cluster.add_node(num_cpus=1, temp_dir=str(temp / "w2"))  # a replacement joins
        assert drv.finish(timeout=400) == 0, "".join(drv.text[-80:])
        assert any("retrying" in line and victim in line for line in drv.text), "".join(drv.text[-80:])
        df = s3_rows(s3_bucket, "cl")
        assert len(df) == 2 and df["trial_id"].is_unique
        assert (df["status"] == "completed").all() and (df["epochs_completed"] == 3).all()
        keys = s3_objects(s3_bucket, "cl")
        assert any(k.startswith(f"cl/cl/trial_{victim}/checkpoint_") for k in keys), keys
        _no_parquet(tmp_path, temp)
        assert sorted(p.name for p in temp.iterdir()) == ["h", "w1", "w2"]  # the nodes really were apart
    finally:
        if drv is not None:
            drv.kill_group()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
