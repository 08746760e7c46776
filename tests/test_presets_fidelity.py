"""The paper presets against the released configs: every field compared in the header, fp32,
ImageNet starts, the reference batch as a global batch, FCOS without BAG-CP, GT snapping after
a paste, bafenet's own 3 levels, and mAP75 beside the reference's mAP12."""

from __future__ import annotations

import re
from importlib import resources

import numpy as np
import pytest
import torch
import yaml
from irstdlab.datasets.bagcp import BagCP, BagCPConfig, snap_boxes
from irstdlab.datasets.build import build_datasets
from irstdlab.datasets.sample import Sample
from irstdlab.harness.config import load_config, preset_names
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.evaluate import Predictions, score
from irstdlab.harness.reporting import LocalReporter
from irstdlab.harness.trial import per_worker_batch, run_trial

PAPER = [name for name in preset_names() if name.startswith("paper_")]


def _preset_text(name: str) -> str:
    return (resources.files("irstdlab.harness") / "presets" / f"{name}.yaml").read_text()


def test_every_paper_preset_header_compares_every_field_it_sets():
    assert {"paper_bafenet_r18", "paper_bafenet_r50", "paper_fcos_r50", "paper_oscar_r18"} <= set(PAPER)
    for name in PAPER:
        text = _preset_text(name)
        header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        rows = [line for line in header.splitlines() if line.count("|") >= 2]  # ours | reference | why
        assert "Field by field (ours | reference | why a difference remains)" in header, name
        for section, fields in yaml.safe_load(text).items():
            for field in fields:
                key = f"{section}.{field}"
                assert any(re.search(rf"(^|[\s/]){re.escape(key)}\b", row) for row in rows), f"{name}: {key}"


def test_paper_presets_resolve_to_fp32_imagenet_and_the_reference_batch_and_splits():
    for name in PAPER:
        cfg = load_config(name)
        assert cfg.train.amp == "off", name  # the references train in fp32 (ODI's fp16 is documented)
        # ODI's OSCAR numbers come from random weights, and its deep stem has no ImageNet weights
        assert cfg.model.pretrained == (None if name == "paper_oscar_r18" else "imagenet"), name
    for name in ("paper_bafenet_r18", "paper_bafenet_r50", "paper_fcos_r50"):
        cfg = load_config(name)
        assert cfg.data.batch_size == 2 and cfg.data.repeat == 3
        reference = load_config(name, ["data.selection=reference"]).data.split_names()
        assert reference == {"train": "trainval_v2", "val": "test_v2", "test": "test_v2"}
    fcos = load_config("paper_fcos_r50")  # Table II baseline: sirst_det_voc.py, no copy-paste
    assert fcos.augment.bagcp == "none" and fcos.model.num_levels == 5 and fcos.eval.select_metric == "mAP12"
    for name in ("paper_bafenet_r18", "paper_bafenet_r50"):
        aug = load_config(name).augment
        assert (aug.bagcp, aug.snap_gt, aug.bagcp_prob) == ("reference", True, 1.0)


def test_bafenet_default_is_the_released_three_levels_and_its_parameter_count():
    from irstdlab.harness.complexity import profile
    from irstdlab.models import ModelConfig, build

    cfg = ModelConfig.from_dict({"name": "bafenet", "backbone": "resnet50"})
    assert cfg.num_levels == 3 and cfg.level_strides() == [8, 16, 32]
    assert cfg.level_regress_ranges() == [(-1, 64), (64, 128), (128, 256)]
    assert ModelConfig.from_dict({"name": "fcos"}).num_levels == 5  # the Table II FCOS keeps P3-P7
    with torch.device("meta"):
        model = build({"name": "bafenet", "backbone": "resnet50"})
    assert profile(model, (512, 512)).params == 34_732_182  # README: 34.73 M


# ------------------------------------------------------------------------------ global batch
def test_batch_size_is_the_global_batch():
    assert per_worker_batch(2, 1) == 2 and per_worker_batch(2, 2) == 1 and per_worker_batch(8, 4) == 2
    with pytest.raises(ConfigError, match=r"^data\.batch_size: 2 is the global batch and does not divide over 3 workers"):
        per_worker_batch(2, 3)


class TwoRankReporter(LocalReporter):
    """Rank 0 of a 2-worker job, without a process group: DistributedSampler shards by hand."""

    world_size = 2


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    torch.set_num_threads(1)
    tiny = ["data.synthetic_images=[16, 4, 4]", "data.batch_size=4", "schedule.epochs=1", "train.log_every=0"]
    cfg = load_config("quickstart", tiny)
    return {n: run_trial(cfg, cls(tmp_path_factory.mktemp(f"w{n}")))
            for n, cls in ((1, LocalReporter), (2, TwoRankReporter))}


