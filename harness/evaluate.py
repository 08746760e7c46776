"""Inference over a loader -> detections in ORIGINAL image coordinates -> VOC metrics.

Protocols (DESIGN.md "Two protocols"):
* ``reference``: boxes are clamped to the resized image, divided by the (anisotropic) scale
  factor, and scored with the legacy +1 box arithmetic against GT in original coordinates
  (the DenseSIRST reader's ``protocol="reference"`` applies the released code's -1 shift).
* ``clean``: the same mapping (isotropic scale, padding at the bottom/right only) and exact
  continuous IoU.
mAP07 = 11-point AP, mAP12 = area AP, both at IoU 0.5 (the released code's meaning); mAP75 =
area AP at IoU 0.75 (the paper text's definition of mAP12); recall = recall at the end of the list.
mNoCoAP (OSCAR's point metric, ``harness/noco.py``) is added when the loader's metas carry
the original images (``build_datasets(keep_original=True)``): each image's NoCo map is built
at original resolution, looked up at the detections' centres and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from irstdlab.harness.metrics import evaluate_detections, named_voc_metrics
from irstdlab.harness.noco import detection_noco_values, evaluate_nocoap


@dataclass
class Predictions:
    """Per-image detections (original coordinates) and ground truth, in loader order."""

    ids: list[str]
    boxes: list[np.ndarray]
    scores: list[np.ndarray]
    gt_boxes: list[np.ndarray]
    noco_values: list[np.ndarray] = field(default_factory=list)  # per image; empty = not computed

    def __len__(self) -> int:
        return len(self.ids)


def to_original(boxes: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Input-coordinate xyxy boxes -> original image coordinates (clamped to the image content)."""
    sy, sx = meta["scale"]
    h, w = meta["orig_size"]
    out = boxes.astype(np.float64).copy()
    # clamp to the resized content (the padded margin is not image), then undo the scale
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0.0, w * sx) / sx
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0.0, h * sy) / sy
    # to 1e-4 px: a pixel-edge box that went through the float32 resize comes back on its
    # integers, where mNoCoAP's half-to-even rounding of a .5 centre is sensitive to 1e-5 errors
    return np.round(out, 4).astype(np.float32)


@torch.no_grad()
def predict(model: nn.Module, loader: Any, device: torch.device, amp_dtype: torch.dtype | None = None,
            channels_last: bool = False) -> Predictions:
    """Run ``model`` in eval mode over ``loader`` (batches from ``collate_eval``)."""
    was_training = model.training
    model.eval()
    preds = Predictions([], [], [], [])
    try:
        for images, _targets, metas in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                outputs = model(images)
            for out, meta in zip(outputs, metas):
                boxes = to_original(out["boxes"].float().cpu().numpy().reshape(-1, 4), meta)
                gt_boxes = np.asarray(meta["orig_boxes"], np.float32).reshape(-1, 4)
                preds.ids.append(meta["id"])
                preds.boxes.append(boxes)
                preds.scores.append(out["scores"].float().cpu().numpy().reshape(-1))
                preds.gt_boxes.append(gt_boxes)
                if "orig_image" in meta:
                    preds.noco_values.append(detection_noco_values(boxes, gt_boxes, meta["orig_image"]))
    finally:
        model.train(was_training)
    return preds


def score(preds: Predictions, protocol: str, prefix: str = "") -> dict[str, float]:
    """mAP07 / mAP12 / mAP75 / recall (+ counts) of ``preds`` under ``protocol``."""
    legacy = protocol == "reference"
    dets = list(zip(preds.boxes, preds.scores))
    voc = named_voc_metrics(dets, preds.gt_boxes, legacy_coordinates=legacy)
    voc07 = voc["mAP07"]
    out = {
        **{f"{prefix}{name}": float(result["ap"]) for name, result in voc.items()},
        f"{prefix}recall": float(voc07["recall"]),
        f"{prefix}num_images": len(preds),
        f"{prefix}num_gts": int(voc07["num_gts"]),
        f"{prefix}num_dets": int(voc07["num_dets"]),
    }
    if preds.noco_values and len(preds.noco_values) == len(preds):
        noco = evaluate_nocoap(dets, preds.gt_boxes, noco_values=preds.noco_values)
        out[f"{prefix}mNoCoAP"] = float(noco["mNoCoAP"])
        out.update({f"{prefix}{k}": float(v) for k, v in noco["per_threshold"].items()})
    return out


def curves(preds: Predictions, protocol: str) -> dict[str, np.ndarray]:
    """Ranked precision/recall (area mode) for a PR plot."""
    result = evaluate_detections(list(zip(preds.boxes, preds.scores)), preds.gt_boxes, iou_thr=0.5,
                                 ap_mode="area", legacy_coordinates=protocol == "reference")
    return {"precision": np.asarray(result["precision_curve"]), "recall": np.asarray(result["recall_curve"])}


def eval_dataset(data_cfg: Any, role: str, seed: int = 0, keep_original: bool = False) -> Any:
    """The one split ``irstdlab eval`` scores, through the evaluation transforms.

    Unlike ``build_datasets`` (which a trial needs whole) this opens only the split of ``role``,
    so a missing train or val split cannot fail the evaluation of the test split.
    """
    from irstdlab.datasets.build import ROLES, TransformedDataset
    from irstdlab.datasets.errors import DatasetError
    from irstdlab.datasets.transforms import TransformConfig, build_transforms
    base: Any  # a map-style dataset of Samples
    if data_cfg.dataset == "synthetic" and data_cfg.root is None:
        from irstdlab.datasets.synthetic import SyntheticDataset

        counts = dict(zip(ROLES, data_cfg.synthetic_images))

        def part(which: str) -> Any:
            return SyntheticDataset(counts[which], size=data_cfg.synthetic_size, seed=data_cfg.synthetic_seed,
                                    split=which, difficulty=data_cfg.synthetic_difficulty)

        if data_cfg.selection == "reference":  # as build_datasets: train on train+val, select on test
            if role == "train":
                from torch.utils.data import ConcatDataset

                base = ConcatDataset([part("train"), part("val")])
            else:
                base = part("test")
        else:
            base = part(role)
        where = f"synthetic {role}"
    else:
        from irstdlab.datasets.readers import open_dataset

        name = data_cfg.split_names()[role]
        base = open_dataset(data_cfg.dataset, data_cfg.root, split=name, protocol=data_cfg.protocol,
                            load_masks=False)
        where = f"split {name}"
    if len(base) == 0:
        raise DatasetError(data_cfg.root, f"{where} is empty")
    transform = build_transforms(TransformConfig(data_cfg.protocol, data_cfg.size, 0.0, data_cfg.scale), train=False)
    return TransformedDataset(base, transform, seed=seed, keep_original=keep_original)


def evaluate_model(model: nn.Module, loader: Any, device: torch.device, protocol: str, prefix: str = "",
                   amp_dtype: torch.dtype | None = None, channels_last: bool = False) -> dict[str, float]:
    return score(predict(model, loader, device, amp_dtype, channels_last), protocol, prefix)


__all__ = ["Predictions", "curves", "eval_dataset", "evaluate_model", "predict", "score", "to_original"]
