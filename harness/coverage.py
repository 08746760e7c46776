"""Assignment coverage: which ground-truth boxes can a recipe ever learn, before any training.

A detector only learns to score a target if its training assignment gives that target at least
one positive location (FCOS, BAFE-Net, OSCAR) or anchor (RetinaNet, SSD, the Faster R-CNN RPN).
A box without one is never a classification positive, so it is found -- if at all -- only by a
location trained on another box. The covered fraction is therefore a practical ceiling on recall,
and the ranking that puts exactly the covered boxes first and nothing else gives the highest
11-point mAP a recipe can reach. Under the released BAFE-Net recipe (512x512 squash, no
centre sampling, finest level stride 8) about 35% of DenseSIRST boxes are covered, which is why
every FCOS-family row of the paper has recall near 0.33 (mmdet's FCOS assignment, as configured in
GrokCV/BAFE-Net ``configs/detection/fcos_changer_seg/``: a point must lie strictly inside a box).

``measure_coverage(cfg, split)`` reads the split through the recipe's evaluation transform (the
protocol's resize, no flip, no copy-paste), builds the recipe's model without weights, and asks
the model's own assignment (``harness/coverage_assign.py``) which boxes are positive.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from irstdlab.harness.errors import ConfigError

# sqrt(w x h) of a box in input pixels: upper edges of the size bins
SIZE_BIN_EDGES = (2.0, 4.0, 8.0, 16.0, 32.0, math.inf)


@dataclass
class CoverageReport:
    detector: str
    backbone: str
    assignment: str  # which code decided (head / matcher family)
    dataset: str
    split: str
    protocol: str
    images: int
    targets: int
    covered: int
    by_level: list[dict[str, Any]] = field(default_factory=list)
    by_size: list[dict[str, Any]] = field(default_factory=list)
    max_map07: float = 0.0
    max_map12: float = 0.0

    @property
    def coverage(self) -> float:
        return self.covered / self.targets if self.targets else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["coverage"] = round(self.coverage, 6)
        out["recall_ceiling"] = out["coverage"]
        return out


def _fraction(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


def size_bin_label(index: int) -> str:
    low = 0.0 if index == 0 else SIZE_BIN_EDGES[index - 1]
    high = SIZE_BIN_EDGES[index]
    return f">={low:g}" if math.isinf(high) else f"<{high:g}" if low == 0 else f"{low:g}-{high:g}"


def coverage_samples(cfg: Any, split: str) -> tuple[str, list[Any]]:
    """(split name, samples through the protocol's evaluation resize) of a role or a split name."""
    from irstdlab.datasets.build import ROLES, AugmentConfig, build_datasets
    from irstdlab.datasets.readers import open_dataset
    from irstdlab.datasets.transforms import TransformConfig, build_transforms

    data = cfg.data
    in_memory = data.dataset == "synthetic" and data.root is None
    role = split if split in ROLES else "test"
    if split not in ROLES:
        if in_memory:
            raise ConfigError(f"--split {split!r}: the in-memory synthetic set has only the splits {', '.join(ROLES)}")
        data = dataclasses.replace(data, test_split=split)
    try:
        data.validate()
    except ValueError as exc:
        raise ConfigError(f"data.{exc}") from None
    if in_memory:  # generated per role; hflip 0 and no copy-paste, and only the base samples are used
        name, base = role, build_datasets(data, AugmentConfig(hflip=0.0), seed=cfg.train.seed)[role].base
    else:
        name = data.split_names()[role]
        base = open_dataset(data.dataset, data.root, split=name, protocol=data.protocol, load_masks=False)
    transform = build_transforms(TransformConfig(data.protocol, data.size, 0.0, data.scale), train=False)
    return name, [transform(base[i], None) for i in range(len(base))]


def oracle_map(covered_boxes: list[np.ndarray], gt_boxes: list[np.ndarray], legacy: bool) -> tuple[float, float]:
    """(mAP07, mAP12) of the detector that outputs exactly the covered boxes, all ranked first,
    scored with our own VOC metric (IoU 0.5, the protocol's box arithmetic)."""
    from irstdlab.harness.metrics import evaluate_detections

    dets = [(boxes, np.ones(len(boxes), np.float32)) for boxes in covered_boxes]
    out = []
    for mode in ("11points", "area"):
        result = evaluate_detections(dets, gt_boxes, iou_thr=0.5, ap_mode=mode, legacy_coordinates=legacy)
        out.append(float(result["ap"]))
    return out[0], out[1]


def measure_coverage(cfg: Any, split: str = "test") -> CoverageReport:
    """Coverage of ``split`` (a role: train/val/test, or a split name) under trial config ``cfg``."""
    import torch
    from irstdlab.harness.coverage_assign import build_assigner
    from irstdlab.models import build

    split_name, samples = coverage_samples(cfg, split)
    # weights do not change an assignment: build without them (no file or download needed)
    model_cfg = dataclasses.replace(cfg.model, pretrained=None)
    try:
        model = build(model_cfg)
        with torch.device("meta"):
            shape_model = build(model_cfg)
    except ValueError as exc:
        raise ConfigError(str(exc) if str(exc).startswith("model.") else f"model: {exc}") from None
    assigner = build_assigner(model, shape_model)

    num_levels = len(assigner.level_strides)
    level_hits = np.zeros(num_levels, np.int64)
    level_positives = np.zeros(num_levels, np.int64)
    bin_targets = np.zeros(len(SIZE_BIN_EDGES), np.int64)
    bin_covered = np.zeros(len(SIZE_BIN_EDGES), np.int64)
    covered_boxes, gt_boxes = [], []
    targets = covered = 0
    with torch.no_grad():
        for sample in samples:
            boxes = np.asarray(sample.boxes, np.float32).reshape(-1, 4)
            size = (int(sample.image.shape[0]), int(sample.image.shape[1]))
            result = assigner.assign(torch.from_numpy(boxes), size)
            hits = result.hits.numpy()
            is_covered = hits.any(axis=1)
            level_hits += hits.sum(axis=0)
            level_positives += np.asarray(result.positives, np.int64)
            side = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
            bins = np.searchsorted(np.asarray(SIZE_BIN_EDGES), side, side="right")
            np.add.at(bin_targets, bins, 1)
            np.add.at(bin_covered, bins[is_covered], 1)
            targets += len(boxes)
            covered += int(is_covered.sum())
            covered_boxes.append(boxes[is_covered])
            gt_boxes.append(boxes)
    max07, max12 = oracle_map(covered_boxes, gt_boxes, legacy=cfg.data.protocol == "reference") if targets else (0.0, 0.0)
    return CoverageReport(
        detector=cfg.model.name, backbone=cfg.model.backbone, assignment=assigner.family,
        dataset=cfg.data.dataset, split=split_name, protocol=cfg.data.protocol, images=len(samples),
        targets=targets, covered=covered,
        by_level=[{"level": f"P{round(math.log2(s))}", "stride": s, "covered": int(level_hits[i]), "coverage": _fraction(int(level_hits[i]), targets),
                   f"positive_{assigner.level_unit}": int(level_positives[i])}
                  for i, s in enumerate(assigner.level_strides)],
        by_size=[{"size": size_bin_label(i), "targets": int(bin_targets[i]), "covered": int(bin_covered[i]),
                  "coverage": _fraction(int(bin_covered[i]), int(bin_targets[i]))}
                 for i in range(len(SIZE_BIN_EDGES)) if bin_targets[i]],
        max_map07=round(max07, 6), max_map12=round(max12, 6),
    )


def format_report(report: CoverageReport) -> str:
    """A small human table."""
    lines = [
        f"coverage   {report.detector} ({report.backbone}), assignment: {report.assignment}",
        (f"data       {report.dataset} split {report.split}, protocol {report.protocol}: "
         f"{report.images} images, {report.targets} boxes"),
        (f"covered    {report.covered} / {report.targets} = {report.coverage:.3f} (recall ceiling); "
         f"best possible mAP07 {report.max_map07:.3f}, mAP12 {report.max_map12:.3f}"),
        "",
        f"{'level':<8}{'stride':>7}{'covered':>9}{'share':>8}{'positives':>11}",
    ]
    for row in report.by_level:
        positives = next(v for k, v in row.items() if k.startswith("positive_"))
        share = "-" if row["coverage"] is None else f"{row['coverage']:.3f}"
        lines.append(f"{row['level']:<8}{row['stride']:>7}{row['covered']:>9}{share:>8}{positives:>11}")
    lines += ["", f"{'size (sqrt wh, input px)':<26}{'boxes':>7}{'covered':>9}{'share':>8}"]
    for row in report.by_size:
        lines.append(f"{row['size']:<26}{row['targets']:>7}{row['covered']:>9}{row['coverage']:>8.3f}")
    return "\n".join(lines)


__all__ = ["SIZE_BIN_EDGES", "CoverageReport", "coverage_samples", "format_report", "measure_coverage", "oracle_map", "size_bin_label"]
