"""BAFE-Net end to end: every ablation axis trains and predicts, exact reference parameter
counts and MACs, the segmentation loss as the reference computes it, and an overfit run."""

from __future__ import annotations

import math

import pytest
import torch

from irstdlab.harness.complexity import profile
from irstdlab.models import build
from irstdlab.models.bafenet import BAFEHead, BAFENet, segmentation_loss
from irstdlab.models.exchange import ChannelExchange, SpatialExchange
from irstdlab.models.fcos import FCOS

# Light head for the axes that do not need width 256. The backbone is frozen
# (frozen_stages=4: no backward through it) where the test is about the head: 3x faster.
LIGHT = dict(name="bafenet", backbone="resnet18", num_levels=3, fpn_channels=32, head_width=32,
             norm_groups=8, head_depth=1, adapter_hidden=8)
FROZEN = {**LIGHT, "frozen_stages": 4}


def _batch(size: int = 256):
    """Two images: one with targets and sky padding (255) at the bottom, one with zero boxes."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 1, size, size, generator=g) * 60 + 40
    boxes = torch.tensor([[20.0, 30.0, 26.0, 35.0], [100.0, 40.0, 140.0, 90.0], [60.0, 60.0, 63.0, 64.0]])
    for x0, y0, x1, y1 in boxes.int().tolist():
        images[0, 0, y0:y1, x0:x1] = 230
    sky0 = torch.zeros(size, size, dtype=torch.uint8)
    sky0[: size // 2] = 1
    sky0[size - size // 8 :] = 255  # padding
    sky1 = torch.ones(size, size, dtype=torch.uint8)
    targets = [{"boxes": boxes, "sky": sky0}, {"boxes": torch.zeros(0, 4), "sky": sky1}]
    return images, targets


def _train_and_predict(cfg: dict, size: int = 256) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = build(cfg)
    images, targets = _batch(size)
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert all(torch.isfinite(v) for v in losses.values()), losses
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert isinstance(out, list) and len(out) == 2
    for det in out:
        k = det["boxes"].shape[0]
        assert det["boxes"].shape == (k, 4) and det["scores"].shape == (k,) and det["labels"].shape == (k,)
        assert det["labels"].dtype == torch.int64 and det["boxes"].dtype == torch.float32
        if k:
            assert float(det["boxes"].min()) >= 0 and float(det["boxes"].max()) <= size
    return model, losses


AXES = [
    {"seg_head": False},
    *({"exchange": e} for e in ("none", "channel", "spatial", "channel+spatial", "spatial+channel")),
    *({"selection": s} for s in ("random", "fixed", "dynamic_st")),  # "dynamic" is the default
    *({"p": p} for p in (1 / 32, 1.0)),  # 1/2 is the default
    {"adapter": "none"},
    {"lsk_module": False},
    {"exchange": "spatial+channel", "selection": "dynamic_st", "adapter": "none", "lsk_module": False, "p": 0.25},
]


@pytest.mark.parametrize("change", AXES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_every_axis_trains_and_predicts(change):
    cfg = {**FROZEN, **change}
    model, losses = _train_and_predict(cfg)
    seg = cfg.get("seg_head", True)
    assert set(losses) == {"loss_cls", "loss_box", "loss_centerness"} | ({"loss_seg"} if seg else set())
    assert isinstance(model, BAFENet if seg else FCOS)
    if not seg:
        assert not isinstance(model.head, BAFEHead)
        return
    head = model.head
    assert (head.lsk is not None) == cfg.get("lsk_module", True)
    kinds = [type(s) for s in head.exchange.steps]
    expected = {"none": [], "channel": [ChannelExchange], "spatial": [SpatialExchange]}
    exchange = cfg.get("exchange", "channel")
    want = [t for part in exchange.split("+") for t in expected[part]]
    assert kinds == want
    # no module defined and never used: every trainable head parameter got a gradient,
    # except the dynamic scorer, which (as released) receives none
    frozen_scorer = cfg.get("selection", "dynamic") == "dynamic"
    for name, p in head.named_parameters():
        if ".scorer." in name and frozen_scorer:
            assert p.grad is None, name
        else:
            assert p.grad is not None, name
    if cfg.get("selection") == "dynamic_st" and "channel" in exchange:
        scorer_grad = sum(float(p.grad.abs().sum()) for n, p in head.named_parameters() if ".scorer." in n)
        assert scorer_grad > 0


@pytest.mark.parametrize("backbone", ["resnet34", "resnet50", "resnet101"])
def test_backbones_train_and_predict(backbone):
    _train_and_predict({**LIGHT, "backbone": backbone}, size=128)


def test_reference_geometry_at_512():
    """The paper's input size (P3-P5 = 64/32/16 px maps); full width is covered by the count test."""
    model, losses = _train_and_predict(FROZEN, size=512)
    assert float(losses["loss_seg"].detach()) > 0
    assert [t.shape[-1] for t in model.forward_raw(torch.zeros(1, 1, 512, 512))["seg"]] == [64, 32, 16]


