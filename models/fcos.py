"""FCOS as the BAFE-Net reference runs it (mmdet FCOSHead defaults; GrokCV/BAFE-Net
``configs/detection/fcos_changer_seg/fcos_changer_seg_r50-caffe_fpn_gn-head_1x_densesirst.py``).

Reads like torchvision's detection models: ``FCOS.forward`` = preprocess, backbone, neck,
head, then ``head.compute_loss`` in training or ``head.postprocess`` in eval. The head is
built from reusable pieces so BAFE-Net can swap or extend it: ``towers``/``predict`` per
level (``forward_single``), points (``points``), assignment + losses (``compute_loss``,
``assign_batch``) and decoding + NMS (``postprocess``). Head outputs travel as a dict of
per-level lists (``cls``, ``reg``, ``ctr``; subclasses may add keys, e.g. ``seg``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import batched_nms

from irstdlab.models.backbones import build_backbone
from irstdlab.models.config import ModelConfig
from irstdlab.models.fcos_loss import fcos_losses
from irstdlab.models.fcos_targets import Points, assign, distances_to_boxes, make_points
from irstdlab.models.necks import FPN, build_neck
from irstdlab.models.precision import float32_postprocess
from irstdlab.models.preprocess import InputNormalizer
from irstdlab.models.registry import register

HeadOutputs = dict[str, list[Tensor]]


class Scale(nn.Module):
    """A learnable scalar per level (mmcv Scale): bbox distances = exp(scale * conv_reg)."""

    def __init__(self, value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def conv_tower(in_channels: int, width: int, depth: int, groups: int) -> nn.Sequential:
    """depth x (conv3x3 without bias, GroupNorm, ReLU): mmdet ConvModule with GN, bias='auto'."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [
            nn.Conv2d(in_channels if i == 0 else width, width, 3, padding=1, bias=False),
            nn.GroupNorm(groups, width),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


