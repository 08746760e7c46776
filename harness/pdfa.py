"""Probability of detection (Pd) and false alarms (Fa) for box detectors, at one score threshold.

The IRSTD segmentation papers count a target as detected when a predicted blob's
centroid lies within a few pixels of the target's centroid; for detectors the
natural point is the box centre. A target is detected when a detection centre lies
within ``radius`` px of its centroid (``match="centroid"``) or inside its box
(``match="box"``, closed interval). Detections are visited by descending score
(ties: input order, images independent) and each takes the *nearest* still
unmatched eligible target, so one detection detects at most one target and one
target is detected once. Unmatched detections are false alarms; a detection whose
only eligible targets are ignored ones is neither.

All points share the boxes' continuous pixel-edge coordinates: the centre of pixel
(row r, col c) is (c + 0.5, r + 0.5). Centroids from masks given in index
coordinates must be shifted by +0.5 before they are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from irstdlab.harness.metrics import (
    TieOrder,
    _check_lengths,
    _to_numpy,
    parse_detections,
    parse_ground_truths,
    rank_detections,
)

Match = Literal["centroid", "box"]


def _sizes(image_sizes: Any, n: int) -> np.ndarray | None:
    if image_sizes is None:
        return None
    try:
        arr = np.asarray(image_sizes, np.float64)
    except (TypeError, ValueError):
        raise ValueError("image_sizes: expected (H, W) or a list of (H, W)") from None
    if arr.shape == (2,):
        arr = np.tile(arr, (n, 1))
    if arr.shape != (n, 2) or not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"image_sizes: expected one positive (H, W) or {n} of them, got shape {arr.shape}")
    return arr


def evaluate_pdfa(
    detections: Sequence[Any],
    ground_truths: Sequence[Any],
    *,
    score_thr: float = 0.0,
    match: Match = "centroid",
    radius: float = 3.0,
    centroids: Sequence[Any] | None = None,
    image_sizes: Any = None,
    tie_order: TieOrder = "stable",
) -> dict[str, Any]:
    """Pd and Fa of detections with ``score >= score_thr``.

    ``centroids``: optional per-image ``M x 2`` (x, y) target points replacing the box
    centres (same order as the GT boxes). ``image_sizes``: one ``(H, W)`` for all images
    or one per image; without it ``fa_per_mpix`` is NaN. ``pd`` is NaN when there is
    no counted target. Returns ``pd, fa_per_image, fa_per_mpix, num_targets,
    num_detected, num_false_alarms, num_images`` and ``false_alarms`` (per image).
    """
    if match not in ("centroid", "box"):
        raise ValueError(f"match must be 'centroid' or 'box', got {match!r}")
    if not (np.isfinite(radius) and radius >= 0):
        raise ValueError(f"radius must be a non-negative number, got {radius!r}")
    dets = parse_detections(detections)
    gts = parse_ground_truths(ground_truths)
    extra = [("centroids", len(centroids))] if centroids is not None else []
    _check_lengths(len(dets), len(gts), *extra)
    sizes = _sizes(image_sizes, len(gts))
    pos, _ = rank_detections([s for _, s in dets], tie_order)

    num_targets = num_detected = 0
    false_alarms = np.zeros(len(gts), np.int64)
    start = 0
    for i, ((boxes, scores), (gboxes, ignore)) in enumerate(zip(dets, gts)):
        rank = pos[start:start + len(boxes)]
        start += len(boxes)
        if centroids is not None:
            pts = _to_numpy(centroids[i]).astype(np.float64).reshape(-1, 2) if len(gboxes) else np.zeros((0, 2))
            if pts.shape != (len(gboxes), 2) or not np.isfinite(pts).all():
                raise ValueError(f"centroids[{i}]: expected {len(gboxes)} finite (x, y) rows, got shape {pts.shape}")
        else:
            pts = np.stack([(gboxes[:, 0] + gboxes[:, 2]) / 2, (gboxes[:, 1] + gboxes[:, 3]) / 2], axis=1)
        num_targets += int((~ignore).sum())
        keep = scores >= score_thr
        boxes, rank = boxes[keep], rank[keep]
        centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
        dist = np.hypot(centre[:, None, 0] - pts[None, :, 0], centre[:, None, 1] - pts[None, :, 1])
        if match == "centroid":
            eligible = dist <= radius
        else:
            eligible = ((gboxes[None, :, 0] <= centre[:, None, 0]) & (centre[:, None, 0] <= gboxes[None, :, 2])
                        & (gboxes[None, :, 1] <= centre[:, None, 1]) & (centre[:, None, 1] <= gboxes[None, :, 3]))
        regular = eligible & ~ignore[None, :]
        near_ignored = (eligible & ignore[None, :]).any(axis=1)
        # detections with no eligible regular target need no greedy step
        fa = int((~regular.any(axis=1) & ~near_ignored).sum())
        taken = np.zeros(len(gboxes), bool)
        for d in np.flatnonzero(regular.any(axis=1))[np.argsort(rank[regular.any(axis=1)], kind="stable")]:
            free = regular[d] & ~taken
            if free.any():
                taken[np.flatnonzero(free)[np.argmin(dist[d, free])]] = True
            elif not near_ignored[d]:
                fa += 1
        num_detected += int(taken.sum())
        false_alarms[i] = fa

    total_fa = int(false_alarms.sum())
    mpix = float((sizes[:, 0] * sizes[:, 1]).sum() / 1e6) if sizes is not None else float("nan")
    return {
        "pd": num_detected / num_targets if num_targets else float("nan"),
        "fa_per_image": total_fa / len(gts) if gts else float("nan"),
        "fa_per_mpix": total_fa / mpix if sizes is not None and mpix > 0 else float("nan"),
        "num_targets": num_targets,
        "num_detected": num_detected,
        "num_false_alarms": total_fa,
        "num_images": len(gts),
        "false_alarms": false_alarms,
        "score_thr": float(score_thr),
        "match": match,
        "radius": float(radius),
    }
