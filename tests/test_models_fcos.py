"""Reference FCOS: forward/backward variants, exact parameter counts, assignment rules,
inference order of operations, losses, and a short overfit on synthetic blobs."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from irstdlab.models import ModelConfig, build, list_models
from irstdlab.models.backbones import ResNetBackbone
from irstdlab.models.fcos import FCOSHead
from irstdlab.models.fcos_loss import aligned_iou, fcos_losses
from irstdlab.models.fcos_targets import assign, centerness_target, make_points
from irstdlab.models.preprocess import CAFFE_MEAN, InputNormalizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

LIGHT = dict(backbone="resnet18", fpn_channels=64, head_width=64, head_depth=2, norm_groups=16)


def _batch(size: int) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(size)
    images = (torch.rand(2, 1, size, size, generator=g) * 255).round()
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [100.0, 100.0, 103.0, 104.0], [30.0, 150.0, 160.0, 250.0]])},
        {"boxes": torch.zeros(0, 4)},  # an image without targets
    ]
    return images, targets


def _train_and_eval(cfg: dict, size: int) -> None:
    model = build({**cfg, "score_thr": 0.0})  # score_thr 0 so the eval format check sees boxes
    images, targets = _batch(size)
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_cls", "loss_box", "loss_centerness"}
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_box"] > 0  # the boxes above do get positives
    sum(losses.values()).backward()
    assert model.head.conv_reg.weight.grad is not None and model.head.conv_reg.weight.grad.abs().sum() > 0
    assert model.backbone.conv1.weight.grad is not None  # convs train, stem included
    assert model.backbone.bn1.weight.grad is None  # BN affine frozen (reference)

    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert isinstance(detections, list) and len(detections) == 2
    for det in detections:
        k = det["boxes"].shape[0]
        assert 0 < k <= 100
        assert det["boxes"].shape == (k, 4) and det["scores"].shape == (k,) and det["labels"].dtype == torch.int64
        assert (det["boxes"] >= 0).all() and (det["boxes"][:, 2] <= size).all() and (det["boxes"][:, 3] <= size).all()
        assert (det["boxes"][:, 2:] > det["boxes"][:, :2]).all()
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])


def test_registry_lists_fcos():
    assert "fcos" in list_models()


@pytest.mark.parametrize(
    "overrides",
    [
        dict(num_levels=5),
        dict(num_levels=3),
        dict(num_levels=3, p2=True, box_loss="giou"),
        dict(num_levels=3, stem_pool=False, center_sampling=True, in_channel_mode="stem", input_norm="grey"),
        dict(num_levels=4, extra_levels_from="c5", input_norm="imagenet", caffe_style_stride=False),
    ],
    ids=["p3-p7", "p3-p5", "p2-giou", "nopool-cs-stem", "c5-extra"],
)
def test_forward_backward_256(overrides):
    _train_and_eval({**LIGHT, **overrides}, 256)


def test_forward_backward_default_head_256():
    _train_and_eval({"backbone": "resnet18", "num_levels": 3}, 256)


def test_forward_backward_512():
    _train_and_eval({**LIGHT, "num_levels": 5}, 512)


def test_empty_batch_gives_zero_box_losses_with_grad():
    model = build({**LIGHT, "num_levels": 3})
    model.train()
    losses = model(torch.full((1, 1, 64, 64), 50.0), [{"boxes": torch.zeros(0, 4)}])
    assert losses["loss_box"].item() == 0 and losses["loss_centerness"].item() == 0
    assert losses["loss_box"].requires_grad and losses["loss_cls"] > 0
    sum(losses.values()).backward()
    assert model.head.conv_cls.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------- sizes and cost
@pytest.fixture(scope="module")
def fcos_r50():
    return build({"name": "fcos", "backbone": "resnet50", "num_levels": 5})


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_fcos_r50_parameter_counts_match_table_ii(fcos_r50):
    # 23,508,032 trunk + 2,688,512 FPN + 1,180,160 P6/P7 + 4,736,518 head convs + 5 Scales
    assert _count(fcos_r50.backbone) == 23_508_032
    assert _count(fcos_r50.neck) == 2_688_512 + 1_180_160
    assert _count(fcos_r50.head.scales) == 5  # one learnable Scale per level: the "+3" (+5 vs 2)
    assert _count(fcos_r50) == 32_113_227
    three = build({"backbone": "resnet50", "num_levels": 3})
    assert _count(three) == 30_933_065
    frozen = [p for m in fcos_r50.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    trainable = sum(p.numel() for p in fcos_r50.parameters() if p.requires_grad)
    assert trainable == 32_113_227 - sum(p.numel() for p in frozen) and not any(p.requires_grad for p in frozen)


def test_fcos_r50_gmacs_at_512(fcos_r50):
    from irstdlab.harness.complexity import profile

    report = profile(fcos_r50, (512, 512))
    assert report.params == 32_113_227
    assert report.gmacs == pytest.approx(50.291, rel=0.03)  # paper Table II: 50.291 G


# ---------------------------------------------------------------------- backbone and preprocessing
def test_caffe_style_moves_the_stride_to_the_1x1(fcos_r50):
    block = fcos_r50.backbone.layer2[0]
    assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    tv = ResNetBackbone("resnet50", caffe_style_stride=False)
    assert tv.layer2[0].conv1.stride == (1, 1) and tv.layer2[0].conv2.stride == (2, 2)
    assert _count(tv) == 23_508_032
    feats = tv(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [256, 512, 1024, 2048] and [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_backbone_freezing_and_stem_pool():
    bb = ResNetBackbone("resnet18", frozen_stages=1, stem_pool=False)
    bb.train()
    assert all(not m.training for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d))  # norm_eval
    assert not bb.conv1.weight.requires_grad and not bb.layer1[0].conv1.weight.requires_grad
    assert bb.layer2[0].conv1.weight.requires_grad
    feats = bb(torch.zeros(1, 3, 64, 64))
    assert bb.strides == [2, 4, 8, 16] and [64 // f.shape[-1] for f in feats] == bb.strides
    plain = ResNetBackbone("resnet18", frozen_bn=False, norm_eval=False)
    plain.train()
    assert plain.bn1.training and plain.bn1.weight.requires_grad


def test_pretrained_state_dict_and_single_channel_stem(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    bb = ResNetBackbone("resnet18", pretrained=str(path))
    assert torch.equal(bb.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)
    stem = ResNetBackbone("resnet18", pretrained=str(path), in_channels=1)
    assert stem.conv1.in_channels == 1
    assert torch.allclose(stem.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    with pytest.raises(ValueError, match="model.pretrained: .*no such file"):
        ResNetBackbone("resnet18", pretrained=str(tmp_path / "missing.pth"))
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="model.pretrained: .*does not match"):
        ResNetBackbone("resnet18", pretrained=str(tmp_path / "bad.pth"))


def test_input_normalisation_modes():
    x = torch.full((1, 1, 2, 2), 200.0)
    caffe = InputNormalizer("caffe", "replicate")(x)
    assert caffe.shape == (1, 3, 2, 2)
    assert torch.allclose(caffe[0, :, 0, 0], 200.0 - torch.tensor(CAFFE_MEAN))
    grey = InputNormalizer("grey", "stem")(x)
    assert grey.shape == (1, 1, 2, 2) and torch.allclose(grey, torch.tensor(1.125))
    with pytest.raises(ValueError, match="images: expected"):
        InputNormalizer()(torch.zeros(1, 3, 4, 4))


# ---------------------------------------------------------------------- assignment
def _points(sizes, strides, ranges):
    return make_points(sizes, strides, ranges)


def test_points_are_cell_centres_row_major():
    pts = _points([(2, 3)], [8], [(-1, 64)])
    expected = torch.tensor([[4, 4], [12, 4], [20, 4], [4, 12], [12, 12], [20, 12]], dtype=torch.float32)
    assert torch.equal(pts.xy, expected)


def test_strictly_inside_rule():
    pts = _points([(4, 4)], [8], [(-1, 64)])  # points at 4, 12, 20, 28
    on_edge = torch.tensor([[4.0, 4.0, 13.0, 13.0]])  # points (4, y) sit ON the left/top edge
    idx, dist = assign(pts, on_edge)
    assert idx.tolist().count(0) == 1 and pts.xy[idx == 0].tolist() == [[12.0, 12.0]]
    assert dist[idx == 0].tolist() == [[8.0, 8.0, 1.0, 1.0]]
    idx, _ = assign(pts, on_edge - torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert int((idx == 0).sum()) == 4  # now (4,4),(12,4),(4,12),(12,12) are strictly inside


def test_ties_go_to_the_smallest_box():
    pts = _points([(4, 4)], [8], [(-1, 64)])
    big, small = [0.0, 0.0, 30.0, 30.0], [10.0, 10.0, 14.0, 14.0]
    for boxes, small_index in (([big, small], 1), ([small, big], 0)):
        idx, _ = assign(pts, torch.tensor(boxes))
        at_12_12 = int(((pts.xy == torch.tensor([12.0, 12.0])).all(1)).nonzero())
        assert idx[at_12_12] == small_index
        assert (idx == 1 - small_index).sum() == 15  # the other 15 points inside big only


def test_regress_ranges_pick_the_level():
    cfg = ModelConfig(num_levels=3)
    assert cfg.level_regress_ranges() == [(-1, 64), (64, 128), (128, 256)]
    assert ModelConfig(num_levels=5).level_regress_ranges()[-1] == (512, math.inf)
    pts = _points([(16, 16), (8, 8), (4, 4)], [8, 16, 32], cfg.level_regress_ranges())
    box = torch.tensor([[0.0, 0.0, 120.0, 120.0]])  # max distance up to ~116 at P3 points
    idx, dist = assign(pts, box)
    level = torch.repeat_interleave(torch.arange(3), torch.tensor(pts.num_per_level))
    pos = idx == 0
    assert set(level[pos].tolist()) == {0, 1}  # nothing reaches P5's (128, 256]
    reach = dist[pos].amax(1)
    assert (reach[level[pos] == 0] <= 64).all() and (reach[level[pos] == 1] >= 64).all()  # bounds inclusive
    huge = torch.tensor([[0.0, 0.0, 600.0, 600.0]])  # every max distance > 256: capped host ignores it
    assert (assign(pts, huge)[0] < 0).all()


def test_tiny_box_between_stride8_points_has_no_positive():
    cfg = ModelConfig(num_levels=3)
    pts = _points([(8, 8), (4, 4), (2, 2)], cfg.level_strides(), cfg.level_regress_ranges())
    tiny = torch.tensor([[5.0, 5.0, 8.0, 8.0]])  # 3x3 between the P3 points 4 and 12
    assert (assign(pts, tiny)[0] < 0).all()
    assert (assign(pts, tiny, center_sampling=True)[0] < 0).all()  # mmdet clips the centre region to the box
    fine = ModelConfig(num_levels=3, p2=True, stem_pool=False)  # P2 at stride 2: points at 1, 3, 5, 7...
    pts = _points([(32, 32), (16, 16), (8, 8), (4, 4)], fine.level_strides(), fine.level_regress_ranges())
    idx, dist = assign(pts, tiny)
    assert int((idx == 0).sum()) == 1 and pts.xy[idx == 0].tolist() == [[7.0, 7.0]]


def test_center_sampling_restricts_large_boxes():
    pts = _points([(8, 8)], [8], [(-1, 64)])
    box = torch.tensor([[0.0, 0.0, 64.0, 64.0]])
    assert int((assign(pts, box)[0] == 0).sum()) == 64
    idx, _ = assign(pts, box, center_sampling=True, center_sample_radius=1.5)  # |p - 32| < 12
    assert pts.xy[idx == 0].unique().tolist() == [28.0, 36.0] and int((idx == 0).sum()) == 4


def test_centerness_target_values():
    d = torch.tensor([[2.0, 2.0, 2.0, 2.0], [1.0, 3.0, 3.0, 1.0]])
    assert torch.allclose(centerness_target(d), torch.tensor([1.0, 1.0 / 3.0]))


# ---------------------------------------------------------------------- losses
def test_losses_normalisation_on_hand_inputs():
    xy = torch.tensor([[10.0, 10.0], [30.0, 30.0]])
    positive = torch.tensor([[True, False]])
    target = torch.tensor([[[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]])
    cls = torch.tensor([[0.0, -2.0]])
    perfect = fcos_losses(cls, target.clone(), torch.tensor([[5.0, 0.0]]), xy, positive, target)
    assert perfect["loss_box"].item() == pytest.approx(0.0, abs=1e-5)
    half = target.clone()
    half[0, 0] = torch.tensor([2.0, 2.0, 0.0, 2.0])  # predicted box [8,8,10,12] vs [8,8,12,12]: IoU 0.5
    losses = fcos_losses(cls, half, torch.tensor([[0.0, 0.0]]), xy, positive, target, box_kind="iou")
    assert losses["loss_box"].item() == pytest.approx(math.log(2.0), rel=1e-5)
    assert losses["loss_centerness"].item() == pytest.approx(math.log(2.0), rel=1e-5)  # BCE(0 logit, 1)
    p0, p1 = torch.sigmoid(torch.tensor(0.0)), torch.sigmoid(torch.tensor(-2.0))
    focal = 0.25 * (1 - p0) ** 2 * -torch.log(p0) + 0.75 * p1**2 * -torch.log(1 - p1)
    assert losses["loss_cls"].item() == pytest.approx(focal.item(), rel=1e-5)  # / num_pos = 1
    giou = fcos_losses(cls, half, torch.tensor([[0.0, 0.0]]), xy, positive, target, box_kind="giou")
    assert giou["loss_box"].item() == pytest.approx(0.5, rel=1e-5)


def test_aligned_iou_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(20, 4, generator=g) * 10
    b = torch.rand(20, 4, generator=g) * 10
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    assert torch.allclose(aligned_iou(a, b), torchvision.ops.box_iou(a, b).diagonal(), atol=1e-6)


# ---------------------------------------------------------------------- inference
def test_postprocess_thresholds_cls_before_centerness():
    cfg = ModelConfig(num_levels=1, score_thr=0.05, nms_thr=0.5)
    head = FCOSHead(8, [8], cfg.level_regress_ranges(), score_thr=cfg.score_thr, nms_thr=cfg.nms_thr)

    def logit(p):
        return math.log(p / (1 - p))

    cls = torch.full((1, 1, 4, 4), -10.0)
    ctr = torch.full((1, 1, 4, 4), 0.0)
    reg = torch.full((1, 4, 4, 4), 2.0)
    cls[0, 0, 0, 0], ctr[0, 0, 0, 0] = logit(0.06), logit(0.1)  # kept: 0.06 > thr, final 0.006
    cls[0, 0, 2, 2], ctr[0, 0, 2, 2] = logit(0.04), logit(0.99)  # dropped: 0.04 < thr before x ctr
    cls[0, 0, 3, 3], cls[0, 0, 3, 2] = logit(0.9), logit(0.8)  # overlapping pair: NMS keeps one
    reg[0, :, 3, 3] = torch.tensor([6.0, 6.0, 6.0, 6.0])
    reg[0, :, 3, 2] = torch.tensor([1.0, 6.0, 14.0, 6.0])  # [19,22,34,34] from point (20, 28): IoU 0.77
    (det,) = head.postprocess({"cls": [cls], "reg": [reg], "ctr": [ctr]}, image_size=(32, 32))
    assert det["scores"].tolist() == pytest.approx([0.9 * 0.5, 0.06 * 0.1])
    assert det["boxes"].tolist() == [[22.0, 22.0, 32.0, 32.0], [2.0, 2.0, 6.0, 6.0]]  # clamped to 32
    assert det["labels"].tolist() == [1, 1]


# ---------------------------------------------------------------------- learning
def test_overfits_two_synthetic_images_in_30_steps():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    size = 96  # small to stay fast; the stride-2 level still has 48x48 points
    images = (40 + 10 * torch.randn(2, 1, size, size, generator=g)).clamp(0, 255)
    targets = []
    for b in range(2):
        boxes = []
        for _ in range(3):
            # 4x4 blobs at odd corners: the stride-2 point at each centre is the one positive,
            # with centerness target 1, so every loss term can approach 0
            x, y = (2 * torch.randint(2, size // 2 - 6, (2,), generator=g) + 1).tolist()
            images[b, 0, y : y + 4, x : x + 4] = 220.0
            boxes.append([x, y, x + 4, y + 4])
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32)})
    model = build({**LIGHT, "num_levels": 1, "p2": True, "stem_pool": False})  # P2/P3 at strides 2/4
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    history = []
    for _ in range(30):
        total = sum(model(images, targets).values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        history.append(total.item())
    assert history[-1] <= 0.5 * history[0], history


def test_losses_under_a_process_group(tmp_path):
    # the DDP path: num_pos and the centerness sum go through all_reduce (one gloo worker here)
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        xy = torch.tensor([[10.0, 10.0], [30.0, 30.0]])
        target = torch.tensor([[[2.0, 2.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]]])
        cls = torch.tensor([[0.0, -2.0]])
        for positive in (torch.tensor([[True, False]]), torch.tensor([[False, False]])):
            losses = fcos_losses(cls, target.clone(), torch.zeros(1, 2), xy, positive, target)
            assert all(torch.isfinite(v) for v in losses.values())
    finally:
        dist.destroy_process_group()
