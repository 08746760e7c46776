"""BAFE-Net: FCOS with a sky-segmentation head and cross-task feature exchange (GrokCV/BAFE-Net
``deepir/models/dense_heads/fcos_changer_seg_head.py`` and its ``configs/detection/fcos_changer_seg/``).

Per level (every module shared across levels, as in the reference ``FCOSChangerSegHead``)::

    seg, cls, reg = seg_tower(x), cls_tower(x), reg_tower(x)   # 4x conv3x3-GN-ReLU each
    seg, cls = lsk(seg, cls)              # shared LSKModule; its output replaces the features
    seg, cls = convs_seg(seg), convs_cls(cls)   # conv-BN-ReLU 256->128->256
    seg, cls = exchange(seg, cls)         # channel / spatial exchange with the MLP adapter
    cls, ctr <- cls;  reg <- reg (never exchanged);  seg logits <- seg (training only)

Every ablation axis of the paper is a ``ModelConfig`` field: ``seg_head`` (off = the plain
FCOS host), ``exchange``, ``selection`` (incl. the trainable ``dynamic_st``), ``p``,
``adapter``/``adapter_hidden`` (``elementwise`` = the old head's scalar MLP), ``lsk_module``,
``conv_bn_blocks``, ``backbone``; ``exchange.OLD_HEAD`` names the pre-Aug-2024 head as
values. ``seg_head=False`` builds the plain FCOS host and ignores the other BAFE fields.
With ``exchange='none'`` the conv-BN-ReLU blocks stay (they belong to the BAFE head in both
code versions) unless ``conv_bn_blocks=False`` (the reference's seg-head-only FCOSSegHead).

Deliberately *not* copied: the reference head defines ten modules it never runs (850,339
parameters: conv_squeeze_tgt/bg, conv_mix, conv_reduce, gen_weight, fusion_conv, convs_reg,
conv_spatial, conv_squeeze, conv_post). Our head holds only what runs, so BAFE-R50 has
34,732,182 parameters where the reference reports 35.58 M.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irstdlab.models.config import ModelConfig
from irstdlab.models.exchange import Exchange, LSKModule
from irstdlab.models.fcos import FCOS, FCOSHead, HeadOutputs, build_fcos_head, build_parts, conv_tower, fcos_head_args
from irstdlab.models.fcos_targets import Points
from irstdlab.models.registry import register

SKY_IGNORE = 255


def conv_bn_relu_block(channels: int) -> nn.Sequential:
    """The reference's convs_seg / convs_cls: conv3x3 C->C/2 +BN+ReLU, conv3x3 C/2->C +BN+ReLU.

    BatchNorm (not GN) with batch 2, one set of running statistics for all levels."""
    half = channels // 2
    return nn.Sequential(
        nn.Conv2d(channels, half, 3, padding=1),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, channels, 3, padding=1),
        nn.BatchNorm2d(channels),
        nn.ReLU(inplace=True),
    )


class BAFEHead(FCOSHead):
    """FCOS head + segmentation tower, LSK module, conv blocks and the cross-task exchange."""

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        regress_ranges: Sequence[tuple[float, float]],
        *,
        width: int = 256,
        depth: int = 4,
        norm_groups: int = 32,
        exchange: str = "channel",
        p: float = 0.5,
        selection: str = "dynamic",
        adapter: str = "mlp",
        adapter_hidden: int = 64,
        lsk_module: bool = True,
        conv_bn_blocks: bool = True,
        seg_loss_weight: float = 1.0,
        **fcos_args: Any,
    ) -> None:
        """``fcos_args``: the remaining ``FCOSHead`` keywords (prior, assignment, loss, inference)."""
        super().__init__(in_channels, strides, regress_ranges, width=width, depth=depth, norm_groups=norm_groups,
                         **fcos_args)
        self.seg_loss_weight = seg_loss_weight
        feat = width if depth > 0 else in_channels
        if feat < 2:
            raise ValueError(f"model.head_width: BAFE-Net needs at least 2 channels, got {feat}")
        self.seg_tower = conv_tower(in_channels, width, depth, norm_groups)
        self.lsk = LSKModule(feat) if lsk_module else None
        # Table IV's segmentation-head variant (the reference FCOSSegHead + exchange) has no conv-BN blocks
        self.convs_seg = conv_bn_relu_block(feat) if conv_bn_blocks else nn.Identity()
        self.convs_cls = conv_bn_relu_block(feat) if conv_bn_blocks else nn.Identity()
        self.exchange = Exchange(exchange, feat, p, selection, adapter, adapter_hidden)
        self.conv_seg = nn.Conv2d(feat, 1, 3, padding=1)
        self.init_weights()  # N(0, 0.01) on every conv of the head, LSK and exchange included

    def forward_single(self, x: Tensor, scale: nn.Module, stride: int) -> dict[str, Tensor]:
        seg, cls, reg = self.seg_tower(x), self.cls_tower(x), self.reg_tower(x)
        if self.lsk is not None:
            seg, cls = self.lsk(seg, cls)
        seg, cls = self.exchange(self.convs_seg(seg), self.convs_cls(cls))
        out = self.predict(cls, reg, scale)
        out["seg"] = self.conv_seg(seg)
        return out

    def compute_loss(
        self, head_outputs: HeadOutputs, targets: list[dict[str, Tensor]], points: Points | None = None
    ) -> dict[str, Tensor]:
        losses = super().compute_loss(head_outputs, targets, points)
        losses["loss_seg"] = self.seg_loss_weight * segmentation_loss(head_outputs["seg"], sky_maps(targets))
        return losses


def sky_maps(targets: list[dict[str, Any]]) -> Tensor:
    """Stack the targets' sky maps (uint8 0 / 1 / 255 ignore) into [B, 1, H, W]."""
    maps = []
    for i, target in enumerate(targets):
        sky = target.get("sky") if isinstance(target, dict) else None
        if sky is None:
            raise ValueError(
                f"targets[{i}]: bafenet needs a 'sky' map (uint8 HxW: 0 non-sky, 1 sky, 255 ignore); "
                "this data has none - use a dataset with sky annotations or model.seg_head=false"
            )
        maps.append(torch.as_tensor(sky))
    shapes = {tuple(m.shape) for m in maps}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"targets: sky maps must all be HxW of the batch's size, got shapes {sorted(shapes)}")
    return torch.stack(maps)[:, None]


