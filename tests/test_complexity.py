"""profile(): MACs and parameters against torchvision's documented numbers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from irstdlab.harness.complexity import ComplexityReport, profile


def test_resnet50_matches_torchvision_docs():
    from torchvision.models import resnet50

    model = resnet50(weights=None)
    model.train()
    rep = profile(model, input_size=(224, 224))
    # torchvision documents 4.09 "GFLOPS" for ResNet-50, which are multiply-adds.
    assert rep.gmacs == pytest.approx(4.09, rel=0.02)
    assert rep.flops == 2 * rep.macs
    assert rep.params == 25_557_032
    assert rep.trainable_params == rep.params
    assert model.training, "profile must restore the train mode"
    text = str(rep)
    assert "GMACs (multiply-adds; the paper's 'FLOPs')" in text and "GFLOPs (= 2 x MACs)" in text
    d = rep.to_dict()
    assert d["gmacs"] == pytest.approx(rep.gmacs) and d["input_size"] == [3, 224, 224]


class _Raw(nn.Module):
    """forward() would post-process; forward_raw is the network alone; grey input."""

    in_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward_raw(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - must not be called
        raise AssertionError("profile must use forward_raw")


def test_forward_raw_channels_and_trainable():
    rep = profile(_Raw(), input_size=(8, 10))
    # 3x3 conv, 1 -> 4 channels, 8x10 output: 9 * 4 * 80 MACs
    assert rep.macs == 9 * 4 * 80
    assert rep.input_size == (1, 8, 10)
    assert rep.params == 36 + 6 and rep.trainable_params == 36
    assert isinstance(rep, ComplexityReport)


def test_bad_input_size():
    with pytest.raises(ValueError, match="input_size"):
        profile(_Raw(), input_size=(0, 4))


def test_architecture_cost_counts_on_meta_like_the_cpu_and_once_per_key():
    """The meta-device count equals the real one for a detector that counts on meta (FCOS) and for
    one that falls back to the CPU (torchvision's Faster R-CNN needs nonzero's values); a second
    call with the same key builds nothing."""
    import dataclasses

    from irstdlab.harness.complexity import _COUNTED, architecture_cost
    from irstdlab.harness.config import load_config
    from irstdlab.models import build

    base = load_config("quickstart").model
    for name in ("fcos", "faster_rcnn"):
        cfg = dataclasses.replace(base, name=name, pretrained=None)
        devices: list[str] = []

        def build_once(cfg=cfg, devices=devices) -> torch.nn.Module:
            model = build(cfg)
            devices.append(next(model.parameters()).device.type)
            return model

        _COUNTED.clear()
        counted = architecture_cost(build_once, (96, 128), dataclasses.asdict(cfg))
        real = profile(build(cfg), (96, 128))
        assert (counted.macs, counted.params, counted.trainable_params) == (real.macs, real.params, real.trainable_params)
        assert devices[0] == "meta"
        assert devices[1:] == ([] if name == "fcos" else ["cpu"]), devices
        again = architecture_cost(build_once, (96, 128), dataclasses.asdict(cfg))
        assert again is counted and len(devices) == (1 if name == "fcos" else 2)
        other_size = architecture_cost(build_once, (128, 128), dataclasses.asdict(cfg))
        assert other_size.macs > counted.macs
