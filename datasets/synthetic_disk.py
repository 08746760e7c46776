"""A synthetic set on disk, in the DenseSIRST layout that ``irstdlab data check`` reads back.

Files: ``PNGImages/<id>.png``, ``SIRST/BBox/<id>.xml``, ``SIRST/BinaryMask/<id>_pixels0.png``,
``SkySeg/BinaryMask/<id>_pixels0.png``, ``SkySeg/PaletteMask/<id>.png`` and
``Splits/{train,val,test,trainval}_v2.txt``. ``overwrite`` rewrites a folder in place and then
removes the synthetic files (and only those) that the new, smaller set no longer lists.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np

from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.sample import Sample
from irstdlab.datasets.synthetic import SyntheticConfig, SyntheticDataset


def _voc_xml(sample: Sample) -> str:
    """DenseSIRST's BBox XML: 0-based integer coordinates with an exclusive max."""
    h, w = sample.size
    objects = "".join(
        "  <object>\n    <name>Target</name>\n    <bndbox>\n"
        f"      <xmin>{x0}</xmin>\n      <ymin>{y0}</ymin>\n      <xmax>{x1}</xmax>\n      <ymax>{y1}</ymax>\n"
        "    </bndbox>\n  </object>\n"
        for x0, y0, x1, y1 in sample.boxes.astype(np.int64)
    )
    return (
        f"<annotation>\n  <filename>{sample.id}</filename>\n  <size>\n    <width>{w}</width>\n"
        f"    <height>{h}</height>\n    <depth>1</depth>\n  </size>\n{objects}</annotation>\n"
    )


def write_sample(root: Path, sample: Sample) -> None:
    """One sample's files in the DenseSIRST layout (see module ``write_dataset``)."""
    from PIL import Image  # only needed when writing

    def png(path: Path, array: np.ndarray) -> None:
        if not cv2.imwrite(str(path), array):
            raise DatasetError(path, "could not write PNG")

    assert sample.target_mask is not None and sample.sky is not None, "a synthetic sample has both maps"
    png(root / "PNGImages" / f"{sample.id}.png", sample.image)
    (root / "SIRST" / "BBox" / f"{sample.id}.xml").write_text(_voc_xml(sample))
    png(root / "SIRST" / "BinaryMask" / f"{sample.id}_pixels0.png", sample.target_mask * np.uint8(255))
    png(root / "SkySeg" / "BinaryMask" / f"{sample.id}_pixels0.png", sample.sky * np.uint8(255))
    palette = Image.fromarray(sample.sky, mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 254)
    palette.save(root / "SkySeg" / "PaletteMask" / f"{sample.id}.png")



MIN_IMAGES = 3  # one per split: an empty val or test split cannot be read back


def split_counts(num_images: int) -> dict[str, int]:
    """60/20/20 train/val/test, every split with at least one image (the extra ones come from train)."""
    if num_images < MIN_IMAGES:
        raise DatasetError(None, f"--images: a synthetic set needs at least {MIN_IMAGES} images "
                                 f"(one each for train, val, test), got {num_images}")
    train = int(round(num_images * 0.6))
    val = int(round(num_images * 0.2))
    counts = {"train": train, "val": val, "test": num_images - train - val}
    for split in ("val", "test"):
        if counts[split] == 0:
            counts[split], counts["train"] = 1, counts["train"] - 1
    return counts


# every file name write_sample creates, per folder: what --overwrite may remove when it is not rewritten
_OWNED = {
    "PNGImages": re.compile(r"synth_(train|val|test)_\d{5,}\.png"),
    "SIRST/BBox": re.compile(r"synth_(train|val|test)_\d{5,}\.xml"),
    "SIRST/BinaryMask": re.compile(r"synth_(train|val|test)_\d{5,}_pixels0\.png"),
    "SkySeg/BinaryMask": re.compile(r"synth_(train|val|test)_\d{5,}_pixels0\.png"),
    "SkySeg/PaletteMask": re.compile(r"synth_(train|val|test)_\d{5,}\.png"),
}


def _remove_orphans(out: Path, keep_ids: set[str]) -> int:
    """Delete synthetic files of an earlier, larger set that the new one did not rewrite."""
    removed = 0
    for sub, pattern in _OWNED.items():
        for path in (out / sub).iterdir():
            match = pattern.fullmatch(path.name)
            if match and path.is_file() and path.name.split(".")[0].removesuffix("_pixels0") not in keep_ids:
                path.unlink()
                removed += 1
    return removed


def write_dataset(out_dir: str | Path, num_images: int, size: int | tuple[int, int] = 128, seed: int = 0,
                  difficulty: str = "medium", overwrite: bool = False, **overrides) -> dict:
    """Write ``num_images`` synthetic images under ``out_dir`` in the DenseSIRST layout.

    ``out_dir`` becomes the data-set root (the folder holding ``PNGImages/``).  Splits are
    60/20/20 train/val/test with ``trainval_v2`` = train + val.  Returns a summary dict.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DatasetError(out, "exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DatasetError(out, "is not empty; choose another folder or pass overwrite=True")
    counts = split_counts(num_images)  # refuses too few images before anything is written
    SyntheticDataset(1, size=size, seed=seed, difficulty=difficulty, **overrides)  # checks size, seed, knobs first
    for sub in ("PNGImages", "SIRST/BBox", "SIRST/BinaryMask", "SkySeg/PaletteMask", "SkySeg/BinaryMask", "Splits"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {}
    targets = 0
    for split, n in counts.items():
        data = SyntheticDataset(n, size=size, seed=seed, split=split, difficulty=difficulty, **overrides)
        ids[split] = []
        for i in range(n):
            sample = data[i]
            write_sample(out, sample)
            ids[split].append(sample.id)
            targets += sample.num_targets
    ids["trainval"] = ids["train"] + ids["val"]
    for split, names in ids.items():
        (out / "Splits" / f"{split}_v2.txt").write_text("".join(f"{n}\n" for n in names))
    removed = _remove_orphans(out, set(ids["trainval"] + ids["test"])) if overwrite else 0
    return {
        "root": str(out),
        "images": num_images,
        "targets": targets,
        "splits": {k: len(v) for k, v in ids.items()},
        "size": list(SyntheticConfig.preset(difficulty, size=size, **overrides).shape),
        "seed": seed,
        "difficulty": difficulty,
        "removed_stale_files": removed,
    }


__all__ = ["MIN_IMAGES", "split_counts", "write_dataset", "write_sample"]
