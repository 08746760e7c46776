"""VOC average precision (mAP07 / mAP12 / mAP75) and recall, with mmdetection's semantics.

The named metrics (``VOC_METRICS``): ``mAP07`` = 11-point AP at IoU 0.5 and ``mAP12`` = area
AP at IoU 0.5, as the released BAFE-Net code computes both (mmdet's VOCMetric with
its default iou_thrs, GrokCV/BAFE-Net configs/detection/_base_/datasets/*.py); the paper's
text defines mAP12 at IoU 0.75, which is reported separately as ``mAP75`` (area AP at IoU
0.75), so both readings of the paper's tables are available.

``evaluate_detections`` reproduces mmdet's ``eval_map`` with ``tpfp_default`` for one
class (the protocol GrokCV/BAFE-Net configures: open-mmlab/mmdetection
``mmdet/evaluation/metrics/voc_metric.py`` and ``mmdet/evaluation/functional/mean_ap.py``):

* each detection takes its max-IoU ground truth of its own image (first index on
  ties, regular GT before ignored GT); IoU >= thr and that GT uncovered -> TP (the GT
  becomes covered); already covered -> FP, with no fall back to a second-best GT;
  IoU < thr -> FP; max-IoU GT ignored -> neither TP nor FP (ignored GT never count
  in ``num_gts`` and are never covered);
* "covered" is decided in per-image score order; the dataset-level curve is the
  concatenation of all images ranked by score;
* IoU is computed in float32 like mmdet's ``bbox_overlaps`` (union clamped at 1e-6);
  ``legacy_coordinates=True`` adds the +1 pixel to widths, heights and intersections.

Vectorised: one IoU pass over all detections against their image's padded GT, and
the greedy marking reduces to "first detection (in per-image order) per GT among
those whose max-IoU GT it is" because mmdet never re-matches to a second GT.

Ties in score. mmdet calls ``np.argsort(-scores)`` (numpy's default sort, which is
not stable; with SIMD sorts on AVX-512 CPUs even 5 equal scores come out in a
build-dependent order). ``tie_order="stable"`` (default) is the deterministic reading
of the same rule: equal scores keep input order, images in list order, i.e. a stable
sort of mmdet's concatenation. ``tie_order="mmdet"`` makes the very same numpy calls
as mmdet (float32 scores, per image then pooled), so a side-by-side check on one
machine agrees exactly. Checked against mmdet 3.3.0's ``eval_map`` on 400 random
scenes with heavy ties, ignored GT, both AP modes and both coordinate conventions:
"mmdet" matched all 400; "stable" matched all 400 once scores were distinct.

The input parsers here are shared by ``noco.py`` and ``pdfa.py``; the per-subset hook
(``evaluate_subsets``) works with any of the three metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

ApMode = Literal["11points", "area"]
TieOrder = Literal["stable", "mmdet"]
_IOU_EPS = 1e-6  # mmdet bbox_overlaps' union floor
_DIV_EPS = float(np.finfo(np.float32).eps)  # mmdet eval_map's divide-by-zero floor
_MAX_IOU_CELLS = 4_000_000  # detections x padded GT per IoU chunk (memory bound)


# --------------------------------------------------------------------------- inputs
def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _boxes(x: Any, where: str) -> np.ndarray:
    a = _to_numpy(x).astype(np.float64, copy=False)
    if a.size == 0:
        return np.zeros((0, 4), np.float64)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError(f"{where}: boxes must have shape (N, 4), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: boxes contain NaN or infinite values")
    return a


def _vector(x: Any, n: int, where: str, dtype: Any = np.float64) -> np.ndarray:
    a = _to_numpy(x)
    if a.size == 0 and n == 0:
        return np.zeros(0, dtype)
    if a.ndim != 1 or a.shape[0] != n:
        raise ValueError(f"{where}: expected shape ({n},) to match the boxes, got {a.shape}")
    if dtype is bool:
        if a.dtype != bool and not np.isin(a, (0, 1)).all():
            raise ValueError(f"{where}: ignore flags must be booleans")
        return a.astype(bool)
    a = a.astype(dtype, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{where}: contains NaN or infinite values")
    return a


def parse_detections(detections: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One ``(boxes N x 4, scores N)`` float64 pair per image.

    Each entry may be a pair ``(boxes, scores)``, a dict with ``boxes`` and ``scores``
    (a torchvision detector's output), or an mmdet-style ``N x 5`` array.
    """
    out = []
    for i, det in enumerate(detections):
        where = f"detections[{i}]"
        if isinstance(det, Mapping):
            if "boxes" not in det or "scores" not in det:
                raise ValueError(f"{where}: a dict entry needs 'boxes' and 'scores'")
            raw_boxes, raw_scores = det["boxes"], det["scores"]
        elif isinstance(det, (tuple, list)) and len(det) == 2:
            raw_boxes, raw_scores = det
        else:
            arr = _to_numpy(det)
            if arr.ndim != 2 or arr.shape[1] != 5:
                raise ValueError(f"{where}: expected (boxes, scores), a dict or an N x 5 array")
            raw_boxes, raw_scores = arr[:, :4], arr[:, 4]
        boxes = _boxes(raw_boxes, f"{where}.boxes")
        scores = _vector(raw_scores, len(boxes), f"{where}.scores")
        out.append((boxes, scores))
    return out


