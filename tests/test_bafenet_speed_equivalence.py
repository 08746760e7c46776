"""BAFE-Net's speed work changed no number: losses, gradients, head outputs and detections of the
released head (paper_bafenet_r18 geometry, LSK module on) and of the quickstart variant, computed by
the fast code, match those of the plain formulation computed in the same process.

The plain formulation (``plain_formulation`` below) is the code as it was before the speed work,
written as standard NCHW modules: the LSK attention as in zcablii/LSKNet
(mmrotate/models/backbones/lsknet.py, LSKblock) with the dilated depth-wise conv applied directly,
the LSK module and the channel scorer called once per task, channels picked and put back by
gather/scatter, the adapter as nn.Linear over channels-last pixels. It is swapped in for the fast
methods on the same model with the same weights, so both runs share the CPU, its kernels and the
thread count. (An earlier version compared against tensors stored on another machine; CI's CPU
sums fp32 convolutions in another order, which moved untrained scores by 2e-5 relative and swapped
near-tied detections.)

Every element is compared, to 1e-4 of its tensor's rms, rather than bitwise because the fast path
adds the same products in another order; measured, the largest deviation is 2.2e-5 of the rms (the
LSK module's gradients; the quickstart variant, without the module, within 1e-6) and detections are
bitwise equal. The channel selection (a discrete top-K) must pick the same channels: a swapped
channel would move the values by their whole size. Two things are compared for what they are:
conv biases in front of a normalisation (the head's train-mode BatchNorms) have an exact gradient
of zero (the norm removes any constant), so both paths must give ~0 there rather than equal
rounding noise; and detections whose scores tie to 1e-4 may trade places (at the max_per_img cut or
in NMS), so detections are matched as sets with only such near-ties left unpaired.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from irstdlab.harness.config import load_config
from irstdlab.models import build, exchange

SAMPLES = 12  # sampled elements per tensor
# score_thr 0 so that an untrained head still returns detections to compare
EVAL_OVERRIDES = {"score_thr": 0.0, "max_per_img": 20}
VARIANTS: dict[str, dict[str, Any]] = {
    # the released head at the paper's geometry, a smaller image to keep the test fast
    "released": {"preset": "paper_bafenet_r18", "size": 128, "model": {"pretrained": None}},
    # the quickstart preset's detector with model.name=bafenet (no LSK module, 64 wide, one P2 level)
    "quickstart": {"preset": "quickstart", "size": 128, "model": {"name": "bafenet"}},
}


def _model_config(variant: str) -> dict[str, Any]:
    spec = VARIANTS[variant]
    fields = dict(load_config(spec["preset"]).model.__dict__)
    fields.update(spec["model"], **EVAL_OVERRIDES)
    return fields


def _batch(size: int) -> tuple[Tensor, list[dict[str, Tensor]]]:
    g = torch.Generator().manual_seed(7)
    images = (40 + 30 * torch.rand(2, 1, size, size, generator=g)).round()
    boxes = [torch.tensor([[10.0, 12.0, 15.0, 16.0], [60.0, 70.0, 66.0, 75.0], [90.0, 20.0, 120.0, 44.0]]),
             torch.tensor([[33.0, 90.0, 37.0, 93.0]])]
    targets = []
    for b, bx in enumerate(boxes):
        for x0, y0, x1, y1 in bx.int().tolist():
            images[b, 0, y0:y1, x0:x1] = 220
        sky = torch.zeros(size, size, dtype=torch.uint8)
        sky[: size // 2] = 1
        sky[size - size // 8:] = 255
        targets.append({"boxes": bx, "sky": sky})
    return images, targets


@contextmanager
def plain_formulation() -> Iterator[None]:
    """Swap the plain (pre-speed-work) formulation in for the fast methods, on every instance."""
    def attend(self: exchange._LSKAttention, x: Tensor) -> Tensor:
        a1 = self.conv0(x)
        a2 = self.conv_spatial(a1)  # the dilated conv itself, not over phase grids
        p1, p2 = self.conv1(a1), self.conv2(a2)
        both = torch.cat([p1, p2], dim=1)
        agg = torch.cat([both.mean(dim=1, keepdim=True), both.amax(dim=1, keepdim=True)], dim=1)
        s = self.conv_squeeze(agg).sigmoid()
        return self.conv(p1 * s[:, 0:1] + p2 * s[:, 1:2])

    def lsk_module(self: exchange.LSKModule, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        return self.attend(x1), self.attend(x2)

    def select_pair(self: exchange.ChannelSelector, x1: Tensor, x2: Tensor) -> Any:
        return self(x1), self(x2)

    def pick(x: Tensor, index: Tensor) -> Tensor:
        return x.gather(1, index[:, :, None, None].expand(-1, -1, *x.shape[2:]))

    def put(x: Tensor, index: Tensor, src: Tensor) -> Tensor:
        return x.scatter(1, index[:, :, None, None].expand(-1, -1, *x.shape[2:]), src)

    def adapter(self: exchange.Adapter, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x.permute(0, 2, 3, 1)))).permute(0, 3, 1, 2)

    swaps = [(exchange._LSKAttention, "attend", attend), (exchange.LSKModule, "forward", lsk_module),
             (exchange.ChannelSelector, "select_pair", select_pair), (exchange, "pick_channels", pick),
             (exchange, "put_channels", put), (exchange.Adapter, "forward", adapter)]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in swaps]
    try:
        for owner, name, plain in swaps:
            setattr(owner, name, plain)
        yield
    finally:
        for owner, name, fast in saved:
            setattr(owner, name, fast)


def compute(model: nn.Module, variant: str) -> dict[str, Tensor]:
    """One train-mode forward + backward and one eval-mode forward of ``model``."""
    images, targets = _batch(VARIANTS[variant]["size"])
    out: dict[str, Tensor] = {}
    model.zero_grad(set_to_none=True)
    model.train()
    losses = model(images, targets)
    for name, value in losses.items():
        out[f"loss/{name}"] = value.detach().reshape(1)
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            out[f"grad/{name}"] = p.grad.clone()
    model.eval()
    with torch.no_grad():
        for key, maps in model.forward_raw(images).items():
            for level, m in enumerate(maps):
                out[f"eval/{key}/{level}"] = m
        for b, det in enumerate(model(images)):
            out[f"det/{b}"] = torch.cat([det["boxes"], det["scores"][:, None]], dim=1)
    return out


def _rms(t: Tensor) -> float:
    return float(t.double().square().mean().sqrt())


def _gradient_free_biases(model: nn.Module) -> set[str]:
    """Biases of convs whose output goes straight into a GroupNorm or a train-mode BatchNorm:
    their exact gradient is 0."""
    names: set[str] = set()
    for prefix, module in model.named_modules():
        children = list(module.named_children())
        for (name, first), (_, second) in zip(children, children[1:]):
            if isinstance(first, nn.Conv2d) and first.bias is not None and isinstance(second, (nn.GroupNorm, nn.BatchNorm2d)):
                names.add(f"grad/{prefix}.{name}.bias" if prefix else f"grad/{name}.bias")
    return names


def _assert_same_detections(name: str, fast: Tensor, plain: Tensor) -> None:
    """Equal as sets of (box, score) to 1e-5; an unpaired detection must tie (1e-4) with one
    unpaired on the other side: the two traded places at the max_per_img cut or in NMS."""
    assert fast.shape == plain.shape, f"{name}: {fast.shape[0]} detections, plain {plain.shape[0]}"
    close = ((fast[:, None, :4] - plain[None, :, :4]).abs().amax(-1) <= 1e-3) & (
        (fast[:, None, 4] - plain[None, :, 4]).abs() <= 1e-5 * plain[None, :, 4].abs() + 1e-8)
    unpaired_fast = [i for i in range(len(fast)) if not close[i].any()]
    unpaired_plain = [j for j in range(len(plain)) if not close[:, j].any()]
    assert len(unpaired_fast) <= len(fast) // 4, f"{name}: {len(unpaired_fast)} of {len(fast)} detections differ"
    for i, j in zip(sorted(unpaired_fast, key=lambda i: float(fast[i, 4])),
                    sorted(unpaired_plain, key=lambda j: float(plain[j, 4]))):
        torch.testing.assert_close(fast[i, 4], plain[j, 4], rtol=1e-4, atol=0.0,
                                   msg=lambda m: f"{name}: an unpaired detection is no near-tie: {m}")


def _assert_matches(name: str, fast: Tensor, plain: Tensor, zero_below: float | None) -> None:
    """``zero_below``: for a gradient that is exactly 0 in exact arithmetic, the rms both paths'
    rounding noise must stay under (rather than being equal to each other)."""
    assert fast.shape == plain.shape, f"{name}: shape {tuple(fast.shape)} != {tuple(plain.shape)}"
    if name.startswith("det/"):
        _assert_same_detections(name, fast, plain)
    elif zero_below is not None:
        assert max(_rms(fast), _rms(plain)) < zero_below, f"{name}: rms {_rms(fast)} / {_rms(plain)} is no rounding noise"
    else:
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-4 * _rms(plain),
                                   msg=lambda m: f"{name}: {m}")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_fast_code_matches_the_plain_formulation(variant):
    torch.manual_seed(0)
    model = build(_model_config(variant))
    # the train-mode pass moves BatchNorm's running statistics: both paths start from the same ones
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    fast = compute(model, variant)
    model.load_state_dict(initial)
    with plain_formulation():
        plain = compute(model, variant)
    assert set(fast) == set(plain), sorted(set(fast) ^ set(plain))
    assert any(k.startswith("grad/head.exchange") for k in fast), "the exchange gets gradients"
    assert all(plain[f"det/{b}"].shape[0] > 0 for b in (0, 1)), "detections to compare"
    zero = _gradient_free_biases(model) & set(plain)
    assert zero, "the head's convs in front of a norm were found"
    largest = max(_rms(plain[n]) for n in plain if n.startswith("grad/"))
    for name in sorted(plain):
        _assert_matches(name, fast[name], plain[name], 1e-5 * largest if name in zero else None)
