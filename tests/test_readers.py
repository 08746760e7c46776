"""The DenseSIRST and SIRST-V2 readers on the real mini subsets: counts, geometry, masks, grey rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irstdlab.datasets import DenseSIRST, SirstV2, open_dataset
from irstdlab.datasets.checks import check_dataset, mask_components, match_boxes
from irstdlab.datasets.io import read_voc_boxes

pytestmark = pytest.mark.shared_data

# split -> (images, images with targets, targets), measured on the mini subsets
DENSE_COUNTS = {
    "train_v2": (48, 48, 513),
    "val_v2": (16, 16, 214),
    "test_v2": (24, 24, 307),
    "trainval_v2": (64, 64, 727),
}
V2_COUNTS = {
    "train_full": (36, 24, 35),
    "val_full": (12, 8, 10),
    "test_full": (24, 16, 17),
    "trainval_full": (48, 32, 45),
}
# The DenseSIRST colour Misc_* images whose XML still follows SIRST-V2's 1-based rule (+1 px).
DENSE_PLUS_ONE = {"Misc_106", "Misc_107", "Misc_132", "Misc_134", "Misc_137", "Misc_21",
                  "Misc_26", "Misc_40", "Misc_423", "Misc_79", "Misc_98", "Misc_53"}


@pytest.fixture(scope="module")
def dense_all(densesirst_root):
    """Every mini DenseSIRST image (train+val+test), decoded once for the module."""
    ids = DenseSIRST(densesirst_root, "trainval_v2").ids + DenseSIRST(densesirst_root, "test_v2").ids
    reader = DenseSIRST(densesirst_root, ids=ids)
    return [reader.sample(i) for i in ids]


@pytest.fixture(scope="module")
def v2_all(sirstv2_root):
    ids = SirstV2(sirstv2_root, "trainval_full").ids + SirstV2(sirstv2_root, "test_full").ids
    reader = SirstV2(sirstv2_root, ids=ids)
    return [reader.sample(i) for i in ids]


def _counts(reader):
    samples = list(reader)
    return len(samples), sum(s.num_targets > 0 for s in samples), sum(s.num_targets for s in samples)


@pytest.mark.parametrize("split", sorted(DENSE_COUNTS))
def test_densesirst_split_counts(densesirst_root, split):
    assert _counts(DenseSIRST(densesirst_root, split, load_masks=False)) == DENSE_COUNTS[split]


@pytest.mark.parametrize("split", sorted(V2_COUNTS))
def test_sirstv2_split_counts(sirstv2_root, split):
    assert _counts(SirstV2(sirstv2_root, split, load_masks=False)) == V2_COUNTS[split]


def test_trainval_is_train_union_val(densesirst_root, sirstv2_root):
    for cls, root, tag in ((DenseSIRST, densesirst_root, "v2"), (SirstV2, sirstv2_root, "full")):
        train, val = set(cls(root, f"train_{tag}").ids), set(cls(root, f"val_{tag}").ids)
        assert not train & val
        assert set(cls(root, f"trainval_{tag}").ids) == train | val
        assert f"test_{tag}" in cls.available_splits(root)


def _agreement(samples, connectivity, shift=0.0):
    per_image = {}
    for s in samples:
        comps = mask_components(s.target_mask, connectivity)
        per_image[s.id] = (int(match_boxes(s.boxes + shift, comps).sum()), s.num_targets)
    return per_image


@pytest.mark.parametrize("connectivity", [4, 8])
def test_densesirst_boxes_match_mask_components(dense_all, connectivity):
    per_image = _agreement(dense_all, connectivity)
    agree = sum(a for a, _ in per_image.values())
    total = sum(n for _, n in per_image.values())
    assert (agree, total) == (1020, 1034)  # 98.6 %: the mini set keeps every colour image on purpose
    bad = {i for i, (a, n) in per_image.items() if a < n}
    assert bad == DENSE_PLUS_ONE
    # ...and those boxes are exactly the 1-based (+1) form of their mask components.
    fixed = _agreement([s for s in dense_all if s.id in bad], connectivity, shift=-1.0)
    assert all(a == n for a, n in fixed.values())


@pytest.mark.parametrize("connectivity", [4, 8])
def test_sirstv2_boxes_match_mask_components_only_after_minus_one(v2_all, sirstv2_root, connectivity):
    per_image = _agreement(v2_all, connectivity)
    assert sum(a for a, _ in per_image.values()) == 61
    assert sum(n for _, n in per_image.values()) == 62
    assert {i for i, (a, n) in per_image.items() if a < n} == {"Misc_111"}
    # The raw XML numbers (no -1) match no component at all.
    raw = 0
    for s in v2_all:
        xml = read_voc_boxes(sirstv2_root / "annotations" / "bboxes" / f"{s.id}.xml").boxes
        raw += int(match_boxes(xml, mask_components(s.target_mask, connectivity)).sum())
    assert raw == 0


def test_sky_maps_are_binary_and_image_sized(dense_all):
    fractions = []
    for s in dense_all:
        assert s.sky is not None and s.sky.dtype == np.uint8 and s.sky.shape == s.image.shape
        assert set(np.unique(s.sky)) <= {0, 1}
        fractions.append(s.sky.mean())
    assert 0.0 < np.mean(fractions) < 1.0  # both classes really occur


def test_sky_falls_back_to_binary_mask(densesirst_root, tmp_path):
    ident = "Misc_100"
    for rel in (f"PNGImages/{ident}.png", f"SIRST/BBox/{ident}.xml", f"SIRST/BinaryMask/{ident}_pixels0.png",
                f"SkySeg/BinaryMask/{ident}_pixels0.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(densesirst_root / rel, tmp_path / rel)
    (tmp_path / "Splits").mkdir()
    (tmp_path / "Splits" / "one.txt").write_text(f"\n{ident}\n\n")
    fallback = DenseSIRST(tmp_path, "one")[0].sky
    palette = DenseSIRST(densesirst_root, ids=[ident]).sample(ident).sky
    assert fallback.dtype == np.uint8 and set(np.unique(fallback)) <= {0, 1}
    np.testing.assert_array_equal(fallback, palette)


def _bt601(path: Path) -> np.ndarray:
    """ITU-R BT.601 luma with Pillow's fixed-point rounding, computed by hand from the RGB values."""
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