def parse_ground_truths(ground_truths: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One ``(boxes M x 4, ignore M bool)`` pair per image.

    Each entry may be an ``M x 4`` box array, a pair ``(boxes, ignore)`` or a dict with
    ``boxes`` (and optionally ``ignore``).
    """
    out = []
    for i, gt in enumerate(ground_truths):
        where = f"ground_truths[{i}]"
        ignore: Any = None
        if isinstance(gt, Mapping):
            if "boxes" not in gt:
                raise ValueError(f"{where}: a dict entry needs 'boxes'")
            raw, ignore = gt["boxes"], gt.get("ignore")
        elif isinstance(gt, (tuple, list)) and len(gt) == 2 and _to_numpy(gt[0]).ndim == 2:
            raw, ignore = gt  # a (boxes, ignore) pair; a plain list of two boxes has ndim 1 items
        else:
            raw = gt
        boxes = _boxes(raw, f"{where}.boxes")
        if ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any():
            raise ValueError(f"{where}.boxes: x2 < x1 or y2 < y1 (boxes must be xyxy)")
        flags = np.zeros(len(boxes), bool) if ignore is None else _vector(ignore, len(boxes), f"{where}.ignore", bool)
        out.append((boxes, flags))
    return out


def _check_lengths(n_det: int, n_gt: int, *others: tuple[str, int]) -> None:
    if n_det != n_gt:
        raise ValueError(f"detections has {n_det} images but ground_truths has {n_gt}")
    for name, n in others:
        if n != n_gt:
            raise ValueError(f"{name} has {n} images but ground_truths has {n_gt}")


# ---------------------------------------------------------------------- geometry
def box_iou(boxes1: np.ndarray, boxes2: np.ndarray, legacy_coordinates: bool = False) -> np.ndarray:
    """Pairwise IoU (N x M, float32) of xyxy boxes, as mmdet's ``bbox_overlaps``."""
    a = np.asarray(boxes1, np.float32)[:, None, :]
    b = np.asarray(boxes2, np.float32)[None, :, :]
    return _iou(a, b, legacy_coordinates)


def _iou(a: np.ndarray, b: np.ndarray, legacy: bool) -> np.ndarray:
    """IoU of broadcast float32 boxes ``a[..., 4]`` and ``b[..., 4]``."""
    extra = np.float32(1.0 if legacy else 0.0)
    area_a = (a[..., 2] - a[..., 0] + extra) * (a[..., 3] - a[..., 1] + extra)
    area_b = (b[..., 2] - b[..., 0] + extra) * (b[..., 3] - b[..., 1] + extra)
    iw = np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + extra, 0)
    ih = np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + extra, 0)
    inter = iw * ih
    union = np.maximum(area_a + area_b - inter, np.float32(_IOU_EPS))
    return inter / union


