"""Validation report of a data set on disk: every file of the chosen splits, all problems collected.

Errors are things a reader would refuse (undecodable image, malformed XML, box outside the image or
degenerate, missing or wrongly sized mask, split id without image). Warnings are annotations that load
but disagree with each other: an image whose boxes do not equal the bounding boxes of its target mask's
connected components (e.g. SIRST-V2 ``Misc_111``, whose box was drawn on a rescaled image).

Box/mask agreement = share of boxes that equal, exactly, the pixel-edge bounding box of a connected
component of the target mask. Connectivity per layout (``reader.connectivity``): 4 for DenseSIRST
(clustered targets touching diagonally are separate targets), 8 for SIRST-V2 (its 8-connected component
count equals its box count on the full set). On both mini sets 4 and 8 give identical rates (measured):
* DenseSIRST-mini: 1020 / 1034 boxes (98.6 %). The 14 others, in 12 colour ``Misc_*`` images, are
  exactly +1 px off: those XML files kept SIRST-V2's 1-based numbers (the full set has 21 such boxes).
* SIRST-V2-mini (after the -1): 61 / 62 boxes (98.4 %); the one other is ``Misc_111``. Without the -1: 0.
Excluding those known outliers, agreement is 100 %; ``tests/test_readers.py`` asserts these numbers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from irstdlab.datasets import io
from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.readers import VocLayoutReader, reader_class


def mask_components(mask: np.ndarray, connectivity: int) -> np.ndarray:
    """Pixel-edge xyxy boxes (float32 K x 4) of the connected components of a 0/1 mask."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(
        (mask > 0).astype(np.uint8), connectivity=connectivity
    )
    x, y, w, h = (stats[1:, i].astype(np.float32) for i in range(4))
    return np.stack([x, y, x + w, y + h], axis=1).reshape(-1, 4)


def match_boxes(boxes: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Bool per box: does it equal some component box exactly?"""
    if len(boxes) == 0 or len(components) == 0:
        return np.zeros(len(boxes), dtype=bool)
    return (boxes[:, None, :] == components[None, :, :]).all(axis=2).any(axis=1)


def _disagreement(boxes: np.ndarray, comps: np.ndarray, matched: np.ndarray, connectivity: int) -> str | None:
    """A one-line description of how an image's boxes and mask components disagree, or None."""
    if matched.all() and len(comps) == len(boxes):
        return None
    bad = boxes[~matched]
    text = (
        f"{len(bad)} of {len(boxes)} boxes do not match a {connectivity}-connected component of the "
        f"target mask ({len(comps)} components)"
    )
    if len(bad) and len(comps):
        dist = np.abs(bad[:, None, :] - comps[None, :, :]).max(axis=2)
        nearest = comps[dist.argmin(axis=1)]
        shift = bad - nearest
        if np.all(shift == 1):
            text += "; every such box is shifted by +1 px (1-based coordinates)"
        else:
            b, c = bad[0].astype(int).tolist(), nearest[0].astype(int).tolist()
            text += f"; e.g. box {b}, nearest component {c}"
    return text


@dataclass
class CheckReport:
    dataset: str
    root: str
    splits: dict[str, int] = field(default_factory=dict)  # split name -> images listed
    images: int = 0  # distinct images checked
    targets: int = 0
    background_images: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)
    box_mask_agreement: float | None = None  # None when no box could be compared with a mask
    boxes_compared: int = 0
    boxes_agreeing: int = 0
    connectivity: int = 0
    per_split: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def add_error(self, err: DatasetError) -> None:
        self.errors.append({"file": err.file or self.root, "problem": err.problem})


def check_dataset(name: str, root: str | Path, splits: list[str] | None = None) -> CheckReport:
    """Validate every file of ``splits`` (all split files when None). Raises DatasetError only for an
    unknown data set name or a missing / wrong root; everything else lands in the report."""
    cls = reader_class(name)
    root = Path(root)
    cls.check_root(root)
    report = CheckReport(dataset=name, root=str(root), connectivity=cls.connectivity)
    names = splits or cls.available_splits(root)
    if not names:
        report.add_error(DatasetError(root / cls.split_dir, "no split files found"))
    per_id: dict[str, int | None] = {}  # id -> number of boxes (None when unreadable)
    for split in names:
        try:
            reader = cls(root, split=split, verify_ids=False)
        except DatasetError as err:
            report.add_error(err)
            continue
        report.splits[split] = len(reader.ids)
        for ident in reader.ids:
            if ident not in per_id:
                per_id[ident] = _check_one(reader, ident, report)
        counted = [n for i in reader.ids if (n := per_id[i]) is not None]
        report.per_split[split] = {
            "images": len(reader.ids),
            "targets": int(sum(counted)),
            "background_images": sum(1 for n in counted if n == 0),
        }
    readable = [n for n in per_id.values() if n is not None]
    report.images = len(per_id)
    report.targets = int(sum(readable))
    report.background_images = sum(1 for n in readable if n == 0)
    if report.boxes_compared:
        report.box_mask_agreement = report.boxes_agreeing / report.boxes_compared
    return report


def _check_one(reader: VocLayoutReader, ident: str, report: CheckReport) -> int | None:
    """Check one id's files, appending every problem; return its box count (None if unreadable)."""
    image_path = reader.image_path(ident)
    if not image_path.is_file():
        report.add_error(
            DatasetError(image_path, f"image not found for id {ident!r} listed in {reader.split_dir}/{reader.split}.txt")
        )
        return None
    size = None
    try:
        image = reader.read_image(ident)
        size = (int(image.shape[0]), int(image.shape[1]))
    except DatasetError as err:
        report.add_error(err)
    boxes = None
    try:
        boxes = reader.read_boxes(ident, size) if size else io.read_voc_boxes(reader.box_path(ident)).boxes
    except DatasetError as err:
        report.add_error(err)
    if size is None:
        return None
    if reader.has_sky:
        try:
            reader.read_sky(ident, size)
        except DatasetError as err:
            report.add_error(err)
    try:
        mask = reader.read_target_mask(ident, size)
    except DatasetError as err:
        report.add_error(err)
        mask = None
    if boxes is None:
        return None
    if mask is not None and len(boxes):
        comps = mask_components(mask, reader.connectivity)
        matched = match_boxes(boxes, comps)
        report.boxes_compared += len(boxes)
        report.boxes_agreeing += int(matched.sum())
        problem = _disagreement(boxes, comps, matched, reader.connectivity)
        if problem:
            report.warnings.append({"file": str(reader.box_path(ident)), "problem": problem})
    elif mask is not None and mask.any():
        report.warnings.append(
            {"file": str(reader.target_mask_path(ident)), "problem": "target mask has pixels but the image has no box"}
        )
    return len(boxes)
