"""BAFE-Net's exchange pieces against straightforward per-sample re-implementations written here
from the released head (GrokCV/BAFE-Net deepir/models/dense_heads/fcos_changer_seg_head.py), plus gradient
flow of the selectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from irstdlab.models.exchange import (
    SELECTIONS,
    ChannelExchange,
    Exchange,
    LSKLayer,
    LSKModule,
    SpatialExchange,
    num_exchanged,
)

C, B, H, W = 32, 3, 5, 7


def _lsk_attend_reference(m, x):
    """LSK core written out with functional convs from the module's weights."""
    c = x.shape[1]
    a1 = F.conv2d(x, m.conv0.weight, m.conv0.bias, padding=2, groups=c)
    a2 = F.conv2d(a1, m.conv_spatial.weight, m.conv_spatial.bias, padding=9, dilation=3, groups=c)
    a1 = F.conv2d(a1, m.conv1.weight, m.conv1.bias)
    a2 = F.conv2d(a2, m.conv2.weight, m.conv2.bias)
    cat = torch.cat([a1, a2], 1)
    agg = torch.cat([cat.mean(1, keepdim=True), cat.max(1, keepdim=True).values], 1)
    s = torch.sigmoid(F.conv2d(agg, m.conv_squeeze.weight, m.conv_squeeze.bias, padding=3))
    return F.conv2d(a1 * s[:, :1] + a2 * s[:, 1:], m.conv.weight, m.conv.bias)


def _mlp_reference(adapter, e):
    """e: (K, H, W) of one sample -> the adapter applied to each pixel's K-vector."""
    if isinstance(adapter, torch.nn.Identity):
        return e.clone()
    k, h, w = e.shape
    v = e.reshape(k, h * w).t()  # (HW, K)
    v = torch.relu(v @ adapter.fc1.weight.t() + adapter.fc1.bias) @ adapter.fc2.weight.t() + adapter.fc2.bias
    return v.t().reshape(k, h, w)


def _channel_exchange_reference(x1, x2, i1, i2, adapter):
    """The released code's per-sample loop: out_x1[i, I1[i]] = MLP(x2[i, I2[i]]) and vice versa."""
    out1, out2 = x1.clone(), x2.clone()
    for b in range(x1.shape[0]):
        out1[b, i1[b]] = _mlp_reference(adapter, x2[b, i2[b]])
        out2[b, i2[b]] = _mlp_reference(adapter, x1[b, i1[b]])
    return out1, out2


