"""OSCAR's training targets: all-scale pseudo-box assignment and the NoCo regression map.

Assignment (YimianDai/open-deepinfrared ``deepir/models/dense_heads/oscar/oscar_w_noco_head.py``,
``_get_coarse_target_single`` / ``_get_refine_target_single``), per level of stride s with pseudo-box side L:

1. a GT box whose AREA is <= L^2 is replaced by an L x L square on its centre (the switch
   is on area, not per axis, so a thin box larger than L^2 keeps its real shape);
2. points are cell centres ((j + 0.5) s, (i + 0.5) s);
3. a point is positive for a box it lies STRICTLY inside (min(l, t, r, b) > 0);
4. a point inside several boxes takes the one with the smallest REAL area (first on ties).

There are no regress ranges: every GT is assigned at every level ("all-scale"). The
released code uses L = 8 on P3 (stride 8) and L = 6 on P2 (stride 4); in general
L = ``side_factor`` x stride with factors 1 (coarse) and 1.5 (refine).

The NoCo target is the GT NoCo map (``irstdlab.models.noco_map``, the metric's own
definition) of the network input, padding included (0 there), sampled at the refine level
with ``nearest-exact`` (pixel (s*i + s/2, s*j + s/2)), as ODI's ``NoCoTargets`` + ``OSCARPad``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from irstdlab.models.noco_map import build_noco_map

COARSE_SIDE_FACTOR = 1.0  # L = 8 at stride 8
REFINE_SIDE_FACTOR = 1.5  # L = 6 at stride 4


def level_points(height: int, width: int, stride: int, device: torch.device | str = "cpu") -> Tensor:
    """[H*W, 2] (x, y) cell centres of one level, row-major (the flattened map's order)."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def pseudo_boxes(boxes: Tensor, side: float) -> Tensor:
    """Boxes of area <= side^2 become side x side squares on their centres; others stay."""
    boxes = boxes.reshape(-1, 4).float()
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = side / 2
    square = torch.cat([centre - half, centre + half], dim=1)
    return torch.where((area <= side * side)[:, None], square, boxes)


@dataclass
class LevelTargets:
    """Assignment of one level for one image."""

    gt_index: Tensor  # [P] int64, -1 = background
    boxes: Tensor  # [P, 4] the assigned (pseudo) box of each point (zeros for background)


def assign_level(points: Tensor, boxes: Tensor, side: float, *, use_pseudo_targets: bool) -> LevelTargets:
    """Assign ``points`` [P, 2] to ``boxes`` [N, 4] with pseudo boxes of ``side``.

    The regression target is the pseudo box when ``use_pseudo_targets`` (coarse level) and
    the real box otherwise (refine level); positivity always uses the pseudo box.
    """
    boxes = boxes.reshape(-1, 4).to(points.device, torch.float32)
    num_points = points.shape[0]
    if boxes.numel() == 0:
        return LevelTargets(torch.full((num_points,), -1, dtype=torch.int64, device=points.device),
                            points.new_zeros(num_points, 4))
    pseudo = pseudo_boxes(boxes, side)
    x, y = points[:, 0:1], points[:, 1:2]
    inside = torch.stack([x - pseudo[:, 0], y - pseudo[:, 1], pseudo[:, 2] - x, pseudo[:, 3] - y], -1).amin(-1) > 0
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(num_points, -1)
    area = torch.where(inside, area, torch.full_like(area, float("inf")))
    best_area, best = area.min(dim=1)  # min returns the first index on ties
    gt_index = torch.where(torch.isfinite(best_area), best, torch.full_like(best, -1))
    source = pseudo if use_pseudo_targets else boxes
    assigned = torch.where((gt_index >= 0)[:, None], source[gt_index.clamp(min=0)], points.new_zeros(1, 4))
    return LevelTargets(gt_index, assigned)


def noco_targets(images: Tensor, targets: list[dict[str, Tensor]], size: tuple[int, int]) -> Tensor:
    """[B, 1, h, w] NoCo regression targets at a level of ``size`` (h, w).

    ``images`` are the raw grey network inputs [B, 1, H, W]; the map is built on the CPU in
    float64 (the metric's code) and sampled ``nearest-exact`` like ODI's ``F.interpolate``.
    """
    maps = []
    for image, target in zip(images, targets):
        grey = image[0].detach().float().cpu().numpy()
        boxes = target["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
        maps.append(torch.from_numpy(build_noco_map(grey, boxes).astype(np.float32)))
    full = torch.stack(maps)[:, None].to(images.device)
    return F.interpolate(full, size=size, mode="nearest-exact")


__all__ = ["COARSE_SIDE_FACTOR", "REFINE_SIDE_FACTOR", "LevelTargets", "assign_level", "level_points",
           "noco_targets", "pseudo_boxes"]
