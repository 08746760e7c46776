"""BAG-CP: Background-Aware Gaussian Copy-Paste (BAFE-Net paper §IV-C, Table III).

Four independent toggles reproduce every row of the paper's Table III
(``BagCPConfig.table_iii(row)``): (a) none, (b) copy_paste, (c) +cluster, (d) +gaussian,
(e) +cluster+gaussian, (f) all four.  Two recipes:

* ``paper``: targets from a ``TargetLibrary`` (GT patches of training samples, shrunk to
  <= 5x5); 1-3 regions of 20x20 with 8-12 targets each, 1-2 px from a neighbour.
  Without ``cluster`` the same number of targets goes to uniform random places.
* ``reference``: what the released ``SkyCopyPaste``/``CopyPaste`` code does (GrokCV/BAFE-Net
  ``deepir/datasets/transforms/transforms.py``): the GT boxes of one other random training sample (``source``),
  a count uniform over {0..n_src}, groups of 5 in 25x25 regions (shrinking by 3 down to 10
  on failure, a smaller size stays in force), boxes >= 10 px become 7x7 (bilinear), and a
  random-point fallback.

Pixel synthesis: with ``gaussian`` the Eq. 1 blend ``clip(dst + src * lambda * G, 0, 255)``
(``gaussian_blend``); without it a plain replacement by the source crop.
``background_aware`` pastes only where every pixel of the box is sky (sky map value 1).

Invariants (tested): every pasted target adds one exact integer box ``[x, y, x+w, y+h]``
and, when the sample has a target mask, that rectangle in it; pasted boxes keep a
>= ``min_gap`` px gap to every existing and pasted target; nothing lands in non-sky when
background-aware, nor in the padding of the ``clean`` protocol; the sky map is unchanged.

Where we deliberately differ from the released code (and why):
* 1x1 boxes: the code's min-max normalised G is 0/0 = NaN and ``min(255, NaN)`` writes a
  saturated 255.  We give a constant patch G = 1 (see ``gaussian_blend``).
* The code accepts the last random point after 101 failed tries even if it overlaps or
  leaves the sky; we skip that target instead (an invariant is worth more than a count).
* The code re-derives all original boxes from integer masks after a paste, which snaps
  them to integers: ``floor`` of every coordinate, and a box whose floored width or height
  is 0 is dropped (GrokCV/BAFE-Net deepir/datasets/transforms/transforms.py). ``snap_gt=True`` does exactly that to the
  existing boxes whenever at least one target was pasted (the reference recipe's presets turn
  it on); by default existing boxes stay as they were, since flooring moves a 3 px box by up
  to a pixel, a third of its size.
* Zero-size source boxes (the code's ``[0,0,0,0]`` degenerates) are skipped.
* A sample WITHOUT a sky map under ``background_aware``: the whole (unpadded) image is
  allowed, i.e. it behaves like plain copy-paste (SIRST-V2 has no sky maps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterable, Sequence

import cv2
import numpy as np

from irstdlab.datasets.gaussian_blend import GaussianParams, gaussian_weights_padded, paste_boxes
from irstdlab.datasets.placement import FreeSpace
from irstdlab.datasets.sample import Sample

RECIPES = ("paper", "reference")
TOGGLES = ("copy_paste", "cluster", "gaussian", "background_aware")
TABLE_III_ROWS: dict[str, tuple[str, ...]] = {
    "a": (),
    "b": ("copy_paste",),
    "c": ("copy_paste", "cluster"),
    "d": ("copy_paste", "gaussian"),
    "e": ("copy_paste", "cluster", "gaussian"),
    "f": TOGGLES,
}


@dataclass(frozen=True)
class BagCPConfig:
    """Toggles, recipe and every knob of both recipes (defaults = paper / released code)."""

    copy_paste: bool = True
    cluster: bool = True
    gaussian: bool = True
    background_aware: bool = True
    recipe: str = "paper"
    prob: float = 1.0  # chance to augment a sample; the released code always does
    snap_gt: bool = False  # after a paste, floor the existing boxes and drop the empty ones (the released code)
    min_gap: int = 1  # empty pixels between any two targets
    # paper recipe
    regions: tuple[int, int] = (1, 3)
    region_size: int = 20
    targets_per_region: tuple[int, int] = (8, 12)
    max_target_size: int = 5
    spacing: tuple[int, int] = (1, 2)
    # reference recipe
    group_size: int = 5
    ref_region_size: int = 25
    region_shrink: int = 3
    min_region_size: int = 10
    big_target: int = 10  # boxes with a side >= this become big_target_size squares
    big_target_size: int = 7
    max_num_pasted: int = 100
    tries: int = 101
    # Eq. 1-3 ranges; None = the recipe's style (paper / reference grid and normalisation)
    blend: GaussianParams | None = None

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"BAG-CP recipe must be one of {RECIPES}, got {self.recipe!r}")
        if not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"BAG-CP prob must be in [0, 1], got {self.prob}")
        if self.min_gap < 0 or self.spacing[0] < self.min_gap or self.spacing[0] > self.spacing[1]:
            raise ValueError(f"BAG-CP spacing {self.spacing} must satisfy min_gap={self.min_gap} <= min <= max")
        for name in ("regions", "targets_per_region"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"BAG-CP {name}={(lo, hi)}: expected 0 <= min <= max")
        if min(self.max_target_size, self.group_size, self.big_target_size, self.region_size) < 1:
            raise ValueError("BAG-CP sizes must be >= 1")

    @classmethod
    def table_iii(cls, row: str, recipe: str = "paper", **knobs) -> BagCPConfig:
        """The toggle set of one Table III row, e.g. ``table_iii("f")`` = full BAG-CP."""
        if row not in TABLE_III_ROWS:
            raise ValueError(f"Table III row must be one of {sorted(TABLE_III_ROWS)}, got {row!r}")
        on = TABLE_III_ROWS[row]
        toggles: dict[str, Any] = {t: t in on for t in TOGGLES}
        return cls(**toggles, recipe=recipe, **knobs)

    @property
    def blend_params(self) -> GaussianParams:
        return self.blend if self.blend is not None else GaussianParams(style=self.recipe)


def _int_box(box: np.ndarray) -> tuple[int, int, int, int]:
    """The reference's ``int()`` truncation of a float box."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return x0, y0, x1, y1


