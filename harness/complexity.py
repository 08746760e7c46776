"""Model complexity: parameters and multiply-adds of one forward pass.

The IRSTD papers (BAFE-Net Table II, OSCAR) report "FLOPs" computed by mmcv's
``get_model_complexity_info``, which actually counts multiply-accumulates (MACs).
``torch.utils.flop_counter`` counts 2 FLOPs per MAC for conv / matmul, so we keep
both numbers and label them unambiguously.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ComplexityReport:
    """Counts for one forward pass at ``input_size`` (batch 1)."""

    params: int
    trainable_params: int
    macs: int
    flops: int
    input_size: tuple[int, int, int] = (3, 512, 512)  # (C, H, W)

    @property
    def gmacs(self) -> float:
        """Giga multiply-adds; what the papers call 'FLOPs'."""
        return self.macs / 1e9

    @property
    def gflops(self) -> float:
        """Giga floating-point operations (= 2 x MACs)."""
        return self.flops / 1e9

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d.update(gmacs=self.gmacs, gflops=self.gflops, params_m=self.params_m)
        return d

    def __str__(self) -> str:
        c, h, w = self.input_size
        return (
            f"input {c}x{h}x{w}: "
            f"params {self.params_m:.3f} M (trainable {self.trainable_params / 1e6:.3f} M), "
            f"GMACs (multiply-adds; the paper's 'FLOPs') {self.gmacs:.3f}, "
            f"GFLOPs (= 2 x MACs) {self.gflops:.3f}"
        )


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters); shared parameters are counted once."""
    params = list(model.parameters())  # .parameters() already de-duplicates shared tensors
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    return total, trainable


def profile(model: nn.Module, input_size: tuple[int, int] = (512, 512)) -> ComplexityReport:
    """Parameters and MACs of ``model`` on one zero image of ``input_size`` (H, W).

    Uses the tensor-mode forward without post-processing: ``model.forward_raw(x)``
    when the model has it (our detectors do: NMS and decoding are not network
    compute), else ``model(x)``. The model's train/eval mode is restored afterwards.
    """
    if len(input_size) != 2 or min(int(s) for s in input_size) <= 0:
        raise ValueError(f"input_size must be (H, W) with positive sizes, got {input_size!r}")
    h, w = int(input_size[0]), int(input_size[1])
    c = int(getattr(model, "in_channels", 3))
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = torch.zeros(1, c, h, w, device=device)
    forward = getattr(model, "forward_raw", None)
    forward = forward if callable(forward) else model

    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            forward(x)
        flops = int(counter.get_total_flops())
    finally:
        model.train(was_training)

    total, trainable = count_params(model)
    return ComplexityReport(
        params=total, trainable_params=trainable, macs=flops // 2, flops=flops, input_size=(c, h, w)
    )


# (architecture key, H, W) -> report; a process (a reused Tune actor) counts each architecture once
_COUNTED: dict[tuple[str, int, int], ComplexityReport] = {}


def architecture_cost(build: Callable[[], nn.Module], input_size: tuple[int, int], key: Any) -> ComplexityReport:
    """``profile(build(), input_size)`` without computing anything, counted once per ``key`` per process.

    The model is built on PyTorch's ``meta`` device, where every tensor has a shape and no data, so
    the forward pass costs only its Python dispatch (a ResNet-18 BAFE-Net at 512 x 512: 0.2 s instead
    of ~1 s of CPU convolutions plus the weight initialisation). The counts are the same, because
    ``FlopCounterMode`` reads only shapes. A model whose forward needs values (an op with a
    data-dependent output size such as ``nonzero``, or a ``.item()``) is counted again on the CPU.
    ``key`` must determine the architecture (e.g. the model config as a dict); it is compared as JSON.
    """
    h, w = int(input_size[0]), int(input_size[1])
    cache_key = (json.dumps(key, sort_keys=True, default=repr), h, w)
    report = _COUNTED.get(cache_key)
    if report is None:
        try:
            with torch.device("meta"):
                model = build()
            report = profile(model, (h, w))
        except Exception:  # noqa: BLE001 - it needs real values: count on the CPU, which raises a real error
            report = profile(build(), (h, w))
        _COUNTED[cache_key] = report
    return report