def test_parameter_counts_and_macs_match_the_reference():
    with torch.device("meta"):  # counting needs shapes only: no memory, no compute
        model = build({"name": "bafenet", "backbone": "resnet50", "num_levels": 3, "p": 0.5, "adapter_hidden": 64})
    head = model.head

    def n(module):
        return sum(p.numel() for p in module.parameters())

    # the *used* parameters of the released head (GrokCV/BAFE-Net fcos_changer_seg_head.py), counted
    assert n(head.cls_tower) == n(head.reg_tower) == n(head.seg_tower) == 2_361_344
    assert n(head.convs_cls) == n(head.convs_seg) == 590_976
    assert n(head.lsk) == 118_470
    assert n(head.exchange) == 135_046
    assert n(head) == 8_535_638
    report = profile(model, (512, 512))
    assert report.params == 34_732_182
    assert math.isclose(report.gmacs, 72.0, rel_tol=0.03), report


def test_segmentation_loss_uses_top_left_of_each_cell_and_averages_over_all_elements():
    g = torch.Generator().manual_seed(1)
    sky = torch.randint(0, 2, (2, 1, 32, 32), generator=g, dtype=torch.uint8)
    sky[1, 0, 20:] = 255
    logits = [torch.randn(2, 1, 32 // s, 32 // s, generator=g) for s in (8, 16, 32)]
    total, count = 0.0, 0
    for s, lg in zip((8, 16, 32), logits):
        lab = sky[:, :, ::s, ::s].float()  # legacy nearest: pixel floor(i * s)
        for b in range(2):
            for i in range(lab.shape[2]):
                for j in range(lab.shape[3]):
                    count += 1
                    y = float(lab[b, 0, i, j])
                    if y == 255:
                        continue
                    x = float(lg[b, 0, i, j])
                    total += max(x, 0) - x * y + math.log1p(math.exp(-abs(x)))
    assert math.isclose(float(segmentation_loss(logits, sky)), total / count, rel_tol=1e-5)


def test_missing_or_mis_sized_sky_is_a_clear_error():
    model = build(LIGHT)
    images, targets = _batch(64)
    del targets[1]["sky"]
    with pytest.raises(ValueError, match=r"targets\[1\]: bafenet needs a 'sky' map"):
        model(images, targets)
    images, targets = _batch(64)
    targets[0]["sky"] = targets[0]["sky"][:32]
    with pytest.raises(ValueError, match=r"targets\[0\]\['sky'\]: shape \(32, 64\)"):
        model(images, targets)


def test_overfits_two_synthetic_images():
    """30 steps on 2 images at 128 px with a stride-4 level (P2) and P3: the total loss halves."""
    torch.manual_seed(0)
    cfg = {**FROZEN, "num_levels": 1, "p2": True, "input_norm": "grey", "regress_ranges": ((-1.0, 32.0), (32.0, 1e8))}
    model = build(cfg)
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 1, 128, 128, generator=g) * 30 + 50
    sky = torch.zeros(2, 128, 128, dtype=torch.uint8)
    sky[:, :70] = 1
    images[:, :, 70:] += 60  # brighter ground
    boxes = [torch.tensor([[10.0, 10.0, 15.0, 15.0], [40.0, 20.0, 44.0, 24.0], [90.0, 50.0, 96.0, 55.0]]),
             torch.tensor([[30.0, 30.0, 34.0, 35.0], [100.0, 12.0, 105.0, 16.0]])]
    for b, bx in enumerate(boxes):
        for x0, y0, x1, y1 in bx.int().tolist():
            images[b, 0, y0:y1, x0:x1] = 250
    targets = [{"boxes": bx, "sky": sky[b]} for b, bx in enumerate(boxes)]
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    history = []
    for _ in range(30):
        loss = sum(model(images, targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] <= 0.5 * history[0], history
