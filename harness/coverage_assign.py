"""Which ground-truth boxes a detector's own target assignment makes positive, per level.

One adapter per detector family, each calling the code the detector trains with -- nothing
here re-decides what is positive:

* ``fcos`` / ``bafenet`` (``models/fcos.py``): the head's ``points`` and
  ``fcos_targets.assign`` with the head's own ``center_sampling`` / ``center_sample_radius``
  (the call ``FCOSHead.assign_batch`` makes).
* ``oscar``: ``oscar_targets.level_points`` + ``assign_level`` at the head's coarse and refine
  strides with the pseudo-box sides ``OSCARHead.compute_loss`` uses.
* ``retinanet`` / ``fcos_tv``: torchvision's ``compute_loss`` itself runs (anchor matching,
  resp. FCOS centre sampling and scale ranges); the head's loss is swapped for a recorder of the
  ``matched_idxs`` it is handed, on a throwaway model.
* ``ssd``: the model's ``proposal_matcher`` (``SSDMatcher``) on ``box_iou`` (``SSD.forward``).
* ``faster_rcnn``: the RPN's ``proposal_matcher`` on its ``box_similarity``
  (``assign_targets_to_anchors``). Only the RPN can be checked before training: the RoI head
  matches proposals, which do not exist yet. The RPN's random 256-anchor sampling is not applied.

Anchors come from the model's own anchor generator on the model's own padded input
(``model.transform``); boxes pass through the model's ``clean_targets`` first, so a box it
drops is not covered. Feature-map sizes come from a copy of the model built on the ``meta``
device (shapes without arithmetic).

An adapter returns, per image, ``hits`` [N, L] bool (box n has >= 1 positive at level l) and
the number of positive locations/anchors per level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from irstdlab.models.oscar import OSCAR


@dataclass
class ImageAssignment:
    hits: Tensor  # [N, L] bool
    positives: list[int]  # per level


@dataclass
class Assigner:
    """``assign(boxes [N,4] in input pixels, (H, W))`` for one built model."""

    family: str
    level_strides: list[int]
    level_unit: str  # "locations" or "anchors"
    assign: Callable[[Tensor, tuple[int, int]], ImageAssignment]


def _per_level(matched: Tensor, counts: list[int], num_boxes: int) -> ImageAssignment:
    """Per-point/anchor matched box index (-1/-2 = not positive) -> hits and positives per level."""
    hits = torch.zeros(num_boxes, len(counts), dtype=torch.bool)
    positives = []
    start = 0
    for level, count in enumerate(counts):
        chunk = matched[start:start + count]
        chunk = chunk[chunk >= 0]
        hits[chunk.unique().long(), level] = True
        positives.append(int(chunk.numel()))
        start += count
    return ImageAssignment(hits, positives)


class _ShapeCache:
    """Feature-map sizes [(h, w), ...] per input size, from the meta-device model."""

    def __init__(self, features: Callable[[Tensor], list[Tensor]]) -> None:
        self.features = features
        self.cache: dict[tuple[int, int], list[tuple[int, int]]] = {}

    def __call__(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        if size not in self.cache:
            with torch.no_grad():
                maps = self.features(torch.zeros(1, 1, *size, device="meta"))
            self.cache[size] = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        return self.cache[size]


# ------------------------------------------------------------------------------- our heads
# The adapters reach into each family's head and trunk by attribute (`build_assigner` picks the family),
# and `shape_model` is the same detector on the meta device: both are duck-typed.
def _fcos_assigner(model: Any, shape_model: Any) -> Assigner:
    from irstdlab.models.fcos_targets import assign

    head = model.head
    shapes = _ShapeCache(lambda x: shape_model.neck(shape_model.backbone(shape_model.preprocess(x))))

    def run(boxes: Tensor, size: tuple[int, int]) -> ImageAssignment:
        sizes = shapes(size)
        points = head.points({"cls": [torch.empty(1, 1, h, w) for h, w in sizes]})
        gt_index, _ = assign(points, boxes, head.center_sampling, head.center_sample_radius)
        return _per_level(gt_index, points.num_per_level, boxes.shape[0])

    return Assigner(model.head.__class__.__name__, list(head.strides), "locations", run)


def _oscar_assigner(model: OSCAR, shape_model: Any) -> Assigner:
    from irstdlab.models.oscar_targets import (
        COARSE_SIDE_FACTOR,
        REFINE_SIDE_FACTOR,
        assign_level,
        level_points,
    )

    head = model.head
    shapes = _ShapeCache(lambda x: shape_model.neck(shape_model.backbone(shape_model.preprocess(x))))
    # the neck returns (refine P2, coarse P3); sides and pseudo-target use as in OSCARHead.compute_loss
    levels = ((head.refine_stride, REFINE_SIDE_FACTOR, False), (head.coarse_stride, COARSE_SIDE_FACTOR, True))

    def run(boxes: Tensor, size: tuple[int, int]) -> ImageAssignment:
        matched, counts = [], []
        for (h, w), (stride, factor, pseudo) in zip(shapes(size), levels):
            points = level_points(h, w, stride)
            matched.append(assign_level(points, boxes, factor * stride, use_pseudo_targets=pseudo).gt_index)
            counts.append(h * w)
        return _per_level(torch.cat(matched), counts, boxes.shape[0])

    return Assigner("OSCARHead", [head.refine_stride, head.coarse_stride], "locations", run)


# ------------------------------------------------------------------------------- torchvision
def _tv_assigner(model: Any, shape_model: Any) -> Assigner:
    from irstdlab.models.tv_detectors import (
        TVFCOS,
        TVSSD,
        TVFasterRCNN,
        TVRetinaNet,
        clean_targets,
    )
    from torchvision.ops import box_iou

    generator = model.rpn.anchor_generator if isinstance(model, TVFasterRCNN) else model.anchor_generator
    per_location = generator.num_anchors_per_location()
    shapes = _ShapeCache(lambda x: list(shape_model.backbone(x).values()))
    recorded: list[list[Tensor]] = []

    def record(targets: Any, head_outputs: Any, anchors: Any, matched_idxs: list[Tensor]) -> dict[str, Tensor]:
        recorded.append(matched_idxs)
        return {}

    def match(targets: list[dict[str, Tensor]], anchors: list[Tensor], counts: list[int]) -> Tensor:
        if isinstance(model, (TVRetinaNet, TVFCOS)):
            recorded.clear()
            model.head.compute_loss = record  # instance attribute on a throwaway model
            try:
                if isinstance(model, TVFCOS):
                    model.compute_loss(targets, {}, anchors, counts)
                else:
                    model.compute_loss(targets, {}, anchors)
            finally:
                del model.head.compute_loss
            return recorded[0][0]
        gt = targets[0]["boxes"]
        if gt.numel() == 0:
            return torch.full((anchors[0].shape[0],), -1, dtype=torch.int64)
        if isinstance(model, TVSSD):
            return model.proposal_matcher(box_iou(gt, anchors[0]))
        return model.rpn.proposal_matcher(model.rpn.box_similarity(gt, anchors[0]))

    def run(boxes: Tensor, size: tuple[int, int]) -> ImageAssignment:
        # which boxes survive the model's target cleaning (clipped, degenerate ones dropped)
        kept = [clean_targets([{"boxes": b[None]}], size, model.train_label)[0]["boxes"].shape[0] == 1 for b in boxes]
        kept_index = torch.tensor([i for i, k in enumerate(kept) if k], dtype=torch.long)
        targets = clean_targets([{"boxes": boxes}], size, model.train_label)
        image_list, targets = model.transform(torch.zeros(1, 1, *size), targets)
        sizes = shapes(tuple(image_list.tensors.shape[-2:]))
        anchors = generator(image_list, [torch.empty(1, 1, h, w) for h, w in sizes])
        counts = [h * w * a for (h, w), a in zip(sizes, per_location)]
        matched = match(targets, anchors, counts)
        inner = _per_level(matched, counts, len(kept_index))
        hits = torch.zeros(boxes.shape[0], len(counts), dtype=torch.bool)
        hits[kept_index] = inner.hits
        return ImageAssignment(hits, inner.positives)

    model.train()  # torchvision's transform and matching paths are the training ones
    family = {TVRetinaNet: "RetinaNet", TVFCOS: "torchvision FCOS", TVSSD: "SSD", TVFasterRCNN: "Faster R-CNN RPN"}
    return Assigner(family[type(model)], list(model.backbone.strides), "anchors", run)


def build_assigner(model: nn.Module, shape_model: nn.Module) -> Assigner:
    """The adapter for ``model`` (built on the CPU); ``shape_model`` is the same config on ``meta``."""
    from irstdlab.models.fcos import FCOSHead
    from irstdlab.models.oscar import OSCAR
    from irstdlab.models.tv_detectors import TVDetectorMixin

    if isinstance(model, TVDetectorMixin):
        return _tv_assigner(model, shape_model)
    if isinstance(model, OSCAR):
        return _oscar_assigner(model, shape_model)
    if isinstance(getattr(model, "head", None), FCOSHead):
        return _fcos_assigner(model, shape_model)
    raise TypeError(f"no coverage adapter for {type(model).__name__}")


__all__ = ["Assigner", "ImageAssignment", "build_assigner"]
