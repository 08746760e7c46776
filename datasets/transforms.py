"""Sample -> Sample transforms (resize protocols, flip), a pipeline builder and the batch collate.

Every transform returns a NEW ``Sample`` (the input is never mutated, so a reader's cache
stays valid) and records what it did in ``sample.meta``: ``scale`` = (sy, sx) from the
original image, ``pad`` = (bottom, right), ``input_size`` = (H, W) fed to the model,
``flip`` = bool.  Random transforms take an explicit ``numpy.random.Generator`` so a
trainer can make every sample reproducible from (seed, epoch, index).

Normalisation is deliberately NOT a data transform: our detectors normalise inside the
model (as torchvision's detection models do), so a checkpoint carries its own
preprocessing and the data pipeline stays the same for every model.  ``collate_detection``
therefore hands raw 0..255 floats to the model.

Two resize protocols (see DESIGN.md "Two protocols"):

* ``reference``: what the released BAFE-Net code does: squash to ``size x size`` (cv2
  bilinear), boxes scaled anisotropically by (S/W, S/H) and clipped to the image, sky and
  target maps nearest.
* ``clean``: keep the aspect ratio (long edge = ``size``), pad bottom/right to
  ``size x size`` with 0 for the image and target mask and 255 (= ignore) for the sky map;
  boxes scaled isotropically.

``Resize(scale=(long, short))`` is mmdet's keep-ratio rescale used by ODI's OSCAR recipe
(``Resize((1000, 600), keep_ratio=True)``): factor ``min(long / max(h, w), short / min(h, w))``,
sides rounded with ``int(x + 0.5)``, then padded bottom/right to a multiple of 32. Images of
one batch then differ in size; ``collate_detection`` pads them to the batch's largest.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np

from irstdlab.datasets.sample import Sample

PROTOCOLS = ("reference", "clean")
SKY_IGNORE = 255  # sky-map value of padded pixels; segmentation losses skip it


def _nearest(array: np.ndarray | None, width: int, height: int) -> np.ndarray | None:
    if array is None:
        return None
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST)


@dataclass(frozen=True)
class Resize:
    """Resize with one of the two protocols; records ``scale``, ``pad`` and ``input_size``."""

    protocol: str = "reference"
    size: int = 512
    scale: tuple[int, int] | None = None  # keep-ratio (long, short) rescale, e.g. (1000, 600)
    size_divisor: int = 32  # padding multiple under ``scale``

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"resize protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.size < 1:
            raise ValueError(f"resize size must be >= 1, got {self.size}")
        if self.scale is not None and (len(self.scale) != 2 or min(self.scale) < 1):
            raise ValueError(f"resize scale must be (long, short) with positive sides, got {self.scale!r}")

    def _keep_ratio(self, h: int, w: int) -> tuple[float, float, int, int, int, int]:
        """mmdet ``rescale_size`` + ``Pad(size_divisor)``: (sy, sx, new_h, new_w, padded_h, padded_w)."""
        assert self.scale is not None, "only the keep-ratio protocol calls this"
        long_side, short_side = max(self.scale), min(self.scale)
        factor = min(long_side / max(h, w), short_side / min(h, w))
        new_h, new_w = max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))
        d = self.size_divisor
        return new_h / h, new_w / w, new_h, new_w, -(-new_h // d) * d, -(-new_w // d) * d

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        h, w = sample.size
        s = self.size
        out_h = out_w = s
        if self.scale is not None:  # mmdet records the per-axis factors of the rounded size
            sy, sx, new_h, new_w, out_h, out_w = self._keep_ratio(h, w)
        elif self.protocol == "reference":
            sy, sx = s / h, s / w
            new_h, new_w = s, s
        else:
            sy = sx = s / max(h, w)
            new_h, new_w = max(1, min(s, round(h * sy))), max(1, min(s, round(w * sx)))
        image = cv2.resize(sample.image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        sky = _nearest(sample.sky, new_w, new_h)
        mask = _nearest(sample.target_mask, new_w, new_h)
        boxes = sample.boxes * np.array([sx, sy, sx, sy], np.float32)
        boxes = np.clip(boxes, 0, np.array([new_w, new_h, new_w, new_h], np.float32))
        pad_b, pad_r = out_h - new_h, out_w - new_w
        if pad_b or pad_r:  # clean protocol or keep-ratio scale
            image = np.pad(image, ((0, pad_b), (0, pad_r)), constant_values=0)
            if sky is not None:
                sky = np.pad(sky, ((0, pad_b), (0, pad_r)), constant_values=SKY_IGNORE)
            if mask is not None:
                mask = np.pad(mask, ((0, pad_b), (0, pad_r)), constant_values=0)
        meta = dict(sample.meta, scale=(sy, sx), pad=(pad_b, pad_r), input_size=(out_h, out_w), protocol=self.protocol)
        return Sample(sample.id, image, boxes.astype(np.float32), sky, mask, sample.orig_size, meta)


@dataclass(frozen=True)
class HorizontalFlip:
    """Mirror left-right with probability ``prob``: ``x' = W - x`` (pixel-edge boxes stay exact).

    On a padded sample (``clean`` protocol) only the content ``W = width - pad_right`` is
    mirrored, so the padding stays bottom/right and ``meta['pad']`` stays true.
    """

    prob: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {self.prob}")

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng()
        flip = bool(rng.random() < self.prob)
        already = bool(sample.meta.get("flip", False))
        if not flip:
            return sample.copy(meta=dict(sample.meta, flip=already))
        w = sample.size[1] - int(sample.meta.get("pad", (0, 0))[1])
        boxes = sample.boxes.copy()
        boxes[:, [0, 2]] = w - sample.boxes[:, [2, 0]]

        def mirror(a: np.ndarray) -> np.ndarray:
            out = a.copy()
            out[:, :w] = a[:, w - 1 :: -1] if w < a.shape[1] else a[:, ::-1]
            return out

        return Sample(sample.id, mirror(sample.image), boxes, _if_present(mirror, sample.sky),
                      _if_present(mirror, sample.target_mask),
                      sample.orig_size, dict(sample.meta, flip=not already))


def _if_present(fn: Callable[..., np.ndarray], plane: np.ndarray | None, *args: Any) -> np.ndarray | None:
    """``fn(plane, *args)``, or None for a map the sample does not have."""
    return None if plane is None else fn(plane, *args)


Transform = Callable[[Sample, "np.random.Generator | None"], Sample]


class Compose:
    """Apply transforms in order, threading one generator through the random ones."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        rng = rng if rng is not None else np.random.default_rng()
        for transform in self.transforms:
            sample = transform(sample, rng)
        return sample

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


