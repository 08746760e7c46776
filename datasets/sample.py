"""The plain, typed sample that every reader, generator and transform exchanges."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass
class Sample:
    """One image with its annotations.

    Conventions (documented in the README):
    * ``image``: uint8 H x W, grey (colour files converted by ``datasets.io.to_grey``).
    * ``boxes``: float32 N x 4, xyxy in pixel-edge geometry: a target covering
      columns x0..x1 (inclusive) has ``x0, x1 + 1``. N may be 0 (background-only image).
    * ``sky``: uint8 H x W with 0 = non-sky, 1 = sky, or None when the data set has no sky map.
    * ``target_mask``: uint8 H x W with 0 = background, 1 = target pixel, or None.
    * ``orig_size``: (H, W) of the image as stored on disk, before any transform.
    * ``meta``: free-form transform bookkeeping (scale factors, flip flag, ...).
    """

    id: str
    image: np.ndarray
    boxes: np.ndarray
    sky: np.ndarray | None = None
    target_mask: np.ndarray | None = None
    orig_size: tuple[int, int] = (0, 0)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.orig_size == (0, 0):
            self.orig_size = (int(self.image.shape[0]), int(self.image.shape[1]))
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)

    @property
    def size(self) -> tuple[int, int]:
        """Current (H, W)."""
        return int(self.image.shape[0]), int(self.image.shape[1])

    @property
    def num_targets(self) -> int:
        return int(self.boxes.shape[0])

    def copy(self, **changes) -> Sample:
        """A deep-enough copy: arrays copied so transforms never alias the reader's cache."""
        base = replace(
            self,
            image=self.image.copy(),
            boxes=self.boxes.copy(),
            sky=None if self.sky is None else self.sky.copy(),
            target_mask=None if self.target_mask is None else self.target_mask.copy(),
            meta=dict(self.meta),
        )
        return replace(base, **changes) if changes else base