class FCOSHead(nn.Module):
    """Shared-across-levels FCOS head with one class (the target), as in the reference.

    Centerness is predicted from the classification tower (mmdet centerness_on_reg=False);
    distances are exp(Scale_l(conv_reg)) in input pixels (norm_on_bbox=False).
    """

    def __init__(
        self,
        in_channels: int,
        strides: Sequence[int],
        regress_ranges: Sequence[tuple[float, float]],
        *,
        width: int = 256,
        depth: int = 4,
        norm_groups: int = 32,
        prior_prob: float = 0.01,
        center_sampling: bool = False,
        center_sample_radius: float = 1.5,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_loss: str = "iou",
        score_thr: float = 0.05,
        nms_pre: int = 1000,
        nms_thr: float = 0.5,
        max_per_img: int = 100,
    ) -> None:
        super().__init__()
        self.strides = list(strides)
        self.regress_ranges = [(float(lo), float(hi)) for lo, hi in regress_ranges]
        if len(self.regress_ranges) != len(self.strides):
            raise ValueError(f"model.regress_ranges: {len(self.regress_ranges)} ranges for {len(self.strides)} levels")
        self.prior_prob = prior_prob
        self.center_sampling, self.center_sample_radius = center_sampling, center_sample_radius
        self.focal_alpha, self.focal_gamma, self.box_loss = focal_alpha, focal_gamma, box_loss
        self.score_thr, self.nms_pre, self.nms_thr, self.max_per_img = score_thr, nms_pre, nms_thr, max_per_img
        feat = width if depth > 0 else in_channels
        self.cls_tower = conv_tower(in_channels, width, depth, norm_groups)
        self.reg_tower = conv_tower(in_channels, width, depth, norm_groups)
        self.conv_cls = nn.Conv2d(feat, 1, 3, padding=1)
        self.conv_reg = nn.Conv2d(feat, 4, 3, padding=1)
        self.conv_centerness = nn.Conv2d(feat, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in self.strides)
        self.init_weights()

    def init_weights(self) -> None:
        """mmdet head init: N(0, 0.01) on every conv, zero bias, cls bias for prior_prob.

        Subclasses call this after adding their modules so new convs get the same init.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        p = self.prior_prob
        assert self.conv_cls.bias is not None, "the classifier conv has a bias"
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - p) / p))

    # ------------------------------------------------------------------ forward
    def predict(self, cls_feat: Tensor, reg_feat: Tensor, scale: nn.Module) -> dict[str, Tensor]:
        """The three predictors on (possibly exchanged) tower features of one level."""
        return {
            "cls": self.conv_cls(cls_feat),
            "reg": scale(self.conv_reg(reg_feat)).float().exp(),
            "ctr": self.conv_centerness(cls_feat),
        }

    def forward_single(self, x: Tensor, scale: nn.Module, stride: int) -> dict[str, Tensor]:
        return self.predict(self.cls_tower(x), self.reg_tower(x), scale)

    def forward(self, feats: list[Tensor]) -> HeadOutputs:
        if len(feats) != len(self.strides):
            raise ValueError(f"head got {len(feats)} feature levels, expected {len(self.strides)}")
        out: HeadOutputs = {}
        for x, scale, stride in zip(feats, self.scales, self.strides):
            for key, value in self.forward_single(x, scale, stride).items():
                out.setdefault(key, []).append(value)
        return out

    # ------------------------------------------------------------------ points and targets
    def points(self, head_outputs: HeadOutputs) -> Points:
        sizes = [(t.shape[-2], t.shape[-1]) for t in head_outputs["cls"]]
        return make_points(sizes, self.strides, self.regress_ranges, head_outputs["cls"][0].device)

    def assign_batch(self, targets: list[dict[str, Tensor]], points: Points) -> tuple[Tensor, Tensor]:
        """positive [B, P] bool and (l, t, r, b) targets [B, P, 4] for a batch."""
        gt_index, distances = [], []
        for i, target in enumerate(targets):
            boxes = target.get("boxes") if isinstance(target, dict) else None
            if boxes is None:
                raise ValueError(f"targets[{i}]: needs a 'boxes' Tensor[N,4]")
            boxes = torch.as_tensor(boxes, dtype=torch.float32, device=points.xy.device).reshape(-1, 4)
            idx, dist = assign(points, boxes, self.center_sampling, self.center_sample_radius)
            gt_index.append(idx)
            distances.append(dist)
        return torch.stack(gt_index) >= 0, torch.stack(distances)

    def compute_loss(
        self, head_outputs: HeadOutputs, targets: list[dict[str, Tensor]], points: Points | None = None
    ) -> dict[str, Tensor]:
        points = points if points is not None else self.points(head_outputs)
        positive, target_distances = self.assign_batch(targets, points)
        cls, reg, ctr = flatten_outputs(head_outputs)
        return fcos_losses(
            cls,
            reg,
            ctr,
            points.xy,
            positive,
            target_distances,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            box_kind=self.box_loss,
        )

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    @float32_postprocess
    def postprocess(
        self, head_outputs: HeadOutputs, image_size: tuple[int, int], points: Points | None = None
    ) -> list[dict[str, Tensor]]:
        """mmdet ``_predict_by_feat_single`` + ``_bbox_post_process`` for each image.

        Per level: keep sigmoid(cls) > score_thr, then the top nms_pre of those; decode and
        clamp to ``image_size`` (H, W); score = sigmoid(cls) x sigmoid(centerness) (no sqrt);
        drop empty boxes (mmdet min_bbox_size=0 keeps w > 0 and h > 0); NMS; max_per_img.
        All of it in float32 with autocast off (``models/precision.py``).
        """
        points = points if points is not None else self.points(head_outputs)
        starts = [0] + list(torch.tensor(points.num_per_level).cumsum(0).tolist())
        cls, reg, ctr = flatten_outputs(head_outputs)
        results = []
        for b in range(cls.shape[0]):
            boxes_l, scores_l = [], []
            for lo, hi in zip(starts[:-1], starts[1:]):
                scores = cls[b, lo:hi].sigmoid()
                keep = torch.nonzero(scores > self.score_thr).squeeze(1)
                if keep.numel() > self.nms_pre:
                    keep = keep[scores[keep].topk(self.nms_pre).indices]
                idx = keep + lo
                boxes_l.append(distances_to_boxes(points.xy[idx], reg[b, idx], image_size))
                scores_l.append(scores[keep] * ctr[b, idx].sigmoid())
            boxes, scores = torch.cat(boxes_l), torch.cat(scores_l)
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, scores = boxes[valid], scores[valid]
            labels = torch.ones_like(scores, dtype=torch.int64)
            keep = batched_nms(boxes, scores, labels, self.nms_thr)[: self.max_per_img]
            results.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
        return results


def flatten_outputs(head_outputs: HeadOutputs) -> tuple[Tensor, Tensor, Tensor]:
    """Per-level maps -> cls [B, P], reg [B, P, 4], ctr [B, P] in point order."""
    def cat(maps: list[Tensor]) -> Tensor:
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1]) for m in maps], dim=1)

    return cat(head_outputs["cls"])[..., 0], cat(head_outputs["reg"]), cat(head_outputs["ctr"])[..., 0]


class FCOS(nn.Module):
    """Single-stage detector: preprocess -> backbone -> neck -> head.

    ``forward(images, targets=None)``: images float Tensor[B,1,H,W] of raw grey 0..255.
    Training with targets -> dict of losses; otherwise a list of {boxes, scores, labels}
    per image, boxes xyxy in input pixels, labels 1 (the single "target" class; 0 is
    background, as in torchvision).
    """

    in_channels = 1

    def __init__(self, preprocess: nn.Module, backbone: nn.Module, neck: nn.Module, head: FCOSHead) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.backbone = backbone
        self.neck = neck
        self.head = head

    def forward_raw(self, images: Tensor) -> HeadOutputs:
        """Tensor-mode forward (no loss, no decoding): what complexity profiling counts."""
        return self.head(self.neck(self.backbone(self.preprocess(images))))

    def forward(self, images: Tensor, targets: list[dict[str, Any]] | None = None) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        head_outputs = self.forward_raw(images)
        if self.training and targets is not None:
            if len(targets) != images.shape[0]:
                raise ValueError(f"targets: {len(targets)} entries for a batch of {images.shape[0]} images")
            return self.head.compute_loss(head_outputs, targets)
        return self.head.postprocess(head_outputs, (images.shape[-2], images.shape[-1]))


def build_parts(cfg: ModelConfig) -> tuple[InputNormalizer, nn.Module, FPN]:
    """Preprocess, backbone and neck as configured (shared by every FCOS-family detector)."""
    preprocess = InputNormalizer(cfg.input_norm, cfg.in_channel_mode)
    backbone = build_backbone(cfg, in_channels=preprocess.out_channels)
    neck = build_neck(cfg, backbone.out_channels, backbone.strides)
    return preprocess, backbone, neck


def fcos_head_args(cfg: ModelConfig) -> dict[str, Any]:
    """The ``FCOSHead`` keyword arguments a config sets (``BAFEHead`` takes them as well)."""
    return {
        "width": cfg.head_width, "depth": cfg.head_depth, "norm_groups": cfg.norm_groups, "prior_prob": cfg.prior_prob,
        "center_sampling": cfg.center_sampling, "center_sample_radius": cfg.center_sample_radius,
        "focal_alpha": cfg.focal_alpha, "focal_gamma": cfg.focal_gamma, "box_loss": cfg.box_loss,
        "score_thr": cfg.score_thr, "nms_pre": cfg.nms_pre, "nms_thr": cfg.nms_thr, "max_per_img": cfg.max_per_img,
    }


def build_fcos_head(cfg: ModelConfig, neck: FPN) -> FCOSHead:
    return FCOSHead(neck.out_channels, neck.strides, cfg.level_regress_ranges(), **fcos_head_args(cfg))


# Training recipe for the keys a config leaves out (models/registry.py), measured on the quickstart
# data (4 epochs on CPU; the table is in harness/presets/quickstart.yaml's header).
FCOS_RECIPE = {
    "optim.name": "adamw", "optim.lr": 3e-3, "optim.grad_clip": None,
    "schedule.warmup": "linear", "schedule.warmup_iters": 20, "schedule.warmup_factor": 0.1,
}


# No model defaults of its own: ModelConfig's are this detector's (the Table II 5-level baseline).
@register("fcos", "FCOS as BAFE-Net's reference host (mmdet FCOSHead; 3 levels P3-P5) or Table II baseline (5 levels P3-P7)",
          recipe=FCOS_RECIPE)
def build_fcos(cfg: ModelConfig) -> FCOS:
    preprocess, backbone, neck = build_parts(cfg)
    return FCOS(preprocess, backbone, neck, build_fcos_head(cfg, neck))


__all__ = [
    "FCOS", "FCOSHead", "FCOS_RECIPE", "Scale", "build_fcos", "build_fcos_head", "build_parts", "conv_tower", "fcos_head_args",
    "flatten_outputs",
]
