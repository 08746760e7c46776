"""Ray: the embedded runtime stays on loopback; a trial runs as a Ray Train run (2 CPU workers, gloo)."""

from __future__ import annotations

import json

import pytest
import torch

from irstdlab.harness.cli import main
from irstdlab.harness.errors import UserError

TINY = ["data.synthetic_images=[8, 4, 4]", "data.batch_size=2", "data.eval_batch_size=4", "schedule.epochs=1",
        "model.score_thr=0.0"]


@pytest.fixture(scope="module")
def ray_session():
    from irstdlab.harness import ray_runtime

    ray_runtime.init_local_ray(num_cpus=4)
    yield ray_runtime
    import ray

    ray.shutdown()


def test_embedded_ray_binds_to_loopback_only(ray_session):
    import ray

    nodes = ray.nodes()
    assert nodes and all(node["NodeManagerAddress"] == "127.0.0.1" for node in nodes)
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    ray_session.check_loopback()


@pytest.mark.slow
def test_two_gloo_workers_train_an_epoch_and_report(ray_session, tmp_path, capsys):
    args = ["train", "quickstart", "--workers", "2", "--storage", str(tmp_path), "--name", "ddp", "--json"]
    for item in TINY:
        args += ["--set", item]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    metrics = summary["metrics"]
    assert metrics["epoch"] == 1 and metrics["workers"] == 2
    # 8 training images, global batch 2 over two ranks (1 per rank): each rank's 4 images are 4 iterations
    assert metrics["train/iterations"] == 4
    assert {"val/mAP07", "val/mAP12", "val/recall", "test/mAP07", "train/loss_cls"} <= set(metrics)
    assert metrics["test/num_dets"] > 0
    state = torch.load(f"{summary['checkpoint']}/checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 1 and state["config_hash"] == summary["config_hash"]
    records = [json.loads(line) for line in (tmp_path / "ddp" / "progress.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1] and records[0]["checkpoint"] == summary["checkpoint"]
    assert list((tmp_path / "ddp" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_non_finite_loss_fails_the_ray_trial_with_its_location(ray_session, tmp_path):
    from irstdlab.harness.config import load_config

    cfg = load_config("quickstart", TINY + ["train.debug_nan_at_iter=1"])
    with pytest.raises(UserError) as info:
        ray_session.fit(cfg, storage=tmp_path, name="nan", workers=2)
    assert str(info.value) == "trial failed: diverged at epoch 1, iteration 1 (loss term loss_cls = nan)"