def _record_selections(module):
    seen = []
    # the dynamic strategies score both tasks in one call on the stacked batch: split it again
    module.selector.register_forward_hook(lambda _m, i, out: seen.extend(out[0].clone().chunk(out[0].shape[0] // B)))
    return seen


def _randomise(module, seed=0):
    # the head initialises convs at N(0, 0.01); larger weights make the scores spread out
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_num_exchanged_matches_reference_and_rejects_bad_p():
    assert num_exchanged(256, 0.5) == 128
    assert num_exchanged(256, 1 / 32) == 8
    assert num_exchanged(256, 3 / 8) == 96
    assert num_exchanged(256, 1.0) == 256
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="p must be in"):
            num_exchanged(256, bad)


def test_lsk_module_and_layer_follow_the_formula_and_parameter_counts():
    torch.manual_seed(0)
    mod, layer = LSKModule(C), LSKLayer(C)
    _randomise(mod, 1)
    _randomise(layer, 2)
    x1, x2 = torch.randn(B, C, H, W), torch.randn(B, C, H, W)
    y1, y2 = mod(x1, x2)
    # the output REPLACES the input: no x * attn, no residual
    torch.testing.assert_close(y1, _lsk_attend_reference(mod, x1))
    torch.testing.assert_close(y2, _lsk_attend_reference(mod, x2))
    score = layer(x1)
    torch.testing.assert_close(score, torch.sigmoid((x1 * _lsk_attend_reference(layer, x1)).mean((2, 3))))
    # counted on the released head at 256 channels: LSKModule(256) = 118,470; ChannelEx = 135,046 (MLP 16,576 + LSKLayer)
    assert sum(p.numel() for p in LSKModule(256).parameters()) == 118_470
    ex = ChannelExchange(256, 0.5, "dynamic", "mlp", 64)
    assert sum(p.numel() for p in ex.parameters()) == 135_046
    assert sum(p.numel() for p in ex.adapter.parameters()) == 16_576


@pytest.mark.parametrize("selection", SELECTIONS)
@pytest.mark.parametrize("adapter", ["mlp", "none"])
@pytest.mark.parametrize("p", [0.5, 1 / 32, 3 / 8, 1.0])
def test_channel_exchange_equals_per_sample_loop(selection, adapter, p):
    torch.manual_seed(3)
    ex = ChannelExchange(C, p, selection, adapter, adapter_hidden=8)
    _randomise(ex, 4)
    seen = _record_selections(ex)
    x1, x2 = torch.randn(B, C, H, W), torch.randn(B, C, H, W)
    y1, y2 = ex(x1, x2)
    i1, i2 = seen
    k = num_exchanged(C, p)
    for idx in (i1, i2):
        assert idx.shape == (B, k)
        assert bool((idx.diff(dim=1) > 0).all()), "indices sorted ascending and distinct"
        assert int(idx.min()) >= 0 and int(idx.max()) < C
    # each strategy picks what it says it picks
    if selection == "fixed":
        n = 1 / p
        if abs(n - round(n)) < 1e-9:  # the paper's rule c mod (1/p) == 0 (C divisible by 1/p here)
            expected = torch.tensor([c for c in range(C) if c % round(n) == 0])
        else:
            expected = torch.tensor([i * C // k for i in range(k)])
        assert torch.equal(i1, expected.expand(B, k)) and torch.equal(i2, i1)
    elif selection.startswith("dynamic"):
        scorer = ex.selector.scorer
        for x, idx in ((x1, i1), (x2, i2)):
            score = torch.sigmoid((x * _lsk_attend_reference(scorer, x)).mean((2, 3)))
            assert torch.equal(idx, score.topk(k, dim=1).indices.sort(dim=1).values)
    elif selection == "random" and k < C:  # per sample and per task
        assert len({tuple(r.tolist()) for r in torch.cat([i1, i2])}) > 1
    r1, r2 = _channel_exchange_reference(x1, x2, i1, i2, ex.adapter)
    torch.testing.assert_close(y1, r1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y2, r2, rtol=1e-5, atol=1e-6)
    # unselected channels pass through untouched
    keep = torch.ones(B, C, dtype=torch.bool).scatter(1, i1, False)
    assert torch.equal(y1.permute(0, 2, 3, 1)[keep[:, None, None, :].expand(B, H, W, C)],
                       x1.permute(0, 2, 3, 1)[keep[:, None, None, :].expand(B, H, W, C)])


def test_dynamic_scorer_gets_no_gradient_and_dynamic_st_does_with_identical_forward():
    torch.manual_seed(5)
    frozen = ChannelExchange(C, 0.5, "dynamic", "mlp", 8)
    _randomise(frozen, 6)
    learned = ChannelExchange(C, 0.5, "dynamic_st", "mlp", 8)
    learned.load_state_dict(frozen.state_dict())
    x1 = torch.randn(B, C, H, W, requires_grad=True)
    x2 = torch.randn(B, C, H, W, requires_grad=True)
    target = torch.randn(B, C, H, W)
    outs = {}
    for name, ex in (("dynamic", frozen), ("dynamic_st", learned)):
        y1, y2 = ex(x1, x2)
        outs[name] = (y1.detach(), y2.detach())
        ((y1 - target) ** 2 + (y2 + target) ** 2).mean().backward()
    assert torch.equal(outs["dynamic"][0], outs["dynamic_st"][0])
    assert torch.equal(outs["dynamic"][1], outs["dynamic_st"][1])
    assert all(p.grad is None for p in frozen.selector.scorer.parameters())
    st_grads = [p.grad for p in learned.selector.scorer.parameters()]
    assert all(g is not None for g in st_grads)
    assert sum(float(g.abs().sum()) for g in st_grads) > 0
    # the adapter trains in both
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in frozen.adapter.parameters())


@pytest.mark.parametrize("p", [0.5, 1 / 3, 0.4])
@pytest.mark.parametrize("adapter", ["mlp", "none"])
def test_spatial_exchange_equals_column_loop(p, adapter):
    torch.manual_seed(7)
    ex = SpatialExchange(C, p, adapter, adapter_hidden=8)
    _randomise(ex, 8)
    x1, x2 = torch.randn(B, C, H, W), torch.randn(B, C, H, W)
    y1, y2 = ex(x1, x2)
    n = 1 / p
    if abs(n - round(n)) < 1e-9:
        cols = [w for w in range(W) if w % round(n) == 0]  # the old code's `arange(w) % (1/p) == 0`
    else:
        k = round(W * p)
        cols = [i * W // k for i in range(k)]
    r1, r2 = x1.clone(), x2.clone()
    for b in range(B):
        for w in cols:
            col1, col2 = x1[b, :, :, w : w + 1], x2[b, :, :, w : w + 1]
            r1[b, :, :, w : w + 1] = _mlp_reference(ex.adapter, col2)
            r2[b, :, :, w : w + 1] = _mlp_reference(ex.adapter, col1)
    torch.testing.assert_close(y1, r1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y2, r2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["channel+spatial", "spatial+channel"])
def test_combined_exchange_runs_the_steps_in_the_named_order(kind):
    torch.manual_seed(9)
    ex = Exchange(kind, C, 0.5, "fixed", "mlp", 8)
    _randomise(ex, 10)
    x1, x2 = torch.randn(B, C, H, W), torch.randn(B, C, H, W)
    first, second = ex.steps
    assert isinstance(first, ChannelExchange if kind.startswith("channel") else SpatialExchange)
    torch.testing.assert_close(ex(x1, x2), second(*first(x1, x2)))
    assert Exchange("none", C).steps.__len__() == 0
    with pytest.raises(ValueError, match="exchange must be one of"):
        Exchange("diagonal", C)