@dataclass(frozen=True)
class TransformConfig:
    """What the trainer asks for; ``build_transforms`` turns it into a pipeline."""

    protocol: str = "reference"
    size: int = 512
    flip_prob: float = 0.5
    scale: tuple[int, int] | None = None  # keep-ratio (long, short) instead of ``size``


def build_transforms(cfg: TransformConfig, train: bool, augment: Sequence[Transform] = ()) -> Compose:
    """Train: resize, flip, then ``augment`` (e.g. BAG-CP, which needs the final geometry).
    Eval: resize only (no flip, no augmentation)."""
    steps: list[Transform] = [Resize(cfg.protocol, cfg.size, cfg.scale)]
    if train:
        if cfg.flip_prob > 0:
            steps.append(HorizontalFlip(cfg.flip_prob))
        steps.extend(augment)
    return Compose(steps)


def _pad_to(sample: Sample, height: int, width: int) -> Sample:
    """Pad bottom/right to (height, width): image and mask with 0, sky with ignore."""
    pad_b, pad_r = height - sample.size[0], width - sample.size[1]
    if not (pad_b or pad_r):
        return sample

    def pad(a: np.ndarray, value: int) -> np.ndarray:
        return np.pad(a, ((0, pad_b), (0, pad_r)), constant_values=value)

    old_b, old_r = sample.meta.get("pad", (0, 0))
    meta = dict(sample.meta, pad=(int(old_b) + pad_b, int(old_r) + pad_r), input_size=(height, width))
    return Sample(sample.id, pad(sample.image, 0), sample.boxes, _if_present(pad, sample.sky, SKY_IGNORE),
                  _if_present(pad, sample.target_mask, 0), sample.orig_size, meta)


def collate_detection(samples: Sequence[Sample]):
    """Batch samples: ``(images [B,1,H,W] float32 0..255, targets, metas)``.

    Samples of different sizes (keep-ratio resizing) are padded bottom/right to the
    batch's largest, as mmdet's collate does; ``meta['pad']`` includes that padding.

    ``targets[i]`` has ``boxes`` (float32 Nx4) and, when present, ``sky`` (uint8 HxW,
    0/1/255) and ``target_mask`` (uint8 HxW).  ``metas[i]`` has ``id``, ``orig_size``,
    ``scale``, ``flip``, ``pad`` (what a model needs to map boxes back to the original image).
    """
    import torch

    if not samples:
        raise ValueError("collate_detection: empty batch")
    height = max(s.size[0] for s in samples)
    width = max(s.size[1] for s in samples)
    samples = [_pad_to(s, height, width) for s in samples]
    images = torch.from_numpy(np.stack([s.image for s in samples])).unsqueeze(1).float()
    targets, metas = [], []
    for s in samples:
        target = {"boxes": torch.from_numpy(np.ascontiguousarray(s.boxes, np.float32)).reshape(-1, 4)}
        if s.sky is not None:
            target["sky"] = torch.from_numpy(np.ascontiguousarray(s.sky, np.uint8))
        if s.target_mask is not None:
            target["target_mask"] = torch.from_numpy(np.ascontiguousarray(s.target_mask, np.uint8))
        targets.append(target)
        metas.append({
            "id": s.id,
            "orig_size": tuple(s.orig_size),
            "scale": tuple(s.meta.get("scale", (1.0, 1.0))),
            "flip": bool(s.meta.get("flip", False)),
            "pad": tuple(s.meta.get("pad", (0, 0))),
        })
    return images, targets, metas
