"""torchvision baselines (models/tv_detectors.py): registry, loss/eval formats, background-only
images, target cleaning, anchors, a short overfit on synthetic images, and profiling."""

from __future__ import annotations

import math

import pytest
import torch

from irstdlab.datasets.synthetic import SyntheticDataset
from irstdlab.datasets.transforms import collate_detection
from irstdlab.harness.complexity import count_params, profile
from irstdlab.models import ModelConfig, build, list_models
from irstdlab.models.tv_detectors import ExactAnchorGenerator, clean_targets

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

NAMES = ["retinanet", "fcos_tv", "ssd", "faster_rcnn"]
# quickstart.yaml's model section (without its FCOS-head keys)
LIGHT = dict(
    backbone="resnet18", fpn_channels=64, stem_pool=False, p2=True, num_levels=1, input_norm="grey",
    in_channel_mode="stem", frozen_bn=False, norm_eval=False,
)
LOSS_KEYS = {
    "retinanet": {"loss_cls", "loss_box"},
    "fcos_tv": {"loss_cls", "loss_box", "loss_centerness"},
    "ssd": {"loss_cls", "loss_box"},
    "faster_rcnn": {"loss_cls", "loss_box", "loss_rpn_cls", "loss_rpn_box"},
}
LEVELS = {"retinanet": 2, "fcos_tv": 1, "ssd": 2, "faster_rcnn": 1}  # P2 + 1 or 2 levels from P3 up


def _synthetic_batch(n: int = 2, size=(128, 160), seed: int = 0):
    data = SyntheticDataset(n, size=size, seed=seed)
    images, targets, _metas = collate_detection([data[i] for i in range(n)])
    return images, targets


def _build(name: str, **overrides):
    torch.manual_seed(0)
    return build({"name": name, **LIGHT, "num_levels": LEVELS[name], **overrides})


def _cls_weight(model) -> torch.Tensor:
    """The final classification conv / linear of each detector."""
    if hasattr(model, "roi_heads"):
        return model.roi_heads.box_predictor.cls_score.weight
    head = model.head.classification_head
    return head.cls_logits.weight if hasattr(head, "cls_logits") else head.module_list[0].weight


def test_registered():
    assert set(NAMES) <= set(list_models())


@pytest.mark.parametrize("name", NAMES)
def test_train_and_eval_formats(name):
    model = _build(name, score_thr=0.0, max_per_img=25)  # score 0 so eval returns boxes to check
    images, targets = _synthetic_batch()  # non-square 128x160, targets carry sky/target_mask too
    assert {"sky", "target_mask"} <= set(targets[0]) and len(targets[0]["boxes"]) > 0
    targets[0]["boxes"] = torch.cat([targets[0]["boxes"], torch.tensor([[5.0, 5.0, 5.0, 9.0], [170.0, 0.0, 180.0, 4.0]])])
    model.train()
    losses = model(images, targets)  # degenerate / outside boxes are dropped, not raised on
    assert set(losses) == LOSS_KEYS[name]
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_box"] > 0
    sum(losses.values()).backward()
    assert _cls_weight(model).grad.abs().sum() > 0
    assert model.backbone.body.conv1.weight.grad.abs().sum() > 0  # the trunk trains through the wrapper

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert isinstance(detections, list) and len(detections) == 2
    h, w = images.shape[-2:]
    for det in detections:
        k = det["boxes"].shape[0]
        assert 0 < k <= 25
        assert det["boxes"].shape == (k, 4) and det["scores"].shape == (k,)
        assert det["labels"].dtype == torch.int64 and (det["labels"] == 1).all()
        boxes = det["boxes"]
        assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])

    model.train()  # no targets in training mode: detections, and training mode is kept
    with torch.no_grad():
        assert len(model(images[:1])) == 1
    assert model.training and model.backbone.body.layer1.training


@pytest.mark.parametrize("name", NAMES)
def test_images_without_boxes_train(name):
    model = _build(name)
    model.train()
    images, targets = _synthetic_batch(size=128)
    mixed = [targets[0], {"boxes": torch.zeros(0, 4)}]
    losses = model(images, mixed)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    sum(losses.values()).backward()

    model.zero_grad()
    losses = model(images[1:], [{"boxes": torch.zeros(0, 4)}])  # a background-only batch
    assert all(torch.isfinite(v) and v.requires_grad for v in losses.values()), losses
    assert losses["loss_box"] == 0
    sum(losses.values()).backward()
    grad = _cls_weight(model).grad
    if name == "ssd":
        # hard-negative mining keeps 3 negatives per positive *per image*: no positives, no loss
        assert losses["loss_cls"] == 0
    else:
        assert losses["loss_cls"] > 0 and grad is not None and grad.abs().sum() > 0