def test_two_workers_keep_the_iterations_of_the_recipe(trials):
    # 16 images at a global batch of 4: 4 iterations, whether one worker loads 4 or two load 2 each
    assert trials[1]["train/iterations"] == trials[2]["train/iterations"] == 4
    assert trials[2]["workers"] == 2


def test_mAP75_reaches_every_reported_split(trials):
    for split in ("val", "test"):
        assert 0.0 <= trials[1][f"{split}/mAP75"] <= trials[1][f"{split}/mAP12"] + 1e-9


def test_ray_fit_refuses_an_indivisible_batch_before_starting_workers(tmp_path):
    ray_runtime = pytest.importorskip("irstdlab.harness.ray_runtime")
    import ray

    with pytest.raises(ConfigError, match="does not divide over 3 workers"):
        ray_runtime.fit(load_config("quickstart"), storage=tmp_path, name="x", workers=3)
    assert not ray.is_initialized()


# ---------------------------------------------------------------------------------- mAP75
def test_mAP75_is_area_ap_at_iou_075_while_mAP12_keeps_the_reference_iou_05():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], np.float32)
    # IoU 100/130 = 0.77 for the first detection, 100/160 = 0.625 for the second
    dets = np.array([[0, 0, 10, 13], [20, 0, 30, 16]], np.float32)
    preds = Predictions(["a"], [dets], [np.array([0.9, 0.8], np.float32)], [gt])
    metrics = score(preds, "clean")
    assert metrics["mAP12"] == pytest.approx(1.0)
    assert metrics["mAP75"] == pytest.approx(0.5)  # precision 1 up to recall 0.5, then nothing


# ------------------------------------------------------------------------------- snapping
def _sample() -> Sample:
    image = np.full((64, 64), 40, np.uint8)
    boxes = np.array([[3.6, 4.2, 7.9, 8.5], [20.2, 30.7, 20.9, 34.0], [40.0, 40.0, 44.0, 45.0]], np.float32)
    return Sample("dst", image, boxes, np.ones((64, 64), np.uint8), None, (64, 64), {})


def _source() -> Sample:
    image = np.full((64, 64), 200, np.uint8)
    return Sample("src", image, np.array([[10, 10, 13, 13], [30, 30, 33, 34]], np.float32), None, None, (64, 64), {})


def test_snap_boxes_floors_and_drops_the_empty():
    snapped = snap_boxes(_sample().boxes)
    np.testing.assert_array_equal(snapped, [[3, 4, 7, 8], [40, 40, 44, 45]])  # 20.2..20.9 floors to width 0


def test_snap_gt_after_a_paste_and_only_then():
    snapped_samples = 0
    for seed in range(8):
        for snap in (False, True):
            cfg = BagCPConfig.table_iii("f", recipe="reference", snap_gt=snap)
            out = BagCP(cfg, source=[_source()])(_sample(), np.random.default_rng(seed))
            pasted = out.meta["bagcp"]["pasted"]
            existing = snap_boxes(_sample().boxes) if snap and pasted else _sample().boxes
            np.testing.assert_array_equal(out.boxes[: len(existing)], existing)
            assert len(out.boxes) == len(existing) + pasted
            snapped_samples += bool(snap and pasted)
    assert snapped_samples >= 3  # the source's count is uniform over {0, 1, 2}


def test_snap_gt_on_real_densesirst_makes_every_pasted_sample_integer(densesirst_root):
    base = [f"data.root={densesirst_root}", "data.num_workers=0", "data.repeat=1"]
    snapped = fractional = 0
    for snap in (True, False):
        cfg = load_config("paper_bafenet_r18", base + [f"augment.snap_gt={str(snap).lower()}"])
        train = build_datasets(cfg.data, cfg.augment, seed=0)["train"]
        for i in range(8):
            sample = train[i]
            if sample.meta["bagcp"]["pasted"] == 0:
                continue
            integer = bool(np.array_equal(sample.boxes, np.floor(sample.boxes)))
            if snap:
                assert integer, sample.id
                assert (sample.boxes[:, 2:] > sample.boxes[:, :2]).all()
                snapped += 1
            else:
                fractional += not integer  # the squash resize leaves fractional boxes
    assert snapped >= 4 and fractional >= 4