def _fit_within(patch: np.ndarray, max_size: int) -> np.ndarray:
    h, w = patch.shape
    if max(h, w) <= max_size:
        return patch
    s = max_size / max(h, w)
    size = (max(1, min(max_size, round(w * s))), max(1, min(max_size, round(h * s))))
    return cv2.resize(patch, size, interpolation=cv2.INTER_AREA)


@dataclass
class TargetLibrary:
    """Grey patches of real targets (the paper's "target library"), each <= max_size per side."""

    patches: list[np.ndarray] = field(default_factory=list)
    _fitted: dict[int, list[np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], max_size: int = 5, limit: int | None = None) -> TargetLibrary:
        """Crop every GT box (rounded outward to whole pixels, clipped) and shrink to <= max_size."""
        patches: list[np.ndarray] = []
        for sample in samples:
            h, w = sample.size
            b = sample.boxes
            x0 = np.clip(np.floor(b[:, 0]), 0, w).astype(int)
            y0 = np.clip(np.floor(b[:, 1]), 0, h).astype(int)
            x1 = np.clip(np.ceil(b[:, 2]), 0, w).astype(int)
            y1 = np.clip(np.ceil(b[:, 3]), 0, h).astype(int)
            for i in np.flatnonzero((x1 > x0) & (y1 > y0)):
                patches.append(_fit_within(sample.image[y0[i] : y1[i], x0[i] : x1[i]].copy(), max_size))
                if limit is not None and len(patches) >= limit:
                    return cls(patches)
        return cls(patches)

    def __len__(self) -> int:
        return len(self.patches)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        return self.patches[int(rng.integers(len(self.patches)))]

    def fitted(self, max_size: int) -> list[np.ndarray]:
        """The patches shrunk to <= max_size per side (cached: BAG-CP asks once per sample)."""
        if len(self._fitted.get(max_size, ())) != len(self.patches):
            self._fitted[max_size] = [_fit_within(p, max_size) for p in self.patches]
        return self._fitted[max_size]


Source = Callable[[np.random.Generator], Sample] | Sequence[Sample]


