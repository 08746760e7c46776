"""Peak memory of one training step of a detector, for ``irstdlab models info --memory``: what a
trial needs on its GPU, so a search can pack several trials per GPU (``--gpus-per-worker 0.25``).

* On a CUDA device it is measured: ``torch.cuda.max_memory_allocated`` over a few optimiser steps
  (forward with targets, backward, SGD with momentum) on a synthetic batch, after the allocator's
  peak is reset, so it includes activations, gradients, the optimiser's state and cuDNN workspaces.
* On the CPU it is an estimate, labelled as such: the bytes of the parameters, their gradients and
  the optimiser's momentum, plus every tensor autograd saves for backward during the forward
  (``torch.autograd.graph.saved_tensors_hooks``, counted once per storage). Transient buffers
  (a convolution's workspace, the backward's temporaries) are not in it, so it is a lower bound;
  on a GPU use the measured number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class TrainMemory:
    method: str  # "measured (torch.cuda.max_memory_allocated)" or "estimated (...)"
    device: str
    batch_size: int
    size: int
    amp: str  # "bf16" or "off"
    peak_bytes: int
    params_bytes: int
    saved_activation_bytes: int | None = None  # the CPU estimate's parts

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak_gib": round(self.peak_gib, 3)}


def synthetic_batch(batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Grey images with a few tiny boxes and a sky map each (the sky serves detectors with a segmentation head)."""
    g = torch.Generator().manual_seed(0)
    images = (30 + 20 * torch.rand(batch, 1, size, size, generator=g)).round()
    targets = []
    for _ in range(batch):
        xy = torch.randint(0, max(1, size - 8), (8, 2), generator=g).float()
        boxes = torch.cat([xy, xy + torch.randint(2, 6, (8, 2), generator=g).float()], dim=1)
        sky = torch.zeros(size, size, dtype=torch.uint8)
        sky[: size * 2 // 3] = 1
        targets.append({"boxes": boxes.to(device), "labels": torch.ones(8, dtype=torch.int64, device=device),
                        "sky": sky.to(device)})
    return images.to(device), targets


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, targets: list[dict],
          amp: bool, device: torch.device) -> None:
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        losses = model(images, targets)
    total = sum(v.float() for v in losses.values())
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()


def training_memory(model: nn.Module, batch: int, size: int, device: torch.device, amp: bool) -> TrainMemory:
    """Peak memory of training ``model`` at ``batch`` x 1 x ``size`` x ``size`` on ``device``."""
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    params_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    optimizer = torch.optim.SGD(params, lr=1e-6, momentum=0.9)
    images, targets = synthetic_batch(batch, size, device)
    mode = "bf16" if amp else "off"
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        for _ in range(3):  # the optimiser's state exists from the first step on
            _step(model, optimizer, images, targets, amp, device)
        torch.cuda.synchronize(device)
        return TrainMemory("measured (torch.cuda.max_memory_allocated)", str(device), batch, size, mode,
                           int(torch.cuda.max_memory_allocated(device)), params_bytes)
    seen = {(p.untyped_storage().data_ptr(), p.untyped_storage().nbytes()) for p in model.parameters()}
    saved = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen:
            seen.add(key)
            saved += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            losses = model(images, targets)
    sum(v.float() for v in losses.values()).backward()
    trainable_bytes = sum(p.numel() * p.element_size() for p in params)
    peak = params_bytes + 2 * trainable_bytes + saved + images.numel() * images.element_size()
    return TrainMemory("estimated (parameters + gradients + momentum + tensors saved for backward; a lower "
                       "bound: transient buffers are not counted)", str(device), batch, size, mode, int(peak),
                       params_bytes, int(saved))


__all__ = ["TrainMemory", "synthetic_batch", "training_memory"]
