"""Optimisers and learning-rate schedules of a trial.

The reference recipe (GrokCV/BAFE-Net ``configs/detection/fcos_changer_seg/`` and its ``_base_``
schedule): DAdaptAdam(lr 1.0, decoupled weight decay 0.05) with no
decay on norm and bias parameters; LR multiplier x1/3 for the first 500 iterations (a *constant*
factor, not a linear ramp), then x0.1 at epochs 8 and 16. OSCAR's: AdamW 2e-3, linear warm-up over
1000 iterations, poly decay stepped per epoch. Both are expressed by the two dataclasses below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


@dataclass
class OptimConfig:
    name: Literal["dadapt_adam", "adamw", "sgd"] = "dadapt_adam"
    lr: float = 1.0
    weight_decay: float = 0.05
    decouple: bool = True  # DAdaptAdam: AdamW-style decoupled decay (the reference's choice)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9  # SGD only
    norm_decay: bool = False  # decay on normalisation weights
    bias_decay: bool = False  # decay on biases
    grad_clip: float | None = None  # max gradient norm; None = no clipping (the reference)

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: must be >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: each must be in [0, 1), got {list(self.betas)}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: must be in [0, 1), got {self.momentum}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip: must be > 0 or null, got {self.grad_clip}")


@dataclass
class ScheduleConfig:
    epochs: int = 20
    warmup: Literal["constant", "linear", "none"] = "constant"
    warmup_iters: int = 500
    warmup_factor: float = 1.0 / 3.0
    policy: Literal["step", "poly", "constant"] = "step"
    milestones: tuple[int, ...] = (8, 16)  # epochs after which the LR is multiplied by gamma
    gamma: float = 0.1
    poly_power: float = 1.0

    def validate(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs: must be >= 1, got {self.epochs}")
        if self.warmup_iters < 0:
            raise ValueError(f"warmup_iters: must be >= 0, got {self.warmup_iters}")
        if not 0 < self.warmup_factor <= 1:
            raise ValueError(f"warmup_factor: must be in (0, 1], got {self.warmup_factor}")
        if list(self.milestones) != sorted(self.milestones) or any(m < 1 for m in self.milestones):
            raise ValueError(f"milestones: must be increasing epochs >= 1, got {list(self.milestones)}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma: must be in (0, 1], got {self.gamma}")


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict]:
    """Split trainable parameters into decay / no-decay groups (mmengine's paramwise rule)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_TYPES)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            skip = (is_norm and not cfg.norm_decay) or (name == "bias" and not cfg.bias_decay)
            (no_decay if skip else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.name == "dadapt_adam":
        import dadaptation

        return dadaptation.DAdaptAdam(
            groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, decouple=cfg.decouple
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class LRFactor:
    """LR multiplier at a global iteration.

    A callable object rather than a lambda so that ``LambdaLR.state_dict()`` carries it; it keeps
    only plain values so checkpoints load with ``torch.load(weights_only=True)``.
    """

    def __init__(self, cfg: ScheduleConfig, iters_per_epoch: int):
        self.schedule = dataclasses.asdict(cfg)
        self.iters_per_epoch = max(1, int(iters_per_epoch))

    @property
    def cfg(self) -> ScheduleConfig:
        return ScheduleConfig(**self.schedule)

    def warmup(self, iteration: int) -> float:
        c = self.cfg
        if c.warmup == "none" or iteration >= c.warmup_iters:
            return 1.0
        if c.warmup == "constant":
            return c.warmup_factor
        # mmcv's linear warm-up: 1 - (1 - it / W) * (1 - ratio)
        return 1.0 - (1.0 - iteration / c.warmup_iters) * (1.0 - c.warmup_factor)

    def decay(self, epoch: int) -> float:
        c = self.cfg
        if c.policy == "step":
            return c.gamma ** sum(epoch >= m for m in c.milestones)
        if c.policy == "poly":
            return max(0.0, 1.0 - epoch / c.epochs) ** c.poly_power
        return 1.0

    def __call__(self, iteration: int) -> float:
        return self.warmup(iteration) * self.decay(iteration // self.iters_per_epoch)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, iters_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler (call ``.step()`` after every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LRFactor(cfg, iters_per_epoch))
