"""Data-set statistics in the spirit of the BAFE-Net paper's Fig. 3, and preview images.

The paper plots target size, local contrast and brightness but does not define the last two, so the
definitions used here are ours (and stated in ``stats.json``):

* **size**: box width x height in original pixels (pixel-edge boxes, so a 3-pixel-wide target is 3).
* **local contrast**: mean grey level of the target's pixels (target-mask pixels inside the box, or the
  whole box when there is no mask) divided by the mean grey level of the surrounding ring (the box grown
  by max(w, h) on every side, clipped to the image, minus the box and minus any target pixel). 1 means
  "as bright as its neighbourhood"; below 1 is a dark target.
* **brightness rank**: share of the image's pixels strictly brighter than the target's brightest pixel;
  0 means the target holds the image's brightest point (the paper: "only a minority of targets are the
  brightest points in their respective images").
* **sky fraction**: share of sky pixels per image (DenseSIRST only).

Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable

import numpy as np

from irstdlab.datasets.sample import Sample


def local_contrast(image: np.ndarray, box: np.ndarray, target_mask: np.ndarray | None = None) -> float:
    """Target mean over ring mean (see module docstring). ``box`` is pixel-edge xyxy."""
    height, width = image.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return float("nan")
    grow = max(x1 - x0, y1 - y0)
    gx0, gy0, gx1, gy1 = max(x0 - grow, 0), max(y0 - grow, 0), min(x1 + grow, width), min(y1 + grow, height)
    patch = image[gy0:gy1, gx0:gx1].astype(np.float64)
    inside = np.zeros(patch.shape, dtype=bool)
    inside[y0 - gy0 : y1 - gy0, x0 - gx0 : x1 - gx0] = True
    target = inside.copy()
    ring = ~inside
    if target_mask is not None:
        tm = target_mask[gy0:gy1, gx0:gx1] > 0
        if (tm & inside).any():
            target &= tm
        ring &= ~tm  # neighbouring targets are not background
    if not ring.any():
        return float("nan")
    return float(patch[target].mean() / max(patch[ring].mean(), 1.0))


def brightness_rank(image: np.ndarray, box: np.ndarray) -> float:
    """Share of image pixels strictly brighter than the brightest pixel inside ``box``."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    region = image[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)]
    if region.size == 0:
        return float("nan")
    return float((image > region.max()).mean())


@dataclass
class DatasetStats:
    """Per-target and per-image values; ``summary()`` is what goes into stats.json."""

    widths: list[float] = field(default_factory=list)
    heights: list[float] = field(default_factory=list)
    contrasts: list[float] = field(default_factory=list)
    ranks: list[float] = field(default_factory=list)
    sky_fractions: list[float] = field(default_factory=list)
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    targets_per_image: list[int] = field(default_factory=list)

    def add(self, sample: Sample) -> None:
        image = sample.image
        self.image_sizes.append(sample.size)
        self.targets_per_image.append(sample.num_targets)
        if sample.sky is not None:
            self.sky_fractions.append(float(sample.sky.mean()))
        for box in sample.boxes:
            self.widths.append(float(box[2] - box[0]))
            self.heights.append(float(box[3] - box[1]))
            self.contrasts.append(local_contrast(image, box, sample.target_mask))
            self.ranks.append(brightness_rank(image, box))

    def summary(self) -> dict:
        contrasts = np.asarray(self.contrasts, dtype=np.float64)
        contrasts = contrasts[np.isfinite(contrasts)]
        ranks = np.asarray(self.ranks, dtype=np.float64)
        ranks = ranks[np.isfinite(ranks)]
        sizes = Counter(f"{int(w)}x{int(h)}" for w, h in zip(self.widths, self.heights))
        return {
            "images": len(self.image_sizes),
            "targets": len(self.widths),
            "background_images": sum(1 for n in self.targets_per_image if n == 0),
            "targets_per_image": _describe(self.targets_per_image),
            "image_width": _describe([w for _, w in self.image_sizes]),
            "image_height": _describe([h for h, _ in self.image_sizes]),
            "target_width": _describe(self.widths),
            "target_height": _describe(self.heights),
            "target_sizes_most_common": dict(sizes.most_common(10)),
            "local_contrast": _describe(contrasts) | {"share_below_2": _share(contrasts < 2)},
            "brightness_rank": _describe(ranks) | {"share_brightest_point": _share(ranks == 0)},
            "sky_fraction": _describe(self.sky_fractions) if self.sky_fractions else None,
            "definitions": {
                "local_contrast": "mean(target pixels) / mean(ring of width max(w,h) around the box, targets excluded)",
                "brightness_rank": "share of image pixels strictly brighter than the target's brightest pixel",
            },
        }


