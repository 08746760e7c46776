"""Normalised-contrast (NoCo) map and mNoCoAP, the OSCAR / ODI point metric.

Definition (YimianDai/open-deepinfrared ``NoCoTargets`` in ``deepir/datasets/pipelines/transforms.py``
and ``deepir/core/evaluation/mean_nocoap.py``), implemented from the description:

* NoCo map, per GT box truncated to integers (c0, r0, c1, r1), w = c1-c0, h = r1-r0:
  the window rows [r0-h, r1+h) x cols [c0-w, c1+w) clipped to the image; a distance
  weight ``exp(-d^2/2)`` on a 3h x 3w grid of ``linspace(-1.5, 1.5)`` coordinates
  (cropped like the window) times the contrast ``(I - min_window) / (max_target_cell
  - min_window + 0.01)``; min-max normalised over the window (``+0.001`` in the
  denominator) and *assigned* into the map, so later boxes overwrite earlier ones.
* Matching, per image in score order: a detection becomes its box centre; its pixel
  is ``(np.round(cy), np.round(cx))`` (half to even; H or W clamped to H-1 / W-1).
  TP iff NoCo there > tau (strict) and the first GT box in annotation order that
  contains the centre (closed interval) is uncovered; that GT becomes covered.
  Everything else is FP; there is no IoU anywhere.
* NoCoAP(tau) = VOC area AP pooled over the data set; mNoCoAP = mean over
  tau = 0.1 ... 0.9. With no GT at all, AP is 0 (as ODI's ``eval_mnocoap``).

Choices where the original is undefined: a box whose integer target cell is empty
(zero width/height) leaves the map unchanged (ODI raises, BAFE-Net stops painting
the image); the target cell is clipped to the image (ODI's negative slice wraps).

Not implemented, documented for comparison: BAFE-Net's copy of this metric
(``mnocoap_det_metric.py`` / ``Seg2DetTargets.py``) reads boxes and detection
centres as (y, x): the point look-up and point-in-box tests cancel out, but the
contrast window is read from the transposed pixels of the 512x512 *network input*
while boxes stay in original coordinates, and an empty target cell abandons the
image's remaining boxes. With GT-box oracle detections on SIRST-V2 test_full it
gives 0.31-0.36 against ODI's 0.7365, so its numbers are not comparable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from irstdlab.harness.metrics import (
    TieOrder,
    _check_lengths,
    _to_numpy,
    first_per_group,
    parse_detections,
    parse_ground_truths,
    rank_detections,
    summarize_ranked,
)
from irstdlab.models.noco_map import build_noco_map

DEFAULT_THRESHOLDS = np.linspace(0.1, 0.9, 9)


def _grey(image: Any, where: str) -> np.ndarray:
    img = _to_numpy(image)
    if img.ndim == 3:  # a colour image is averaged over channels, as ODI does
        img = img.mean(-1)
    if img.ndim != 2 or img.size == 0:
        raise ValueError(f"{where}: expected an H x W (or H x W x C) image, got shape {img.shape}")
    return img  # windows are converted to float64 where used: a whole-image copy costs more than the map


def noco_map(image_grey: Any, gt_boxes: Any, mu: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    """The GT NoCo map (float64 H x W, values in [0, 1)) of one image.

    Inputs are checked here; the map itself is ``irstdlab.models.noco_map.build_noco_map``,
    shared with OSCAR's training target (models must not import the harness).
    """
    img = _grey(image_grey, "image")
    boxes = parse_ground_truths([gt_boxes])[0][0]
    return build_noco_map(img, boxes, mu, sigma)


def _centre_pixels(boxes: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    row, col = np.round(cy).astype(np.int64), np.round(cx).astype(np.int64)  # half to even
    row[row == shape[0]] = shape[0] - 1  # ODI clamps only the one-past-the-end index
    col[col == shape[1]] = shape[1] - 1
    return cx, cy, row, col


def _lookup(nmap: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The map's value at each box centre's pixel."""
    _cx, _cy, row, col = _centre_pixels(boxes, nmap.shape)
    # a centre outside the image scores NoCo 0 (an FP), BAFE-Net's guard; ODI would wrap or crash
    inb = (row >= 0) & (row < nmap.shape[0]) & (col >= 0) & (col < nmap.shape[1])
    return np.where(inb, nmap[np.where(inb, row, 0), np.where(inb, col, 0)], 0.0)


def detection_noco_values(boxes: Any, gt_boxes: Any, image_grey: Any) -> np.ndarray:
    """NoCo at each detection box's centre pixel for ONE image (original resolution)."""
    boxes = _to_numpy(boxes).astype(np.float64).reshape(-1, 4)
    return _lookup(noco_map(image_grey, gt_boxes), boxes)