class BagCP:
    """The transform: ``BagCP(cfg, library=..., source=...)(sample, rng) -> new Sample``.

    ``library`` feeds the paper recipe; ``source`` (a callable ``rng -> Sample`` or a
    sequence of samples, already in the destination's geometry, e.g. resized and flipped
    by the same pipeline) feeds the reference recipe.  ``meta['bagcp']`` records
    ``requested``, ``pasted``, ``regions`` and ``fallbacks`` (targets placed outside a region).
    """

    def __init__(self, config: BagCPConfig | None = None, library: TargetLibrary | None = None,
                 source: Source | None = None):
        self.config = config or BagCPConfig()
        self.library = library
        self.source = source
        if self.config.copy_paste:
            if self.config.recipe == "paper" and not library:
                raise ValueError("BAG-CP paper recipe needs a non-empty TargetLibrary (TargetLibrary.from_samples)")
            if self.config.recipe == "reference" and source is None:
                raise ValueError("BAG-CP reference recipe needs a source of training samples")

    def __repr__(self) -> str:
        on = [t for t in TOGGLES if getattr(self.config, t)]
        return f"BagCP(recipe={self.config.recipe!r}, toggles={on})"

    # ------------------------------------------------------------- targets
    def _draw_source(self, rng: np.random.Generator) -> Sample:
        if callable(self.source):
            return self.source(rng)
        assert self.source is not None, "checked when the transform was built"
        return self.source[int(rng.integers(len(self.source)))]

    def _reference_patches(self, rng: np.random.Generator) -> list[np.ndarray]:
        cfg = self.config
        src = self._draw_source(rng)
        n_src = src.num_targets
        count = int(rng.integers(0, min(n_src + 1, cfg.max_num_pasted)))
        patches = []
        for i in rng.choice(n_src, count, replace=False) if count else []:
            x0, y0, x1, y1 = _int_box(src.boxes[i])
            crop = src.image[max(y0, 0) : y1, max(x0, 0) : x1]
            if crop.size == 0:
                continue
            if y1 - y0 >= cfg.big_target or x1 - x0 >= cfg.big_target:
                crop = cv2.resize(crop, (cfg.big_target_size,) * 2, interpolation=cv2.INTER_LINEAR)
            patches.append(crop)
        return patches

    def _paper_groups(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        cfg = self.config
        n_regions = int(rng.integers(cfg.regions[0], cfg.regions[1] + 1))
        counts = rng.integers(cfg.targets_per_region[0], cfg.targets_per_region[1] + 1, size=n_regions)
        assert self.library is not None, "checked when the transform was built"
        patches = self.library.fitted(cfg.max_target_size)
        picks = rng.integers(len(patches), size=int(counts.sum())).tolist()
        bounds = np.cumsum(counts).tolist()
        return [[patches[i] for i in picks[a:b]] for a, b in zip([0] + bounds[:-1], bounds)]

    # ------------------------------------------------------------ geometry
    def _space(self, sample: Sample) -> FreeSpace:
        h, w = sample.size
        if self.config.background_aware and sample.sky is not None:
            allowed = sample.sky == 1
        elif sample.sky is not None:
            allowed = sample.sky != 255  # anywhere but padding
        else:
            allowed = np.ones((h, w), bool)
        pad_b, pad_r = sample.meta.get("pad", (0, 0))
        if pad_b or pad_r:
            allowed[h - pad_b :, :] = False
            allowed[:, w - pad_r :] = False
        gap = self.config.min_gap
        occupied = None
        if sample.target_mask is not None and sample.target_mask.any():
            occupied = sample.target_mask > 0  # FreeSpace dilates it by the gap
        if sample.num_targets:
            # Existing boxes, rounded outward and grown by the gap, block directly (no dilation pass).
            b = sample.boxes
            x0 = np.clip(np.floor(b[:, 0]) - gap, 0, w).astype(int).tolist()
            y0 = np.clip(np.floor(b[:, 1]) - gap, 0, h).astype(int).tolist()
            x1 = np.clip(np.ceil(b[:, 2]) + gap, 0, w).astype(int).tolist()
            y1 = np.clip(np.ceil(b[:, 3]) + gap, 0, h).astype(int).tolist()
            for i in range(len(x0)):  # a few dozen boxes, not pixels
                allowed[y0[i] : y1[i], x0[i] : x1[i]] = False
        return FreeSpace(allowed, occupied, gap=self.config.min_gap)

    def _place_paper(self, rng, space: FreeSpace, groups) -> tuple[list, int, int]:
        cfg = self.config
        placed, regions, fallbacks = [], 0, 0
        for patches in groups:
            region = space.find_region(rng, cfg.region_size, cfg.tries) if cfg.cluster else None
            area = None if region is None else space.area(*region, cfg.region_size, max_spacing=cfg.spacing[1])
            regions += area is not None
            for patch in patches:
                h, w = patch.shape
                if area is not None:
                    spot = area.fit(rng, w, h)
                    if spot is not None:  # else the region is full: the paper packs regions, it does not spill
                        placed.append((area.place(spot[0], spot[1], w, h), patch))
                    continue
                fallbacks += cfg.cluster  # no free region: scatter like plain copy-paste
                spot = space.random_fit(rng, w, h, cfg.tries)
                if spot is not None:
                    placed.append((space.place(spot[0], spot[1], w, h), patch))
        return placed, regions, fallbacks

    def _place_reference(self, rng, space: FreeSpace, patches) -> tuple[list, int, int]:
        cfg = self.config
        placed, regions, fallbacks = [], 0, 0
        offset, area = cfg.ref_region_size, None
        for i, patch in enumerate(patches):
            h, w = patch.shape
            if cfg.cluster and i % cfg.group_size == 0:
                region = None
                while region is None and offset >= cfg.min_region_size:
                    region = space.find_region(rng, offset, cfg.tries)
                    if region is None:
                        offset -= cfg.region_shrink
                if region is None:
                    offset = cfg.ref_region_size  # the code resets after giving up
                area = None if region is None else space.area(*region, offset)
                regions += area is not None
            spot = area.fit(rng, w, h) if area is not None else None
            if area is not None and spot is not None:
                placed.append((area.place(spot[0], spot[1], w, h), patch))
                continue
            fallbacks += cfg.cluster  # the code's choose_point: a random sky point anywhere
            spot = space.random_fit(rng, w, h, cfg.tries)
            if spot is not None:
                placed.append((space.place(spot[0], spot[1], w, h), patch))
        return placed, regions, fallbacks

    # ---------------------------------------------------------------- call
    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        cfg = self.config
        rng = rng if rng is not None else np.random.default_rng()
        if not cfg.copy_paste or rng.random() >= cfg.prob:
            return sample.copy(meta=dict(sample.meta, bagcp=dict(requested=0, pasted=0, regions=0, fallbacks=0)))
        if cfg.recipe == "paper":
            groups = self._paper_groups(rng)
            requested = sum(len(g) for g in groups)
        else:
            patches = self._reference_patches(rng)
            requested = len(patches)
        # The sky map is shared, not copied: BAG-CP never writes it (and no transform writes in place).
        out = Sample(sample.id, sample.image.copy(), sample.boxes.copy(), sample.sky,
                     None if sample.target_mask is None else sample.target_mask.copy(),
                     sample.orig_size, dict(sample.meta))
        if requested:
            space = self._space(sample)
            if cfg.recipe == "paper":
                placed, regions, fallbacks = self._place_paper(rng, space, groups)
            else:
                placed, regions, fallbacks = self._place_reference(rng, space, patches)
        else:
            placed, regions, fallbacks = [], 0, 0
        if placed:
            boxes = np.array([box for box, _ in placed], np.int64)
            patches = [p for _, p in placed]
            weights = lams = None
            if cfg.gaussian:
                blend = cfg.blend_params
                shapes = np.stack([boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], 1)
                weights = gaussian_weights_padded(shapes, rng, blend)
                lams = rng.uniform(*blend.lam, size=len(placed))
            paste_boxes(out.image, boxes, patches, weights, lams)
            if out.target_mask is not None:
                for x0, y0, x1, y1 in boxes.tolist():
                    out.target_mask[y0:y1, x0:x1] = 1
            existing = snap_boxes(out.boxes) if cfg.snap_gt else out.boxes
            out.boxes = np.concatenate([existing, boxes.astype(np.float32)])
        out.meta["bagcp"] = dict(requested=requested, pasted=len(placed), regions=regions, fallbacks=fallbacks)
        return out


def snap_boxes(boxes: np.ndarray) -> np.ndarray:
    """The released code's GT after a paste: each box re-derived from its integer mask
    ``[int(y0):int(y1), int(x0):int(x1)]`` is ``floor`` of its coordinates (they are >= 0 after
    the resize's clip), and a box that floors to zero width or height has no mask and is dropped."""
    snapped = np.floor(np.asarray(boxes, np.float32).reshape(-1, 4))
    keep = (snapped[:, 2] > snapped[:, 0]) & (snapped[:, 3] > snapped[:, 1])
    return snapped[keep].astype(np.float32)


def make_source(dataset: Sequence[Sample], transform: Callable | None = None) -> Callable[[np.random.Generator], Sample]:
    """The reference recipe's source: a random training sample through the same geometry
    transforms as the destination (the released code loads it through its own resize+flip)."""
    if len(dataset) == 0:
        raise ValueError("BAG-CP source dataset is empty")

    def source(rng: np.random.Generator) -> Sample:
        sample = dataset[int(rng.integers(len(dataset)))]
        return transform(sample, rng) if transform is not None else sample

    return source


def build_bagcp(config: BagCPConfig, train_samples: Sequence[Sample] | None = None,
                source: Source | None = None, library_limit: int | None = 5000) -> BagCP:
    """Convenience: the library from ``train_samples`` for the paper recipe, else the source."""
    library = None
    if config.copy_paste and config.recipe == "paper":
        library = TargetLibrary.from_samples(train_samples or [], config.max_target_size, library_limit)
    if config.copy_paste and config.recipe == "reference" and source is None:
        source = train_samples
    return BagCP(config, library=library, source=source)


__all__ = ["BagCP", "BagCPConfig", "TargetLibrary", "TABLE_III_ROWS", "TOGGLES", "RECIPES", "build_bagcp", "make_source", "snap_boxes"]
