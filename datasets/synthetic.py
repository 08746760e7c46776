"""The built-in DenseSIRST-like synthetic data set: the project's default and quickstart.

Each image is a sky over a skyline.  The sky is a smooth gradient with cloud-like noise;
the ground holds buildings, terrain texture and bright hot spots.  Clusters of small
targets are put in the sky with the paper's recipe (§III-B: 1-3 dense areas of 20x20 px,
8-12 targets of <= 5x5 px each, 1-2 px apart, additive Gaussian blend of Eq. 1-3), and
target-like *distractors* drawn from the same size/contrast law are put in the ground.
Distractors are not annotated: telling them apart needs background semantics, which is
exactly what BAFE-Net is about.

Everything is a pure function of ``(seed, split, index)``: generated on the fly
(``SyntheticDataset``) or written once in the DenseSIRST layout (``write_dataset``) so
that the same reader, checks and CLI exercise it.  Targets sit on the integer pixel grid,
so boxes are exact ``[x0, y0, x1 + 1, y1 + 1]`` both in memory and on disk; a box (and
its target-mask rectangle) is the blob's visible extent, the pixels where its Gaussian
reaches ``box_threshold`` of the peak.  ``meta["distractors"]`` lists the distractor boxes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np

from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.gaussian_blend import GaussianParams, gaussian_weights_batch
from irstdlab.datasets.placement import FreeSpace
from irstdlab.datasets.sample import Sample

DIFFICULTIES = ("easy", "medium", "hard")

# What changes with difficulty: target/distractor peak contrast over the local background
# (grey levels, before lambda), sensor noise sigma, cloud amplitude, distractors per 10k
# ground pixels.  "medium" is meant for the quickstart: every target peaks >= 7.5 noise
# sigmas above its local background (tests/test_synthetic.py checks it), while distractors
# still confuse a detector that ignores context.
PRESETS: dict[str, dict] = {
    "easy": dict(contrast=(80.0, 130.0), noise=2.0, clouds=8.0, distractor_density=3.0),
    "medium": dict(contrast=(60.0, 110.0), noise=4.0, clouds=15.0, distractor_density=6.0),
    "hard": dict(contrast=(35.0, 80.0), noise=7.0, clouds=25.0, distractor_density=12.0),
}

MIN_SIDE = 128


@dataclass(frozen=True)
class SyntheticConfig:
    """All knobs of the generator; ``SyntheticConfig.preset(difficulty, **overrides)`` builds one."""

    size: int | tuple[int, int] = 128  # square side, or (H, W)
    difficulty: str = "medium"
    contrast: tuple[float, float] = (60.0, 110.0)
    noise: float = 4.0
    clouds: float = 15.0
    distractor_density: float = 6.0  # expected distractors per 10,000 ground pixels
    distractor_group: tuple[int, int] = (3, 6)  # distractors also come in look-alike groups
    distractor_group_prob: float = 0.5
    clusters: tuple[int, int] = (1, 3)
    targets_per_cluster: tuple[int, int] = (8, 12)
    cluster_size: int = 20
    target_size: tuple[int, int] = (2, 5)  # footprint per axis, pixels (the visible box can be smaller)
    box_threshold: float = 0.25  # annotated box = pixels with G >= this fraction of the blob's peak
    spacing: tuple[int, int] = (1, 2)  # empty pixels between neighbours in a cluster
    isolated_targets: tuple[int, int] = (0, 2)  # extra lone targets anywhere in the sky
    horizon: tuple[float, float] = (0.5, 0.8)  # ground starts at this fraction of H
    gaussian: GaussianParams = field(default_factory=GaussianParams)

    @classmethod
    def preset(cls, difficulty: str = "medium", **overrides) -> SyntheticConfig:
        if difficulty not in PRESETS:
            raise DatasetError(None, f"synthetic difficulty {difficulty!r}: expected one of {DIFFICULTIES}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise DatasetError(None, f"synthetic: unknown option(s) {unknown}; known: {sorted(known)}")
        values = {**PRESETS[difficulty], **{k: v for k, v in overrides.items() if v is not None}}
        size = values.get("size", 128)
        try:  # an int side, or (H, W) from Python, YAML or JSON
            values["size"] = int(size) if np.ndim(size) == 0 else tuple(int(v) for v in size)
        except (TypeError, ValueError):
            raise DatasetError(None, f"synthetic size={size!r}: expected an int or (H, W)") from None
        if isinstance(values["size"], tuple) and len(values["size"]) != 2:
            raise DatasetError(None, f"synthetic size={size!r}: expected an int or (H, W)")
        for key in ("contrast", "distractor_group", "clusters", "targets_per_cluster", "target_size",
                    "spacing", "isolated_targets", "horizon"):
            if key in values and not isinstance(values[key], tuple):
                values[key] = tuple(values[key])  # lists from YAML/JSON
        cfg = cls(difficulty=difficulty, **values)
        cfg.validate()
        return cfg

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)  # type: ignore[return-value]

    def validate(self) -> None:
        def bad(name: str, why: str) -> DatasetError:
            return DatasetError(None, f"synthetic {name}={getattr(self, name)!r}: {why}")

        h, w = self.shape
        if min(h, w) < MIN_SIDE:
            raise bad("size", f"each side must be >= {MIN_SIDE}")
        for name in ("contrast", "distractor_group", "clusters", "targets_per_cluster", "target_size",
                     "spacing", "isolated_targets", "horizon"):
            lo, hi = getattr(self, name)
            if lo > hi or lo < 0:
                raise bad(name, "expected (min, max) with 0 <= min <= max")
        if self.target_size[0] < 1 or self.target_size[1] > self.cluster_size:
            raise bad("target_size", f"sides must be in [1, cluster_size={self.cluster_size}]")
        if self.spacing[0] < 1:
            raise bad("spacing", "targets need at least a 1 px gap so boxes stay separable")
        if self.horizon[1] > 0.95:
            raise bad("horizon", "keep the ground start <= 0.95 of the height")
        if not 0.0 < self.box_threshold <= 1.0:
            raise bad("box_threshold", "must be in (0, 1]")
        if self.noise < 0 or self.clouds < 0 or self.distractor_density < 0:
            raise bad("noise", "noise, clouds and distractor_density must be >= 0")


# ----------------------------------------------------------------------------- scene
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Value noise in ~[-1, 1]: a coarse random grid upsampled (cubic), i.e. cloud-like blobs."""
    coarse = rng.standard_normal((h // cell + 3, w // cell + 3)).astype(np.float32)
    big = cv2.resize(coarse, ((w // cell + 3) * cell, (h // cell + 3) * cell), interpolation=cv2.INTER_CUBIC)
    oy, ox = rng.integers(0, cell, size=2)
    return big[oy : oy + h, ox : ox + w] * 0.7


def _skyline(rng: np.random.Generator, h: int, w: int, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per column: first ground row (terrain minus buildings), and a building id (-1 = none)."""
    base = rng.uniform(*cfg.horizon) * h
    knots = rng.standard_normal(w // 32 + 2) * h * 0.04
    terrain = base + np.interp(np.arange(w), np.linspace(0, w - 1, knots.size), knots)
    widths = rng.integers(max(4, w // 40), max(8, w // 6), size=w // 4 + 1)
    heights = rng.uniform(0.03, 0.25, size=widths.size) * h * (rng.random(widths.size) < 0.6)
    block_id = np.repeat(np.arange(widths.size), widths)[:w]
    top = np.clip(terrain - heights[block_id], 0.25 * h, 0.95 * h).astype(np.int64)
    building = np.where(heights[block_id] > 0, block_id, -1)
    return top, building


def _scene(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """Float32 background (no targets, no sensor noise) and the uint8 0/1 sky map."""
    h, w = cfg.shape
    top, building = _skyline(rng, h, w, cfg)
    rows = np.arange(h)[:, None]
    sky = (rows < top[None, :]).astype(np.uint8)

    # Sky: darker at the zenith, brighter near the horizon, with clouds.
    zenith, horizon = rng.uniform(50, 100), rng.uniform(10, 40)
    grad = zenith + horizon * (rows / h) ** 1.5
    clouds = cfg.clouds * (_smooth_noise(rng, h, w, max(8, h // 6)) + 0.5 * _smooth_noise(rng, h, w, max(4, h // 24)))
    sky_img = grad + clouds

    # Ground: per-building brightness, floors, rough texture, and bright hot spots (lights, exhausts).
    ground_level = rng.uniform(60, 130)
    offsets = rng.uniform(-25, 25, size=building.max() + 2)
    col_offset = offsets[building + 1] * (building >= 0)
    floor_h = int(rng.integers(3, 7))
    floors = ((rows // floor_h) % 2) * rng.uniform(4, 12)
    texture = 12.0 * _smooth_noise(rng, h, w, 4) + rng.normal(0, 3.0, (h, w)).astype(np.float32)
    ground_img = ground_level + col_offset[None, :] + floors * (building[None, :] >= 0) + texture
    n_hot = rng.poisson(4 * h * w / 128**2)
    for _ in range(n_hot):  # few, larger than targets: structure, not look-alikes
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = int(rng.integers(3, 7))
        cv2.circle(ground_img, (int(cx), int(cy)), r, float(ground_level + rng.uniform(40, 90)), -1)
    image = np.where(sky.astype(bool), sky_img, ground_img).astype(np.float32)
    return image, sky


# --------------------------------------------------------------------------- objects
def _blobs(rng: np.random.Generator, image: np.ndarray, boxes: list, cfg: SyntheticConfig) -> np.ndarray:
    """Eq. 1 with a constant B_box = contrast: T_back + contrast * lambda * G, in place (float).

    Returns the *visible* box of each blob: the bounding box of its pixels with
    G >= ``cfg.box_threshold``.  The footprint that was placed can be wider than the blob
    (a small sigma lights only its middle); annotating the footprint would make the box
    size a coin toss for a detector, annotating the visible extent makes it learnable.
    """
    if not boxes:
        return np.zeros((0, 4), np.int64)
    b = np.asarray(boxes, np.int64).reshape(-1, 4)
    weights = gaussian_weights_batch(list(zip(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0])), rng, cfg.gaussian)
    peaks = rng.uniform(*cfg.contrast, size=len(b)) * rng.uniform(*cfg.gaussian.lam, size=len(b))
    visible = np.empty_like(b)
    for i, ((x0, y0, x1, y1), g, peak) in enumerate(zip(b, weights, peaks)):
        image[y0:y1, x0:x1] += np.float32(peak) * g
        rows, cols = np.nonzero(g >= cfg.box_threshold)  # never empty: max(G) = 1
        visible[i] = (x0 + cols.min(), y0 + rows.min(), x0 + cols.max() + 1, y0 + rows.max() + 1)
    return visible


def _size(rng: np.random.Generator, cfg: SyntheticConfig) -> tuple[int, int]:
    w, h = rng.integers(cfg.target_size[0], cfg.target_size[1] + 1, size=2)
    return int(w), int(h)


def _clusters(rng, space: FreeSpace, n_clusters: int, per_cluster: tuple[int, int], cfg) -> list:
    """Paper recipe: n regions, each filled with 8-12 boxes 1-2 px from a neighbour."""
    boxes = []
    for _ in range(n_clusters):
        region = space.find_region(rng, cfg.cluster_size)
        if region is None:
            break
        area = space.area(*region, cfg.cluster_size, max_spacing=cfg.spacing[1])
        for _ in range(int(rng.integers(per_cluster[0], per_cluster[1] + 1))):
            w, h = _size(rng, cfg)
            spot = area.fit(rng, w, h)
            if spot is not None:
                boxes.append(area.place(spot[0], spot[1], w, h))
    return boxes


def generate(cfg: SyntheticConfig, rng: np.random.Generator, sample_id: str) -> Sample:
    """One synthetic image; ``meta['distractors']`` holds the (unannotated) distractor boxes."""
    image, sky = _scene(rng, cfg)
    h, w = image.shape

    # Targets: clusters + a few lone ones, all wholly in sky.
    targets = FreeSpace(sky.astype(bool), gap=cfg.spacing[0])
    boxes = _clusters(rng, targets, int(rng.integers(cfg.clusters[0], cfg.clusters[1] + 1)),
                      cfg.targets_per_cluster, cfg)
    for _ in range(int(rng.integers(cfg.isolated_targets[0], cfg.isolated_targets[1] + 1))):
        tw, th = _size(rng, cfg)
        spot = targets.random_fit(rng, tw, th)
        if spot is not None:
            boxes.append(targets.place(spot[0], spot[1], tw, th))

    # Distractors: same size/contrast law, wholly in ground, sometimes grouped like a cluster.
    ground = sky == 0
    lookalikes = FreeSpace(ground, gap=cfg.spacing[0])
    n_distractors = int(rng.poisson(cfg.distractor_density * ground.sum() / 1e4))
    distractors: list = []
    while len(distractors) < n_distractors:
        if rng.random() < cfg.distractor_group_prob:
            group = int(rng.integers(cfg.distractor_group[0], cfg.distractor_group[1] + 1))
            placed = _clusters(rng, lookalikes, 1, (group, group), cfg)
            if not placed:
                break
            distractors.extend(placed)
        else:
            dw, dh = _size(rng, cfg)
            spot = lookalikes.random_fit(rng, dw, dh)
            if spot is None:
                break
            distractors.append(lookalikes.place(spot[0], spot[1], dw, dh))
    distractors = distractors[: max(n_distractors, 0)]

    # each blob's visible box: what the sample annotates
    drawn = _blobs(rng, image, boxes, cfg)
    drawn_distractors = _blobs(rng, image, distractors, cfg)
    image += rng.normal(0.0, cfg.noise, image.shape).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    box_arr = np.asarray(drawn, np.float32).reshape(-1, 4)
    mask = np.zeros((h, w), np.uint8)
    for x0, y0, x1, y1 in drawn:
        mask[y0:y1, x0:x1] = 1  # the visible box, like BAG-CP's paste_by_box masks
    return Sample(
        id=sample_id,
        image=image,
        boxes=box_arr,
        sky=sky,
        target_mask=mask,
        meta={"distractors": np.asarray(drawn_distractors, np.float32).reshape(-1, 4), "synthetic": cfg.difficulty},
    )


def stream_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Independent stream per (seed, split, index): splits never share images."""
    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index)])


class SyntheticDataset:
    """``num_images`` synthetic samples of one split, generated on demand, deterministic per index."""

    def __init__(self, num_images: int, size: int | tuple[int, int] = 128, seed: int = 0,
                 split: str = "train", difficulty: str = "medium", **overrides):
        if num_images < 0:
            raise DatasetError(None, f"synthetic num_images={num_images}: must be >= 0")
        if not 0 <= int(seed) < 2**63:  # numpy's SeedSequence takes non-negative integers only
            raise DatasetError(None, f"synthetic seed={seed}: must be in 0..{2**63 - 1}")
        self.num_images = int(num_images)
        self.seed = int(seed)
        self.split = split
        self.config = SyntheticConfig.preset(difficulty, size=size, **overrides)

    def __len__(self) -> int:
        return self.num_images

    def sample_id(self, index: int) -> str:
        return f"synth_{self.split}_{index:05d}"

    def __getitem__(self, index: int) -> Sample:
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"synthetic index {index} out of range for {self.num_images} images")
        index %= self.num_images
        rng = np.random.default_rng(stream_seed(self.seed, self.split, index))
        return generate(self.config, rng, self.sample_id(index))


# ------------------------------------------------------------------------------ disk
def write_dataset(out_dir: str | Path, num_images: int, **kwargs) -> dict:
    """Write a synthetic set in the DenseSIRST layout (``datasets/synthetic_disk.py``)."""
    from irstdlab.datasets.synthetic_disk import write_dataset as write

    return write(out_dir, num_images, **kwargs)


__all__ = ["SyntheticConfig", "SyntheticDataset", "generate", "write_dataset", "PRESETS", "DIFFICULTIES"]