@pytest.mark.parametrize(
    "dataset, ident, mode",
    [
        ("densesirst", "Misc_21", "RGBA"),
        ("densesirst", "Misc_137", "RGB"),  # channels differ by up to 33 levels
        ("sirstv2", "Misc_73", "P"),
        ("sirstv2", "Misc_140", "P"),
        ("sirstv2", "Misc_69", "RGBA"),
        ("sirstv2", "Misc_5", "RGBA"),
        ("sirstv2", "Misc_111", "RGB"),
    ],
)
def test_colour_files_become_bt601_grey(densesirst_root, sirstv2_root, dataset, ident, mode):
    root = densesirst_root if dataset == "densesirst" else sirstv2_root
    reader = (DenseSIRST if dataset == "densesirst" else SirstV2)(root, ids=[ident])
    path = reader.image_path(ident)
    assert Image.open(path).mode == mode
    grey = reader.sample(ident).image
    assert grey.dtype == np.uint8 and grey.ndim == 2
    assert grey.shape == Image.open(path).size[::-1]
    expected = _bt601(path)
    np.testing.assert_array_equal(grey, expected)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.float64)
    float_luma = rgb @ np.array([0.299, 0.587, 0.114])
    assert np.abs(grey - float_luma).max() <= 0.5 + 1e-6
    if mode == "RGB" and dataset == "densesirst":
        assert not np.array_equal(rgb[..., 0], rgb[..., 2])  # a really coloured file, not grey-as-RGB


def test_grey_files_are_unchanged(densesirst_root):
    reader = DenseSIRST(densesirst_root, "test_v2", load_masks=False)
    ident = next(i for i in reader.ids if Image.open(reader.image_path(i)).mode == "L")
    np.testing.assert_array_equal(reader.sample(ident).image, np.asarray(Image.open(reader.image_path(ident))))


def test_background_only_images_load_with_zero_boxes(sirstv2_root):
    reader = SirstV2(sirstv2_root, "train_full")
    background = [s for s in reader if s.num_targets == 0]
    assert len(background) == 12
    for s in background:
        assert s.boxes.shape == (0, 4) and s.boxes.dtype == np.float32
        assert s.target_mask is not None and not s.target_mask.any()
        assert s.sky is None


def test_reference_protocol_shifts_densesirst_boxes_by_minus_one(densesirst_root, sirstv2_root):
    clean = DenseSIRST(densesirst_root, "val_v2", load_masks=False)
    ref = DenseSIRST(densesirst_root, "val_v2", protocol="reference", load_masks=False)
    total = 0
    for a, b in zip(clean, ref):
        np.testing.assert_array_equal(b.boxes, a.boxes - 1.0)
        total += a.num_targets
    assert total == 214
    # SIRST-V2's -1 is part of the clean geometry already; the reference loader does the same.
    for a, b in zip(SirstV2(sirstv2_root, "val_full", load_masks=False),
                    SirstV2(sirstv2_root, "val_full", protocol="reference", load_masks=False)):
        np.testing.assert_array_equal(a.boxes, b.boxes)


def test_sample_fields_and_indexing(densesirst_root):
    reader = open_dataset("densesirst", densesirst_root)  # default split
    assert reader.split == "train_v2" and len(reader) == 48
    first, last = reader[0], reader[-1]
    assert first.id == reader.ids[0] and last.id == reader.ids[-1]
    assert first.orig_size == first.image.shape and first.boxes.dtype == np.float32
    assert first.target_mask.shape == first.image.shape and set(np.unique(first.target_mask)) <= {0, 1}
    assert reader.sample("Misc_40").image.shape == (96, 135)  # smallest image, by id
    with pytest.raises(IndexError):
        reader[48]
    assert open_dataset("sirstv2", densesirst_root.parents[1] / "SIRST-V2-mini").split == "train_full"


def test_misc_111_reported_as_box_mask_disagreement(sirstv2_root):
    report = check_dataset("sirstv2", sirstv2_root, ["val_full"])
    assert report.ok and report.images == 12 and report.targets == 10
    assert [Path(w["file"]).name for w in report.warnings] == ["Misc_111.xml"]
    assert "do not match" in report.warnings[0]["problem"]
    assert report.box_mask_agreement == pytest.approx(9 / 10)