def evaluate_nocoap(
    detections: Sequence[Any],
    ground_truths: Sequence[Any],
    images: Sequence[Any] | None = None,
    *,
    noco_maps: Sequence[np.ndarray] | None = None,
    noco_values: Sequence[np.ndarray] | None = None,
    thresholds: Sequence[float] | np.ndarray = DEFAULT_THRESHOLDS,
    tie_order: TieOrder = "stable",
) -> dict[str, Any]:
    """mNoCoAP over a data set. Give ``images`` (grey, original resolution; the maps
    are built here), precomputed ``noco_maps``, or ``noco_values``: each image's NoCo value
    at each detection's centre pixel (``detection_noco_values``), which lets an evaluation
    loop drop every image and map as soon as it has scored it.

    Returns ``mNoCoAP``, ``aps`` (one per threshold), ``per_threshold`` (``NoCoAP10``
    ... ``NoCoAP90`` -> AP), ``recalls`` (final recall per threshold), ``thresholds``,
    ``num_gts``, ``num_dets`` and ``num_images``. ``tie_order`` as in
    ``metrics.evaluate_detections`` ("mmdet" = ODI's numpy calls).
    """
    dets = parse_detections(detections)
    gts = parse_ground_truths(ground_truths)
    given = {k: v for k, v in (("images", images), ("noco_maps", noco_maps), ("noco_values", noco_values))
             if v is not None}
    if len(given) != 1:
        raise ValueError("give exactly one of images, noco_maps or noco_values")
    (kind, per_image), = given.items()
    _check_lengths(len(dets), len(gts), (kind, len(per_image)))
    for i, (_, ign) in enumerate(gts):
        if ign.any():
            raise ValueError(f"ground_truths[{i}].ignore: mNoCoAP has no ignored targets")
    thr = np.asarray(thresholds, np.float64)
    if thr.ndim != 1 or thr.size == 0 or not np.isfinite(thr).all():
        raise ValueError("thresholds must be a non-empty 1-D list of numbers")

    values, first_gt, img_of = [], [], []
    for i, ((boxes, _), (gboxes, _)) in enumerate(zip(dets, gts)):
        if noco_values is not None:
            value = np.asarray(noco_values[i], np.float64).reshape(-1)
            if value.shape[0] != len(boxes):
                raise ValueError(f"noco_values[{i}]: {value.shape[0]} values for {len(boxes)} detections")
            values.append(value)
        else:
            if images is not None:
                nmap = noco_map(images[i], gboxes)
            else:
                assert noco_maps is not None, "exactly one source was checked above"
                nmap = _to_numpy(noco_maps[i]).astype(np.float64, copy=False)
                if nmap.ndim != 2:
                    raise ValueError(f"noco_maps[{i}]: expected an H x W map, got shape {nmap.shape}")
            values.append(_lookup(nmap, boxes))
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = ((gboxes[None, :, 0] <= cx[:, None]) & (cx[:, None] <= gboxes[None, :, 2])
                  & (gboxes[None, :, 1] <= cy[:, None]) & (cy[:, None] <= gboxes[None, :, 3]))
        # the FIRST containing GT in annotation order, -1 when none (never a later one)
        first_gt.append(np.where(inside.any(1), inside.argmax(1), -1) if len(gboxes) else np.full(len(boxes), -1))
        img_of.append(np.full(len(boxes), i))

    n = sum(len(b) for b, _ in dets)
    value = np.concatenate(values) if n else np.zeros(0)
    gt_idx = np.concatenate(first_gt).astype(np.int64) if n else np.zeros(0, np.int64)
    img = np.concatenate(img_of) if n else np.zeros(0, np.int64)
    scores = np.concatenate([s for _, s in dets]) if n else np.zeros(0)
    pos, order = rank_detections([s for _, s in dets], tie_order)
    num_gts = sum(len(b) for b, _ in gts)
    g_stride = max((len(b) for b, _ in gts), default=0) + 1

    aps, recalls = [], []
    for tau in thr:
        cand = np.flatnonzero((value > tau) & (gt_idx >= 0))
        tp = np.zeros(n, bool)
        tp[cand[first_per_group(img[cand] * g_stride + gt_idx[cand], pos[cand])]] = True
        r = summarize_ranked(tp[order].astype(np.float64), (~tp)[order].astype(np.float64),
                             scores[order], num_gts, "area")
        aps.append(r["ap"] if num_gts > 0 else 0.0)
        recalls.append(r["recall"])
    return {
        "mNoCoAP": float(np.mean(aps)),
        "aps": aps,
        "per_threshold": {f"NoCoAP{int(round(t * 100)):02d}": ap for t, ap in zip(thr, aps)},
        "recalls": recalls,
        "thresholds": thr.tolist(),
        "num_gts": int(num_gts),
        "num_dets": int(n),
        "num_images": len(gts),
    }
