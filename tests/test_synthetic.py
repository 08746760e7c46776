"""The built-in synthetic data set: determinism, exact geometry, semantics, and the on-disk layout."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from PIL import Image

from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.synthetic import SyntheticConfig, SyntheticDataset, write_dataset


@pytest.fixture(scope="module")
def medium():
    data = SyntheticDataset(12, size=128, seed=3, split="train", difficulty="medium")
    return [data[i] for i in range(len(data))]


def _components(mask: np.ndarray) -> set[tuple[int, int, int, int]]:
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return {(x, y, x + w, y + h) for x, y, w, h, _ in stats[1:n].tolist()}


def _gaps(boxes: np.ndarray) -> np.ndarray:
    """Pairwise Chebyshev gaps (empty pixels between boxes), diagonal excluded."""
    b = boxes[:, None, :]
    c = boxes[None, :, :]
    gx = np.maximum(c[..., 0] - b[..., 2], b[..., 0] - c[..., 2])
    gy = np.maximum(c[..., 1] - b[..., 3], b[..., 1] - c[..., 3])
    g = np.maximum(gx, gy)
    return g[~np.eye(len(boxes), dtype=bool)]


def test_same_seed_same_arrays_and_streams_differ():
    a = SyntheticDataset(3, seed=7, split="train")[2]
    b = SyntheticDataset(3, seed=7, split="train")[2]
    assert a.id == "synth_train_00002"
    for name in ("image", "boxes", "sky", "target_mask"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    other_seed = SyntheticDataset(3, seed=8, split="train")[2]
    other_split = SyntheticDataset(3, seed=7, split="val")[2]
    assert not np.array_equal(a.image, other_seed.image)
    assert not np.array_equal(a.image, other_split.image)
    assert other_split.id == "synth_val_00002"


def test_boxes_are_exact_mask_components_with_a_gap(medium):
    for s in medium:
        assert s.image.dtype == np.uint8 and s.image.shape == (128, 128)
        assert s.num_targets >= 8, "at least one cluster of 8 targets per image"
        boxes = s.boxes.astype(np.int64)
        np.testing.assert_array_equal(boxes, s.boxes)  # integer grid
        assert _components(s.target_mask) == {tuple(b) for b in boxes.tolist()}
        sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
        assert sides.min() >= 1 and sides.max() <= 5
        assert _gaps(boxes).min() >= 1


def test_targets_in_sky_distractors_in_ground_only(medium):
    n_distractors = 0
    for s in medium:
        assert set(np.unique(s.sky)) <= {0, 1} and 0.2 < s.sky.mean() < 0.9
        for x0, y0, x1, y1 in s.boxes.astype(int):
            assert s.sky[y0:y1, x0:x1].all()
        distractors = s.meta["distractors"].astype(int)
        n_distractors += len(distractors)
        for x0, y0, x1, y1 in distractors:
            assert not s.sky[y0:y1, x0:x1].any()
            assert not s.target_mask[y0:y1, x0:x1].any()
    assert n_distractors >= len(medium)  # "medium" has a few per image on average


def test_targets_stand_clearly_above_local_background(medium):
    """Peak minus the local background median, in units of the configured sensor noise."""
    noise = SyntheticConfig.preset("medium").noise
    snr = []
    for s in medium:
        img = s.image.astype(np.float32)
        occupied = cv2.dilate(s.target_mask, np.ones((3, 3), np.uint8)) > 0
        for x0, y0, x1, y1 in s.boxes.astype(int):
            ys, xs = slice(max(y0 - 6, 0), y1 + 6), slice(max(x0 - 6, 0), x1 + 6)
            ring = img[ys, xs][~occupied[ys, xs] & (s.sky[ys, xs] == 1)]
            if ring.size >= 20:
                snr.append((img[y0:y1, x0:x1].max() - np.median(ring)) / noise)
    assert len(snr) > 100
    assert np.median(snr) > 8 and np.mean(np.array(snr) > 3) > 0.9


def test_difficulty_changes_contrast_and_distractors():
    easy = SyntheticConfig.preset("easy")
    hard = SyntheticConfig.preset("hard")
    assert easy.contrast[0] > hard.contrast[0] and easy.noise < hard.noise
    assert easy.distractor_density < hard.distractor_density
    dense = SyntheticDataset(4, seed=1, distractor_density=40.0)
    none = SyntheticDataset(4, seed=1, distractor_density=0.0)
    assert sum(len(dense[i].meta["distractors"]) for i in range(4)) > 4 * 10
    assert sum(len(none[i].meta["distractors"]) for i in range(4)) == 0


def test_sizes_and_bad_options():
    s = SyntheticDataset(1, size=(128, 200), seed=0)[0]
    assert s.size == (128, 200) and s.sky.shape == (128, 200)
    with pytest.raises(DatasetError, match="size"):
        SyntheticDataset(1, size=64)
    with pytest.raises(DatasetError, match="difficulty"):
        SyntheticDataset(1, difficulty="brutal")
    with pytest.raises(DatasetError, match="unknown option"):
        SyntheticDataset(1, contrats=(1, 2))


def test_generation_is_fast():
    data = SyntheticDataset(20, size=128, seed=0)
    t = time.perf_counter()
    for i in range(20):
        data[i]
    per_image = (time.perf_counter() - t) / 20
    assert per_image < 0.05, f"{per_image * 1000:.1f} ms per 128 px image"


def test_write_dataset_layout_is_densesirst_and_refuses_overwrite(tmp_path):
    root = tmp_path / "synth"
    summary = write_dataset(root, num_images=5, size=128, seed=4)
    assert summary["splits"] == {"train": 3, "val": 1, "test": 1, "trainval": 4}
    train = (root / "Splits" / "train_v2.txt").read_text().split()
    assert train == ["synth_train_00000", "synth_train_00001", "synth_train_00002"]
    assert (root / "Splits" / "trainval_v2.txt").read_text().split() == \
        train + (root / "Splits" / "val_v2.txt").read_text().split()

    expected = SyntheticDataset(3, size=128, seed=4, split="train")[1]
    ident = expected.id
    np.testing.assert_array_equal(cv2.imread(str(root / "PNGImages" / f"{ident}.png"), cv2.IMREAD_UNCHANGED),
                                  expected.image)
    xml = ET.parse(root / "SIRST" / "BBox" / f"{ident}.xml").getroot()
    assert (xml.findtext("size/width"), xml.findtext("size/height")) == ("128", "128")
    boxes = [[int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")] for o in xml.iter("object")]
    assert all(o.findtext("name") == "Target" for o in xml.iter("object"))
    np.testing.assert_array_equal(np.array(boxes), expected.boxes)
    palette = Image.open(root / "SkySeg" / "PaletteMask" / f"{ident}.png")
    assert palette.mode == "P" and palette.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    np.testing.assert_array_equal(np.array(palette), expected.sky)
    sky_bin = np.array(Image.open(root / "SkySeg" / "BinaryMask" / f"{ident}_pixels0.png"))
    np.testing.assert_array_equal(sky_bin, expected.sky * 255)
    tgt_bin = np.array(Image.open(root / "SIRST" / "BinaryMask" / f"{ident}_pixels0.png"))
    np.testing.assert_array_equal(tgt_bin, expected.target_mask * 255)

    with pytest.raises(DatasetError, match="not empty"):
        write_dataset(root, num_images=2)
    again = write_dataset(root, num_images=5, size=128, seed=4, overwrite=True)
    assert again["targets"] == summary["targets"]


def test_written_set_reads_back_through_the_densesirst_reader(tmp_path):
    from irstdlab.datasets.readers import DenseSIRST

    write_dataset(tmp_path, num_images=5, size=128, seed=2)
    reader = DenseSIRST(tmp_path, split="test_v2")
    got = reader[0]
    want = SyntheticDataset(1, size=128, seed=2, split="test")[0]
    assert got.id == want.id
    np.testing.assert_array_equal(got.image, want.image)
    np.testing.assert_array_equal(got.boxes, want.boxes)
    np.testing.assert_array_equal(got.sky, want.sky)
    np.testing.assert_array_equal(got.target_mask, want.target_mask)


def test_boxes_follow_the_visible_blob(medium):
    """A crude estimator (peak, 30 % level set, background median removed) recovers most boxes at
    IoU >= 0.5: box sizes are readable from the image, so a detector can learn them."""
    ious = []
    for s in medium:
        residual = s.image.astype(np.float32) - cv2.medianBlur(s.image, 9).astype(np.float32)
        for x0, y0, x1, y1 in s.boxes.astype(int):
            wx0, wy0 = max(x0 - 2, 0), max(y0 - 2, 0)
            win = residual[wy0 : y1 + 2, wx0 : x1 + 2]
            py, px = np.unravel_index(np.argmax(win), win.shape)
            _, labels = cv2.connectedComponents((win >= 0.3 * win[py, px]).astype(np.uint8), connectivity=4)
            ys, xs = np.nonzero(labels == labels[py, px])
            p = (wx0 + xs.min(), wy0 + ys.min(), wx0 + xs.max() + 1, wy0 + ys.max() + 1)
            inter = max(0, min(p[2], x1) - max(p[0], x0)) * max(0, min(p[3], y1) - max(p[1], y0))
            ious.append(inter / ((p[2] - p[0]) * (p[3] - p[1]) + (x1 - x0) * (y1 - y0) - inter))
    assert np.mean(np.array(ious) >= 0.5) > 0.75


def _classical_detections(s):
    """Local maxima of (image - 9x9 median) >= 10 grey levels; box = 30 % level set; score = peak."""
    r = s.image.astype(np.float32) - cv2.medianBlur(s.image, 9).astype(np.float32)
    ys, xs = np.nonzero((r == cv2.dilate(r, np.ones((3, 3), np.uint8))) & (r >= 10))
    boxes, scores, in_sky = [], [], []
    for y, x in zip(ys.tolist(), xs.tolist()):
        y0, x0 = max(y - 4, 0), max(x - 4, 0)
        win = r[y0 : y + 5, x0 : x + 5]
        _, labels = cv2.connectedComponents((win >= 0.3 * r[y, x]).astype(np.uint8), connectivity=4)
        yy, xx = np.nonzero(labels == labels[y - y0, x - x0])
        boxes.append([x0 + xx.min(), y0 + yy.min(), x0 + xx.max() + 1, y0 + yy.max() + 1])
        scores.append(r[y, x])
        in_sky.append(s.sky[y, x] == 1)
    return np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32), np.array(in_sky, bool)


def test_medium_is_detectable_and_background_semantics_matter():
    """A classical, untrained detector finds most targets at IoU 0.5, and keeping only its
    detections in sky (oracle background semantics) removes the distractors' false alarms."""
    from irstdlab.harness.metrics import evaluate_detections

    data = SyntheticDataset(24, size=128, seed=0, split="val", difficulty="medium")
    plain, gated, gts = [], [], []
    for i in range(len(data)):
        s = data[i]
        boxes, scores, in_sky = _classical_detections(s)
        plain.append({"boxes": boxes, "scores": scores})
        gated.append({"boxes": boxes[in_sky], "scores": scores[in_sky]})
        gts.append({"boxes": s.boxes})
    no_context = evaluate_detections(plain, gts, legacy_coordinates=False)
    with_sky = evaluate_detections(gated, gts, legacy_coordinates=False)
    assert with_sky["recall"] > 0.8
    assert with_sky["ap"] > 0.6 and with_sky["ap"] - no_context["ap"] > 0.2
