"""LSKNet-T / LSKNet-S backbones: exact sizes and cost, the LSK module's arithmetic, strides,
gradients, stochastic depth, BN flags, pretrained loading, and FCOS / BAFE-Net on top of them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from irstdlab.datasets.synthetic import SyntheticDataset
from irstdlab.models import ModelConfig, build
from irstdlab.models.backbones import build_backbone
from irstdlab.models.lsknet import DropPath, LSKblock, LSKNetBackbone

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py

# harness/presets/quickstart.yaml's model section with the LSKNet-T backbone (head_depth 1: speed)
QUICK = dict(
    backbone="lsknet_t", fpn_channels=64, head_width=64, head_depth=1, norm_groups=16, stem_pool=False,
    p2=True, num_levels=1, center_sampling=True, lsk_module=False, input_norm="grey", in_channel_mode="stem",
    frozen_bn=False, norm_eval=False,
)
PARAMS = {"lsknet_t": 3_990_190, "lsknet_s": 13_840_892}  # backbone only, 3 input channels


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------- size and cost
@pytest.mark.parametrize("name, millions", [("lsknet_t", 3.99), ("lsknet_s", 13.84)])
def test_parameter_counts_match_the_reference(name, millions):
    bb = LSKNetBackbone(name)
    assert _count(bb) == PARAMS[name]
    assert round(PARAMS[name] / 1e6, 2) == millions  # counted on zcablii/LSKNet's backbone, no classifier
    # one input channel: the 7x7 stem loses 2 of its 3 kernel planes
    assert _count(LSKNetBackbone(name, in_channels=1)) == PARAMS[name] - 2 * 49 * bb.out_channels[0]


@pytest.mark.parametrize("name, gmacs", [("lsknet_t", 4.66), ("lsknet_s", 13.5)])
def test_gmacs_at_512(name, gmacs):
    from irstdlab.harness.complexity import profile

    report = profile(LSKNetBackbone(name), (512, 512))
    print(f"{name}: {report}")
    assert report.params == PARAMS[name]
    assert report.gmacs == pytest.approx(gmacs, rel=0.02)  # conv/linear MACs of zcablii/LSKNet's backbone: T 4.66, S 13.5 at 512²


def test_reference_parameter_names():
    keys = set(LSKNetBackbone("lsknet_t").state_dict())
    block = "block2.1."
    sgu = block + "attn.spatial_gating_unit."
    for key in [
        "patch_embed1.proj.weight", "patch_embed1.proj.bias", "patch_embed4.norm.running_var", "norm3.weight",
        block + "norm1.weight", block + "norm2.bias", block + "layer_scale_1", block + "layer_scale_2",
        block + "attn.proj_1.weight", block + "attn.proj_2.bias", block + "mlp.fc1.weight",
        block + "mlp.dwconv.dwconv.weight", block + "mlp.fc2.bias",
        *(sgu + c + ".weight" for c in ("conv0", "conv_spatial", "conv1", "conv2", "conv_squeeze", "conv")),
    ]:
        assert key in keys, key
    assert {k.split(".")[0] for k in keys} == {f"{p}{i}" for p in ("patch_embed", "block", "norm") for i in range(1, 5)}


# ---------------------------------------------------------------------- arithmetic
def test_lsk_module_matches_the_formula():
    torch.manual_seed(0)
    lsk = LSKblock(8)
    for p in lsk.parameters():  # non-zero biases so that every term is exercised
        torch.nn.init.normal_(p, 0, 0.3)
    x = torch.randn(2, 8, 12, 12)
    u1 = F.conv2d(x, lsk.conv0.weight, lsk.conv0.bias, padding=2, groups=8)
    u2 = F.conv2d(u1, lsk.conv_spatial.weight, lsk.conv_spatial.bias, padding=9, dilation=3, groups=8)
    t1, t2 = lsk.conv1(u1), lsk.conv2(u2)
    assert t1.shape[1] == 4 and lsk.conv_spatial.kernel_size == (7, 7) and lsk.conv_spatial.dilation == (3, 3)
    both = torch.cat([t1, t2], 1)
    a = torch.stack([both.mean(1), both.max(1).values], 1)
    m = torch.sigmoid(F.conv2d(a, lsk.conv_squeeze.weight, lsk.conv_squeeze.bias, padding=3))
    expected = x * lsk.conv(m[:, :1] * t1 + m[:, 1:] * t2)
    assert torch.allclose(lsk(x), expected, atol=1e-5)


def test_block_residuals_and_layer_scale_init():
    bb = LSKNetBackbone("lsknet_t", drop_path_rate=0.0, drop_rate=0.0).eval()
    block = bb.block1[0]
    assert torch.equal(block.layer_scale_1, torch.full((32,), 1e-2))
    assert torch.equal(block.layer_scale_2, block.layer_scale_1)
    attn, mlp = block.attn, block.mlp
    x = torch.randn(1, 32, 8, 8)
    n = block.norm1(x)
    y = x + 1e-2 * (attn.proj_2(attn.spatial_gating_unit(F.gelu(attn.proj_1(n)))) + n)  # inner residual on N
    y = y + 1e-2 * mlp.fc2(F.gelu(mlp.dwconv.dwconv(mlp.fc1(block.norm2(y)))))
    assert torch.allclose(block(x), y, atol=1e-5)


def test_init_follows_the_reference():
    bb = LSKNetBackbone("lsknet_s")
    w = bb.block3[0].mlp.fc1.weight  # 1x1, 320 -> 1280: std sqrt(2 / 1280)
    assert abs(w.std().item() - (2 / 1280) ** 0.5) < 0.05 * (2 / 1280) ** 0.5
    dw = bb.block3[0].attn.spatial_gating_unit.conv0.weight  # depth-wise 5x5: fan_out 25
    assert abs(dw.std().item() - (2 / 25) ** 0.5) < 0.05 * (2 / 25) ** 0.5
    assert bb.block3[0].mlp.fc1.bias.abs().sum() == 0 and bb.patch_embed1.proj.bias.abs().sum() == 0
    assert torch.equal(bb.norm4.weight, torch.ones(512)) and bb.norm4.eps == 1e-6


# ---------------------------------------------------------------------- geometry and gradients
@pytest.mark.parametrize("name", ["lsknet_t", "lsknet_s"])
@pytest.mark.parametrize("stem_pool, size", [(True, 128), (False, 64)])
def test_output_shapes_channels_and_strides(name, stem_pool, size):
    cfg = ModelConfig(backbone=name, stem_pool=stem_pool)
    bb = build_backbone(cfg, in_channels=3)
    assert isinstance(bb, LSKNetBackbone)
    assert bb.strides == cfg.backbone_strides() == ([4, 8, 16, 32] if stem_pool else [2, 4, 8, 16])
    assert bb.out_channels == {"lsknet_t": [32, 64, 160, 256], "lsknet_s": [64, 128, 320, 512]}[name]
    assert bb.patch_embed1.proj.stride == ((4, 4) if stem_pool else (2, 2)) and bb.patch_embed1.proj.kernel_size == (7, 7)
    with torch.no_grad():
        feats = bb.eval()(torch.randn(1, 3, size, size))
    assert [tuple(f.shape) for f in feats] == [(1, c, size // s, size // s) for c, s in zip(bb.out_channels, bb.strides)]
    # every output is LayerNorm-ed over channels (weight 1, bias 0 at init)
    assert all(f.mean(1).abs().max() < 1e-4 for f in feats)


def test_forward_backward_finite_grads_on_every_trainable_parameter():
    torch.manual_seed(0)
    bb = LSKNetBackbone("lsknet_t", in_channels=1, stem_pool=False, drop_path_rate=0.0, drop_rate=0.0)
    bb.train()
    feats = bb(torch.randn(2, 1, 64, 64))
    # a random linear read-out: sum(f**2) would be ~constant behind the stage LayerNorms
    sum((f * torch.randn_like(f)).mean() for f in feats).backward()
    for name, p in bb.named_parameters():
        assert p.requires_grad and p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_drop_path_schedule_and_eval_identity():
    bb = LSKNetBackbone("lsknet_t", drop_path_rate=0.3)
    rates = [blk.drop_path.p for i in range(1, 5) for blk in getattr(bb, f"block{i}")]
    assert len(rates) == 13 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert rates == pytest.approx(torch.linspace(0, 0.3, 13).tolist())
    assert all(b.mlp.drop.p == 0.1 for i in range(1, 5) for b in getattr(bb, f"block{i}"))
    drop = DropPath(0.5)
    x = torch.randn(64, 3, 2, 2)
    assert torch.equal(drop.eval()(x), x)
    torch.manual_seed(0)
    y = drop.train()(x)
    kept = (y != 0).flatten(1).all(1)
    assert 0 < kept.sum() < 64 and (y[~kept] == 0).all()  # whole samples dropped
    assert torch.allclose(y[kept], 2 * x[kept])  # the rest rescaled by 1 / keep
    bb.eval()  # the whole backbone is deterministic in eval mode
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(bb(x), bb(x)))


def test_norm_eval_and_frozen_bn_mean_what_they_mean_for_resnet():
    bb = LSKNetBackbone("lsknet_t", frozen_bn=True, norm_eval=True)
    bb.train()
    bns = [m for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 4 + 2 * 13  # one per patch embed, two per block
    assert all(not m.training for m in bns) and not any(p.requires_grad for m in bns for p in m.parameters())
    assert bb.norm1.weight.requires_grad and bb.patch_embed1.proj.weight.requires_grad
    plain = LSKNetBackbone("lsknet_t")
    plain.train()
    assert all(m.training and m.weight.requires_grad for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))


# ---------------------------------------------------------------------- pretrained weights
def test_pretrained_round_trip_and_errors(tmp_path):
    torch.manual_seed(0)
    reference = LSKNetBackbone("lsknet_t")
    with torch.no_grad():  # make running stats and BN affines differ from a fresh init
        reference.train()(torch.randn(2, 3, 64, 64))
        reference.block2[1].norm1.weight.add_(0.5)
    path = tmp_path / "lsk_t.pth"
    torch.save(reference.state_dict(), path)
    loaded = LSKNetBackbone("lsknet_t", pretrained=str(path))
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key

    # the released-file layout: a 'state_dict' key plus a classifier head
    wrapped = tmp_path / "wrapped.pth"
    head = {"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)}
    torch.save({"state_dict": {**reference.state_dict(), **head}}, wrapped)
    cfg = ModelConfig(backbone="lsknet_t", pretrained=str(wrapped), stem_pool=True)
    grey = build_backbone(cfg, in_channels=1)
    assert grey.patch_embed1.proj.in_channels == 1
    assert torch.allclose(grey.patch_embed1.proj.weight, reference.patch_embed1.proj.weight.sum(1, keepdim=True))
    assert torch.equal(grey.block4[1].mlp.fc2.weight, reference.block4[1].mlp.fc2.weight)

    with pytest.raises(ValueError, match="model.pretrained: .*missing.pth: no such file"):
        LSKNetBackbone("lsknet_t", pretrained=str(tmp_path / "missing.pth"))
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.pretrained: .*corrupt.pth: not a loadable"):
        LSKNetBackbone("lsknet_t", pretrained=str(tmp_path / "corrupt.pth"))
    with pytest.raises(ValueError, match="model.pretrained: .*lsk_t.pth: does not match"):  # T weights, S net
        LSKNetBackbone("lsknet_s", pretrained=str(path))
    torch.save({"patch_embed1.proj.weight": reference.patch_embed1.proj.weight}, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"model.pretrained: .*partial.pth: does not match LSKNetBackbone \(\d+ missing"):
        LSKNetBackbone("lsknet_t", pretrained=str(tmp_path / "partial.pth"))
    torch.save({**reference.state_dict(), "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="extra.pth: .*1 unexpected keys, e.g. extra.weight"):
        LSKNetBackbone("lsknet_t", pretrained=str(tmp_path / "extra.pth"))


# ---------------------------------------------------------------------- detectors on top
def _synthetic_batch(n: int, size: int = 128) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    samples = [SyntheticDataset(n, size=size, seed=0)[i] for i in range(n)]
    images = torch.stack([torch.from_numpy(s.image).float()[None] for s in samples])  # raw grey 0-255
    targets = [{"boxes": torch.from_numpy(s.boxes), "sky": torch.from_numpy(s.sky)} for s in samples]
    assert all(len(t["boxes"]) > 0 for t in targets)
    return images, targets


@pytest.mark.parametrize("detector", ["fcos", "bafenet"])
def test_detector_with_lsknet_t_trains_one_step(detector):
    torch.manual_seed(0)
    model = build(ModelConfig.from_dict({"name": detector, **QUICK}))
    assert isinstance(model.backbone, LSKNetBackbone) and model.backbone.in_channels == 1
    images, targets = _synthetic_batch(1)
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total), losses
    total.backward()
    grad = model.backbone.patch_embed1.proj.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 1 and set(detections[0]) >= {"boxes", "scores", "labels"}


def test_fcos_lsknet_t_overfits_two_synthetic_images():
    torch.manual_seed(0)
    images, targets = _synthetic_batch(2)
    model = build(ModelConfig.from_dict({"name": "fcos", **QUICK}))
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    history = []
    for _ in range(12):  # ~1 s each on one core; the loss is down ~70% by then
        total = sum(model(images, targets).values())
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        history.append(total.item())
    assert all(map(torch.isfinite, map(torch.tensor, history))), history
    assert history[-1] <= 0.5 * history[0], history