# ------------------------------------------------------------------------ ranking
def rank_detections(
    scores: Sequence[np.ndarray], tie_order: TieOrder = "stable"
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the concatenated detections: ``(pos_in_image, dataset_order)``.

    ``pos_in_image[k]`` orders detection k among those of its own image (smaller is
    visited first); ``dataset_order`` is the permutation ranking all of them.
    """
    flat = np.concatenate([np.asarray(s) for s in scores]) if len(scores) else np.zeros(0)
    if tie_order == "stable":
        order = np.argsort(-flat, kind="stable")
        pos = np.empty(len(flat), np.int64)
        pos[order] = np.arange(len(flat))  # the global rank orders each image's own detections too
        return pos, order
    if tie_order == "mmdet":
        pos = np.empty(len(flat), np.int64)
        start = 0
        for s in scores:
            s32 = np.asarray(s, np.float32)
            pos[start + np.argsort(-s32)] = np.arange(len(s32))
            start += len(s32)
        return pos, np.argsort(-flat.astype(np.float32))
    raise ValueError(f"tie_order must be 'stable' or 'mmdet', got {tie_order!r}")


def first_per_group(group: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Boolean mask: the element with the smallest ``pos`` of each ``group`` value."""
    first = np.zeros(len(group), bool)
    if len(group):
        order = np.lexsort((pos, group))
        g = group[order]
        lead = np.ones(len(g), bool)
        lead[1:] = g[1:] != g[:-1]
        first[order[lead]] = True
    return first


# ----------------------------------------------------------------------------- AP
def average_precision(recall: np.ndarray, precision: np.ndarray, mode: ApMode = "area") -> float:
    """VOC AP of one ranked curve: ``"11points"`` (VOC2007) or ``"area"`` (VOC2010+)."""
    recall = np.asarray(recall, np.float64)
    precision = np.asarray(precision, np.float64)
    if mode == "area":
        mrec = np.concatenate(([0.0], recall, [1.0]))
        mpre = np.concatenate(([0.0], precision, [0.0]))
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # monotone precision envelope
        steps = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    if mode == "11points":
        if recall.size == 0:
            return 0.0
        best_from = np.maximum.accumulate(precision[::-1])[::-1]  # max precision at index >= i
        thresholds = np.arange(0, 1 + 1e-3, 0.1)  # mmdet's exact values (0.30000000000000004 ...)
        # recall is non-decreasing along the ranked list: the first index reaching r holds the max
        first = np.searchsorted(recall, thresholds, side="left")
        reached = first < recall.size
        return float(best_from[first[reached]].sum() / 11)
    raise ValueError(f"ap_mode must be '11points' or 'area', got {mode!r}")


def _curves(tp: np.ndarray, fp: np.ndarray, num_gts: int) -> tuple[np.ndarray, np.ndarray]:
    ctp, cfp = np.cumsum(tp, dtype=np.float64), np.cumsum(fp, dtype=np.float64)
    recall = ctp / max(num_gts, _DIV_EPS)
    precision = ctp / np.maximum(ctp + cfp, _DIV_EPS)
    return recall, precision


def summarize_ranked(
    tp: np.ndarray, fp: np.ndarray, scores: np.ndarray, num_gts: int, ap_mode: ApMode
) -> dict[str, Any]:
    """AP, final recall/precision and curves from TP/FP flags already in rank order."""
    recall, precision = _curves(tp, fp, num_gts)
    return {
        "ap": average_precision(recall, precision, ap_mode),
        "recall": float(recall[-1]) if recall.size else 0.0,
        "precision": float(precision[-1]) if precision.size else 0.0,
        "num_gts": int(num_gts),
        "num_dets": int(len(tp)),
        "tp": int(tp.sum()),
        "fp": int(fp.sum()),
        "recall_curve": recall,
        "precision_curve": precision,
        "scores_curve": scores,
    }


# ---------------------------------------------------------------------- VOC entry
# name -> (IoU threshold, AP mode) of every VOC metric an evaluation reports (see the docstring)
VOC_METRICS: dict[str, tuple[float, ApMode]] = {
    "mAP07": (0.5, "11points"),
    "mAP12": (0.5, "area"),
    "mAP75": (0.75, "area"),
}


def named_voc_metrics(detections: Sequence[Any], ground_truths: Sequence[Any], *,
                      legacy_coordinates: bool) -> dict[str, dict[str, Any]]:
    """``{name: evaluate_detections(...)}`` for every entry of ``VOC_METRICS``."""
    return {name: evaluate_detections(detections, ground_truths, iou_thr=iou_thr, ap_mode=mode,
                                       legacy_coordinates=legacy_coordinates)
            for name, (iou_thr, mode) in VOC_METRICS.items()}


def evaluate_detections(
    detections: Sequence[Any],
    ground_truths: Sequence[Any],
    *,
    iou_thr: float = 0.5,
    ap_mode: ApMode = "11points",
    legacy_coordinates: bool = True,
    tie_order: TieOrder = "stable",
) -> dict[str, Any]:
    """Single-class VOC AP and recall over a data set (mmdet ``eval_map`` semantics).

    Returns ``ap``, ``recall`` and ``precision`` at the end of the ranked list,
    ``num_gts`` (ignored GT excluded), ``num_dets``, ``tp``, ``fp``, the ranked
    ``recall_curve`` / ``precision_curve`` / ``scores_curve``, ``num_images`` and the
    settings used.
    """
    if ap_mode not in ("11points", "area"):
        raise ValueError(f"ap_mode must be '11points' or 'area', got {ap_mode!r}")
    if not 0.0 <= float(iou_thr) <= 1.0:
        raise ValueError(f"iou_thr must be in [0, 1], got {iou_thr!r}")
    dets = parse_detections(detections)
    gts = parse_ground_truths(ground_truths)
    _check_lengths(len(dets), len(gts))

    counts = np.array([len(b) for b, _ in dets], np.int64)
    n = int(counts.sum())
    img = np.repeat(np.arange(len(dets)), counts)
    boxes = np.concatenate([b for b, _ in dets]) if n else np.zeros((0, 4))
    scores = np.concatenate([s for _, s in dets]) if n else np.zeros(0)
    pos, order = rank_detections([s for _, s in dets], tie_order)

    # GT padded per image, regular first then ignored (mmdet stacks them in that order,
    # which decides argmax ties); padding never wins because its IoU is -1.
    g_max = max((len(b) for b, _ in gts), default=0)
    padded = np.zeros((len(gts), max(g_max, 1), 4), np.float32)
    valid = np.zeros((len(gts), max(g_max, 1)), bool)
    ignored = np.zeros_like(valid)
    for i, (b, ign) in enumerate(gts):
        k = np.argsort(ign, kind="stable")
        padded[i, : len(b)] = b[k]
        valid[i, : len(b)] = True
        ignored[i, : len(b)] = ign[k]
    num_gts = int(sum(int((~ign).sum()) for _, ign in gts))

    best_iou = np.full(n, -1.0, np.float32)
    best_gt = np.zeros(n, np.int64)
    step = max(1, _MAX_IOU_CELLS // padded.shape[1])
    boxes32 = boxes.astype(np.float32)
    for s in range(0, n, step):
        rows = slice(s, s + step)
        iou = _iou(boxes32[rows, None, :], padded[img[rows]], legacy_coordinates)
        iou[~valid[img[rows]]] = -1.0
        best_gt[rows] = iou.argmax(axis=1)
        best_iou[rows] = iou[np.arange(iou.shape[0]), best_gt[rows]]

    hit = best_iou >= np.float32(iou_thr)
    hit_ignored = hit & ignored[img, best_gt]
    candidate = np.flatnonzero(hit & ~hit_ignored)
    tp = np.zeros(n, bool)
    tp[candidate[first_per_group(img[candidate] * padded.shape[1] + best_gt[candidate], pos[candidate])]] = True
    fp = ~tp & ~hit_ignored

    result = summarize_ranked(
        tp[order].astype(np.float64), fp[order].astype(np.float64), scores[order], num_gts, ap_mode
    )
    result.update(num_images=len(gts), iou_thr=float(iou_thr), ap_mode=ap_mode,
                  legacy_coordinates=bool(legacy_coordinates))
    return result


# ------------------------------------------------------------------ subset hook
def target_subsets(ground_truths: Sequence[Any]) -> dict[str, list[int]]:
    """Image indices: ``all``, ``with_targets`` (>= 1 counted target) and
    ``background_only`` (no counted target, e.g. SIRST-V2's empty images)."""
    gts = parse_ground_truths(ground_truths)
    with_targets = [i for i, (_, ign) in enumerate(gts) if (~ign).any()]
    has = set(with_targets)
    return {
        "all": list(range(len(gts))),
        "with_targets": with_targets,
        "background_only": [i for i in range(len(gts)) if i not in has],
    }


def evaluate_subsets(
    metric_fn: Callable[..., dict[str, Any]],
    detections: Sequence[Any],
    ground_truths: Sequence[Any],
    subsets: Mapping[str, Sequence[int]],
    *,
    per_image: Mapping[str, Sequence[Any]] | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """Run ``metric_fn(dets, gts, **kwargs)`` on each named subset of images.

    ``per_image`` holds keyword arguments that have one entry per image (e.g.
    ``images`` for mNoCoAP, ``image_sizes`` for Pd/Fa); they are subset alongside.
    An empty subset is reported as ``{"num_images": 0}`` rather than evaluated.
    """
    _check_lengths(len(detections), len(ground_truths),
                   *((f"per_image[{k!r}]", len(v)) for k, v in (per_image or {}).items()))
    out: dict[str, dict[str, Any]] = {}
    for name, idx in subsets.items():
        idx = [int(i) for i in idx]
        bad = [i for i in idx if not 0 <= i < len(ground_truths)]
        if bad:
            raise ValueError(f"subset {name!r}: image index {bad[0]} out of range 0..{len(ground_truths) - 1}")
        if not idx:
            out[name] = {"num_images": 0}
            continue
        extra = {k: [v[i] for i in idx] for k, v in (per_image or {}).items()}
        out[name] = metric_fn([detections[i] for i in idx], [ground_truths[i] for i in idx], **extra, **kwargs)
    return out