def test_clean_targets_clips_and_drops_degenerate_boxes():
    boxes = torch.tensor([[1.0, 2.0, 4.0, 6.0], [5.0, 5.0, 5.0, 9.0], [-3.0, 1.0, 2.0, 3.0], [40.0, 1.0, 50.0, 3.0], [9.0, 9.0, 8.0, 12.0]])
    (out,) = clean_targets([{"boxes": boxes, "sky": torch.zeros(32, 32)}], (32, 32), label=1)
    assert set(out) == {"boxes", "labels"}
    assert out["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0], [0.0, 1.0, 2.0, 3.0]]
    assert out["labels"].tolist() == [1, 1] and out["labels"].dtype == torch.int64
    (empty,) = clean_targets([{"boxes": torch.zeros(0, 4)}], (32, 32), label=0)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_anchor_sizes_follow_anchor_scale_and_stride():
    cfg = dict(anchor_scale=1.5)
    retina = _build("retinanet", **cfg)
    strides = ModelConfig.from_dict({**LIGHT, "num_levels": 2, **cfg}).level_strides()  # [2, 4, 8]
    assert isinstance(retina.anchor_generator, ExactAnchorGenerator)
    assert retina.anchor_generator.sizes == tuple(tuple(1.5 * s * m for m in (1, 2 ** (1 / 3), 2 ** (2 / 3))) for s in strides)
    assert retina.anchor_generator.aspect_ratios[0] == (0.5, 1.0, 2.0)
    cell = retina.anchor_generator.cell_anchors[0]  # stride 2: not rounded to whole pixels
    widths, heights = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    assert torch.allclose(widths * heights, torch.tensor([3.0 * m for m in (1, 2 ** (1 / 3), 2 ** (2 / 3))] * 3) ** 2)
    assert torch.allclose(heights[:3] / widths[:3], torch.tensor(0.5))
    fcos = _build("fcos_tv", **cfg)
    assert fcos.anchor_generator.sizes == ((3.0,), (6.0,)) and fcos.anchor_generator.num_anchors_per_location() == [1, 1]
    ssd = _build("ssd", **cfg)
    assert ssd.anchor_generator.sizes[0] == (3.0, 3.0 * math.sqrt(2)) and ssd.anchor_generator.num_anchors_per_location() == [6, 6, 6]
    frcnn = _build("faster_rcnn")
    assert frcnn.rpn.anchor_generator.num_anchors_per_location() == [9, 9]
    assert frcnn.roi_heads.box_roi_pool.featmap_names == ["0", "1"]


def test_default_configs_are_the_table_ii_setting():
    faster = ModelConfig.from_dict({"name": "faster_rcnn"})
    assert faster.backbone == "resnet50" and faster.level_strides() == [4, 8, 16, 32, 64]  # P2-P6
    assert ModelConfig.from_dict({"name": "retinanet"}).extra_levels_from == "c5"  # mmdet RetinaNet
    for name in ("fcos_tv", "ssd"):
        assert ModelConfig.from_dict({"name": name}).level_strides() == [8, 16, 32, 64, 128]  # P3-P7


def test_retinanet_r50_parameter_count_matches_table_ii():
    assert count_params(build({"name": "retinanet"}))[0] == 36_329_837  # Table II: 36.33 M


# ---------------------------------------------------------------------- learning
# The overfit keeps the stem max-pool (strides 4/8 instead of 2/4): 4x cheaper per step on CPU,
# which keeps this file under ~90 s on 2 cores; the other tests run the quickstart's stride-2 setup.
@pytest.mark.parametrize(
    "name,steps,lr",
    [("retinanet", 40, 5e-4), ("fcos_tv", 40, 1e-3), ("ssd", 40, 1e-3), ("faster_rcnn", 25, 1e-3)],
)
def test_overfits_two_synthetic_images(name, steps, lr):
    model = _build(name, stem_pool=True)
    images, targets = _synthetic_batch(size=128)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    history = []
    for _ in range(steps):
        total = sum(model(images, targets).values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        history.append(total.item())
    assert history[-1] <= 0.5 * history[0], history


# ---------------------------------------------------------------------- cost
@pytest.mark.parametrize("name", NAMES)
def test_profile_runs_forward_raw(name):
    model = _build(name)
    model.train()
    report = profile(model, (512, 512))
    assert model.training  # profile restores the mode
    assert report.input_size == (1, 512, 512)
    assert report.params == count_params(model)[0] and report.macs > 0
    if name == "faster_rcnn":  # the box head runs on the 1000 fixed proposals
        fc6 = model.roi_heads.box_head.fc6
        assert report.macs > 1000 * fc6.in_features * fc6.out_features