def _describe(values: Iterable[float]) -> dict:
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {"count": 0}
    q = np.percentile(arr, [10, 50, 90])
    return {
        "count": int(arr.size),
        "min": float(arr.min()),
        "p10": float(q[0]),
        "median": float(q[1]),
        "mean": float(arr.mean()),
        "p90": float(q[2]),
        "max": float(arr.max()),
    }


def _share(flags: np.ndarray) -> float | None:
    return float(flags.mean()) if flags.size else None


def collect_stats(samples: Iterable[Sample]) -> DatasetStats:
    stats = DatasetStats()
    for sample in samples:
        stats.add(sample)
    return stats


def write_stats(stats: DatasetStats, out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Write stats.json and one PNG per distribution into ``out_dir``; return {name: path}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def save(fig, name: str) -> None:
        path = out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written[name] = path

    # (a) target sizes: one circle per (w, h) with area proportional to its count, as in the paper.
    fig, ax = plt.subplots(figsize=(5, 4))
    counts = Counter(zip(stats.widths, stats.heights))
    if counts:
        (ws, hs), ns = zip(*counts.keys()), np.array(list(counts.values()), dtype=float)
        ax.scatter(ws, hs, s=20 + 400 * ns / ns.max(), alpha=0.5, edgecolors="k")
    ax.set(xlabel="target width (px)", ylabel="target height (px)", title=f"{title} target sizes".strip())
    save(fig, "target_size")

    for name, values, xlabel in (
        ("local_contrast", stats.contrasts, "local contrast (target mean / ring mean)"),
        ("brightness_rank", stats.ranks, "share of image pixels brighter than the target's peak"),
        ("sky_fraction", stats.sky_fractions, "sky fraction per image"),
    ):
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if name == "sky_fraction" and arr.size == 0:
            continue  # layouts without a sky map
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.hist(arr, bins=40, color="tab:blue", alpha=0.8)
        ax.set(xlabel=xlabel, ylabel="count", title=f"{title} {name.replace('_', ' ')}".strip())
        save(fig, name)

    json_path = out / "stats.json"
    json_path.write_text(json.dumps(stats.summary() | {"plots": {k: v.name for k, v in written.items()}}, indent=2))
    written["stats"] = json_path
    return written


def render_preview(sample: Sample, sky_alpha: float = 0.35) -> np.ndarray:
    """BGR uint8 picture of a sample: grey image, sky tinted blue, boxes in red (1 px outline)."""
    import cv2

    bgr = cv2.cvtColor(sample.image, cv2.COLOR_GRAY2BGR).astype(np.float32)
    if sample.sky is not None:
        tint = np.array([255.0, 120.0, 0.0], dtype=np.float32)  # BGR blue
        sky = sample.sky.astype(bool)
        bgr[sky] = (1 - sky_alpha) * bgr[sky] + sky_alpha * tint
    out = np.clip(bgr, 0, 255).astype(np.uint8)
    for x0, y0, x1, y1 in sample.boxes:
        # pixel-edge box -> the inclusive pixel rectangle OpenCV draws
        cv2.rectangle(out, (int(x0), int(y0)), (max(int(x1) - 1, int(x0)), max(int(y1) - 1, int(y0))), (0, 0, 255), 1)
    return out


def write_preview(sample: Sample, path: str | Path) -> Path:
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), render_preview(sample)):
        raise OSError(f"could not write {path}")
    return path