def segmentation_loss(seg_logits: list[Tensor], sky: Tensor) -> Tensor:
    """BCE-with-logits at every level against the sky map, as the reference computes it.

    Targets: legacy ``F.interpolate(mode='nearest')`` (the top-left pixel of each stride
    cell). Label 255 gets weight 0, but the mean is over ALL elements of all levels
    (mmseg ``avg_non_ignore=False``), so the finest level carries most of the weight.
    """
    sky = sky.to(seg_logits[0].device, torch.float32)
    total, count = seg_logits[0].new_zeros(()), 0
    for logits in seg_logits:
        labels = F.interpolate(sky, size=logits.shape[-2:], mode="nearest")
        weight = (labels != SKY_IGNORE).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits.float(), (labels == 1).to(torch.float32), reduction="none")
        total = total + (bce * weight).sum()
        count += labels.numel()
    return total / count


class BAFENet(FCOS):
    """FCOS detector whose head is ``BAFEHead``; training targets also carry ``sky``."""

    def forward(self, images: Tensor, targets: list[dict[str, Any]] | None = None) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is not None:
            size = tuple(images.shape[-2:])
            for i, target in enumerate(targets):
                sky = target.get("sky") if isinstance(target, dict) else None
                if sky is not None and tuple(sky.shape) != size:
                    raise ValueError(f"targets[{i}]['sky']: shape {tuple(sky.shape)} differs from the image size {size}")
        return super().forward(images, targets)


# The released BAFE-Net neck: FPN num_outs=3 over C3-C5, no extra levels
# (GrokCV/BAFE-Net configs/detection/fcos_changer_seg/fcos_changer_seg_r50-caffe_fpn_gn-head_1x_densesirst.py),
# so `models info bafenet --backbone resnet50` counts the 34.73 M of the reference's used modules.
BAFENET_DEFAULTS = {"num_levels": 3}
# training recipe for the keys a config leaves out (models/registry.py), measured on the quickstart data
BAFENET_RECIPE = {
    "optim.name": "adamw", "optim.lr": 3e-3, "optim.grad_clip": None,
    "schedule.warmup": "linear", "schedule.warmup_iters": 20, "schedule.warmup_factor": 0.1,
}


@register(
    "bafenet", "BAFE-Net: FCOS + sky segmentation head with dynamic cross-task channel exchange (3 levels P3-P5)",
    defaults=BAFENET_DEFAULTS, recipe=BAFENET_RECIPE,
)
def build_bafenet(cfg: ModelConfig) -> nn.Module:
    preprocess, backbone, neck = build_parts(cfg)
    if not cfg.seg_head:  # Table IV (a): the plain host
        return FCOS(preprocess, backbone, neck, build_fcos_head(cfg, neck))
    head = BAFEHead(
        neck.out_channels, neck.strides, cfg.level_regress_ranges(), exchange=cfg.exchange, p=cfg.p,
        selection=cfg.selection, adapter=cfg.adapter, adapter_hidden=cfg.adapter_hidden, lsk_module=cfg.lsk_module,
        conv_bn_blocks=cfg.conv_bn_blocks, seg_loss_weight=cfg.seg_loss_weight, **fcos_head_args(cfg),
    )
    return BAFENet(preprocess, backbone, neck, head)


__all__ = ["BAFENET_DEFAULTS", "BAFENET_RECIPE", "BAFEHead", "BAFENet", "build_bafenet", "conv_bn_relu_block", "segmentation_loss", "sky_maps"]
