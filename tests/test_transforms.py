"""Resize protocols, flip, pipeline builder and the detection collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from irstdlab.datasets.sample import Sample
from irstdlab.datasets.transforms import (
    Compose,
    HorizontalFlip,
    Resize,
    TransformConfig,
    build_transforms,
    collate_detection,
)


def _sample(h: int = 200, w: int = 300, seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w), dtype=np.uint8)
    sky = np.zeros((h, w), np.uint8)
    sky[: h // 2] = 1
    mask = np.zeros((h, w), np.uint8)
    mask[10:13, 20:24] = 1
    mask[50:55, w - 3 : w] = 1
    boxes = np.array([[20, 10, 24, 13], [w - 3, 50, w, 55], [0.5, 1.25, 7.75, 9.5]], np.float32)
    return Sample("s", image, boxes, sky, mask)


def test_reference_squashes_and_scales_boxes_anisotropically():
    s = _sample()
    before = s.copy()
    out = Resize("reference", 512)(s)
    sx, sy = 512 / 300, 512 / 200
    assert out.image.shape == (512, 512) and out.image.dtype == np.uint8
    np.testing.assert_allclose(out.boxes, before.boxes * np.array([sx, sy, sx, sy], np.float32), rtol=1e-6)
    assert out.meta["scale"] == (sy, sx) and out.meta["pad"] == (0, 0) and out.meta["input_size"] == (512, 512)
    assert out.orig_size == (200, 300)
    # the input is never mutated
    for name in ("image", "boxes", "sky", "target_mask"):
        np.testing.assert_array_equal(getattr(s, name), getattr(before, name))


def test_reference_clips_boxes_to_the_image():
    s = _sample()
    s.boxes = np.array([[-4, -2, 10, 10], [290, 190, 310, 205]], np.float32)
    out = Resize("reference", 100)(s)
    assert out.boxes.min() >= 0 and out.boxes[:, [0, 2]].max() <= 100 and out.boxes[:, [1, 3]].max() <= 100
    np.testing.assert_allclose(out.boxes[1], [290 / 3, 95, 100, 100], rtol=1e-6)


def test_maps_are_resized_nearest():
    s = _sample()
    s.sky = np.random.default_rng(1).integers(0, 2, s.sky.shape, dtype=np.uint8)
    out = Resize("reference", 512)(s)
    assert set(np.unique(out.sky)) <= {0, 1} and set(np.unique(out.target_mask)) <= {0, 1}
    # nearest: every output pixel copies an input pixel of the sky map (check a few exactly)
    rows = np.floor(np.arange(512) * 200 / 512).astype(int)
    cols = np.floor(np.arange(512) * 300 / 512).astype(int)
    np.testing.assert_array_equal(out.sky, s.sky[rows][:, cols])


def test_clean_keeps_aspect_and_pads_bottom_right():
    s = _sample(200, 300)
    out = Resize("clean", 512)(s)
    scale = 512 / 300
    new_h = round(200 * scale)  # 341
    assert out.image.shape == (512, 512)
    assert out.meta["scale"] == (scale, scale) and out.meta["pad"] == (512 - new_h, 0)
    np.testing.assert_allclose(out.boxes, s.boxes * scale, rtol=1e-6)
    assert (out.image[new_h:] == 0).all()
    assert (out.sky[new_h:] == 255).all() and set(np.unique(out.sky[:new_h])) <= {0, 1}
    assert (out.target_mask[new_h:] == 0).all()
    tall = Resize("clean", 128)(_sample(300, 150))
    assert tall.meta["pad"] == (0, 64) and (tall.sky[:, 64:] == 255).all()


def test_flip_geometry_and_twice_is_identity():
    s = _sample()
    flip = HorizontalFlip(1.0)
    once = flip(s, np.random.default_rng(0))
    assert once.meta["flip"] is True
    np.testing.assert_array_equal(once.image, s.image[:, ::-1])
    np.testing.assert_allclose(once.boxes[:, 0], 300 - s.boxes[:, 2])
    np.testing.assert_allclose(once.boxes[:, 2], 300 - s.boxes[:, 0])
    # the flipped mask's component still matches the flipped box exactly (pixel-edge geometry)
    ys, xs = np.nonzero(once.target_mask[:20])
    assert (xs.min(), xs.max() + 1) == tuple(once.boxes[0, [0, 2]].astype(int))
    twice = flip(once, np.random.default_rng(0))
    assert twice.meta["flip"] is False
    for name in ("image", "boxes", "sky", "target_mask"):
        np.testing.assert_array_equal(getattr(twice, name), getattr(s, name))


def test_flip_of_a_padded_sample_keeps_the_padding_bottom_right():
    s = Resize("clean", 128)(_sample(100, 60))  # 128 x 77 content, 51 px pad on the right
    pad_r = s.meta["pad"][1]
    w = 128 - pad_r
    out = HorizontalFlip(1.0)(s, np.random.default_rng(0))
    np.testing.assert_array_equal(out.image[:, :w], s.image[:, :w][:, ::-1])
    assert (out.image[:, w:] == 0).all() and (out.sky[:, w:] == 255).all()
    np.testing.assert_allclose(out.boxes[:, [0, 2]], w - s.boxes[:, [2, 0]])
    back = HorizontalFlip(1.0)(out, np.random.default_rng(0))
    np.testing.assert_array_equal(back.image, s.image)
    np.testing.assert_allclose(back.boxes, s.boxes, atol=1e-4)  # float32 w - (w - x)


def test_flip_probability_is_seeded():
    s = _sample()
    never = [HorizontalFlip(0.0)(s, np.random.default_rng(i)).meta["flip"] for i in range(20)]
    assert not any(never)
    flags = [HorizontalFlip(0.5)(s, np.random.default_rng(i)).meta["flip"] for i in range(40)]
    assert flags == [HorizontalFlip(0.5)(s, np.random.default_rng(i)).meta["flip"] for i in range(40)]
    assert 5 < sum(flags) < 35
    with pytest.raises(ValueError, match="probability"):
        HorizontalFlip(1.5)


def test_build_transforms_and_collate():
    cfg = TransformConfig(protocol="clean", size=128, flip_prob=1.0)
    train, evaluate = build_transforms(cfg, train=True), build_transforms(cfg, train=False)
    assert isinstance(train, Compose) and len(train.transforms) == 2 and len(evaluate.transforms) == 1
    a = train(_sample(200, 300, seed=1), np.random.default_rng(0))
    b = evaluate(_sample(100, 120, seed=2))
    b.target_mask = None
    images, targets, metas = collate_detection([a, b])
    assert images.shape == (2, 1, 128, 128) and images.dtype == torch.float32
    assert images.max() > 1.0  # raw 0..255: models normalise inside
    torch.testing.assert_close(images[1, 0], torch.from_numpy(b.image).float())
    assert targets[0]["boxes"].dtype == torch.float32 and targets[0]["boxes"].shape == (3, 4)
    assert targets[0]["sky"].dtype == torch.uint8 and targets[0]["sky"].shape == (128, 128)
    assert int(targets[0]["sky"].max()) == 255  # padding travels as ignore
    assert "target_mask" in targets[0] and "target_mask" not in targets[1]
    assert metas[0]["flip"] is True and metas[1]["flip"] is False
    assert metas[0]["orig_size"] == (200, 300) and metas[0]["pad"] == (128 - 85, 0)
    assert set(metas[0]) >= {"id", "orig_size", "scale", "flip", "pad"}


def test_collate_pads_mixed_sizes_to_the_batch_largest_and_refuses_bad_protocol():
    a, b = _sample(100, 100, seed=1), _sample(90, 120, seed=2)
    images, targets, metas = collate_detection([a, b])
    assert images.shape == (2, 1, 100, 120)
    torch.testing.assert_close(images[0, 0, :, :100], torch.from_numpy(a.image).float())
    assert float(images[0, 0, :, 100:].abs().sum()) == 0.0 and float(images[1, 0, 90:].abs().sum()) == 0.0
    assert metas[0]["pad"] == (0, 20) and metas[1]["pad"] == (10, 0)
    assert int(targets[0]["sky"][:, 100:].min()) == 255  # padded sky is ignored by the seg loss
    torch.testing.assert_close(targets[1]["boxes"], torch.from_numpy(b.boxes))  # boxes never move
    with pytest.raises(ValueError, match="protocol"):
        Resize("squash")
    with pytest.raises(ValueError, match="scale"):
        Resize("clean", scale=(1000, 0))


@pytest.mark.parametrize("h, w, expect", [
    (212, 304, (600, 860, 608, 864)),    # a small SIRST v1 image: upscaled by min(1000/304, 600/212)
    (1024, 1280, (600, 750, 608, 768)),  # a large background: the short side bounds it
    (512, 640, (600, 750, 608, 768)),
    (1080, 1918, (563, 1000, 576, 1024)),  # the long side bounds it
])
def test_keep_ratio_scale_matches_mmdet_rescale_and_pads_to_32(h, w, expect):
    new_h, new_w, pad_h, pad_w = expect
    out = Resize("clean", scale=(1000, 600))(_sample(h, w, seed=3))
    factor = min(1000 / max(h, w), 600 / min(h, w))
    assert (int(h * factor + 0.5), int(w * factor + 0.5)) == (new_h, new_w)
    assert out.size == (pad_h, pad_w) and out.meta["input_size"] == (pad_h, pad_w)
    assert out.meta["pad"] == (pad_h - new_h, pad_w - new_w)
    sy, sx = out.meta["scale"]
    assert sy == pytest.approx(new_h / h) and sx == pytest.approx(new_w / w)
    assert float(np.abs(out.image[new_h:]).sum()) == 0.0 and float(np.abs(out.image[:, new_w:]).sum()) == 0.0


def test_reference_resize_on_real_densesirst(densesirst_root):
    from irstdlab.datasets.readers import DenseSIRST

    reader = DenseSIRST(densesirst_root, split="train_v2")
    s = reader.sample("Misc_40") if "Misc_40" in reader.ids else reader[0]
    out = Resize("reference", 512)(s)
    h, w = s.size
    expected = np.clip(s.boxes * np.array([512 / w, 512 / h] * 2, np.float32), 0, 512)
    np.testing.assert_allclose(out.boxes, expected, rtol=1e-6)
    assert out.sky.shape == (512, 512) and set(np.unique(out.sky)) <= {0, 1}
