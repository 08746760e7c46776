"""FCOS points and target assignment (mmdet FCOSHead semantics, as GrokCV/BAFE-Net configures them).

Points sit at (i + 0.5) x stride (mmdet MlvlPointGenerator offset 0.5), listed level by
level, row-major inside a level -- the same order as the flattened head outputs.
A point is positive for a box when it is STRICTLY inside it (min(l, t, r, b) > 0; with
centre sampling: strictly inside the box clipped to a radius x stride square around the box
centre) and max(l, t, r, b) lies in the level's [lower, upper] regress range; a point
inside several boxes takes the one with the smallest area (the first on exact ties).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Points:
    """All points of all levels, concatenated finest level first."""

    xy: Tensor  # [P, 2] (x, y) in input pixels
    stride: Tensor  # [P] stride of each point's level
    regress_range: Tensor  # [P, 2] (lower, upper) of each point's level
    num_per_level: list[int]


def make_points(
    sizes: list[tuple[int, int]],
    strides: list[int],
    regress_ranges: list[tuple[float, float]],
    device: torch.device | str = "cpu",
) -> Points:
    """Points for feature maps of ``sizes`` [(H, W), ...] at ``strides``."""
    if not len(sizes) == len(strides) == len(regress_ranges):
        raise ValueError(f"{len(sizes)} levels but {len(strides)} strides and {len(regress_ranges)} regress ranges")
    xy, stride, ranges, counts = [], [], [], []
    for (h, w), s, rr in zip(sizes, strides, regress_ranges):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        xy.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
        stride.append(torch.full((h * w,), float(s), device=device))
        ranges.append(torch.tensor(rr, device=device, dtype=torch.float32).expand(h * w, 2))
        counts.append(h * w)
    return Points(torch.cat(xy), torch.cat(stride), torch.cat(ranges), counts)


def assign(
    points: Points,
    boxes: Tensor,
    center_sampling: bool = False,
    center_sample_radius: float = 1.5,
) -> tuple[Tensor, Tensor]:
    """Assign one image's ``boxes`` [N, 4] xyxy to the points.

    Returns ``gt_index`` [P] int64 (-1 = negative) and ``distances`` [P, 4] (l, t, r, b) to
    the assigned box (zeros for negatives).
    """
    num_points = points.xy.shape[0]
    if boxes.numel() == 0:
        return (
            torch.full((num_points,), -1, dtype=torch.long, device=points.xy.device),
            points.xy.new_zeros((num_points, 4)),
        )
    boxes = boxes.to(points.xy)
    x = points.xy[:, 0, None]
    y = points.xy[:, 1, None]  # [P, 1] against boxes [N]
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    ltrb = torch.stack([x - x1, y - y1, x2 - x, y2 - y], dim=2)  # [P, N, 4]

    if center_sampling:
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        radius = points.stride[:, None] * center_sample_radius
        # centre square clipped to the box, so it never reaches outside the box
        cb = torch.stack(
            [
                torch.maximum(cx - radius, x1),
                torch.maximum(cy - radius, y1),
                torch.minimum(cx + radius, x2),
                torch.minimum(cy + radius, y2),
            ],
            dim=2,
        )
        inside = torch.stack([x - cb[..., 0], y - cb[..., 1], cb[..., 2] - x, cb[..., 3] - y], 2).amin(2) > 0
    else:
        inside = ltrb.amin(dim=2) > 0

    reach = ltrb.amax(dim=2)
    in_range = (reach >= points.regress_range[:, 0, None]) & (reach <= points.regress_range[:, 1, None])
    areas = ((x2 - x1) * (y2 - y1)).expand(num_points, -1).clone()
    areas[~(inside & in_range)] = math.inf
    min_area, gt_index = areas.min(dim=1)  # first index on ties, like mmdet
    gt_index[min_area == math.inf] = -1
    distances = ltrb[torch.arange(num_points, device=ltrb.device), gt_index.clamp(min=0)]
    distances[gt_index < 0] = 0
    return gt_index, distances


def centerness_target(distances: Tensor) -> Tensor:
    """sqrt(min(l,r)/max(l,r) * min(t,b)/max(t,b)) for positive points' (l, t, r, b)."""
    lr = distances[:, [0, 2]]
    tb = distances[:, [1, 3]]
    ratio = (lr.amin(-1) / lr.amax(-1)) * (tb.amin(-1) / tb.amax(-1))
    return ratio.clamp(min=0).sqrt()


def distances_to_boxes(xy: Tensor, distances: Tensor, max_shape: tuple[int, int] | None = None) -> Tensor:
    """(l, t, r, b) from points -> xyxy boxes, optionally clamped to (H, W)."""
    boxes = torch.cat([xy - distances[:, :2], xy + distances[:, 2:]], dim=1)
    if max_shape is not None:
        h, w = max_shape
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return boxes


__all__ = ["Points", "assign", "centerness_target", "distances_to_boxes", "make_points"]
