"""BAG-CP: every Table III row, both recipes, and the invariants as properties over seeds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from irstdlab.datasets.bagcp import TABLE_III_ROWS, BagCP, BagCPConfig, TargetLibrary
from irstdlab.datasets.sample import Sample
from irstdlab.datasets.synthetic import SyntheticDataset
from irstdlab.datasets.transforms import Resize

SEEDS = st.integers(0, 2**32 - 1)
FEW = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    data = SyntheticDataset(6, size=192, seed=11, split="train")
    return [Resize("reference", 256)(data[i]) for i in range(len(data))]


@pytest.fixture(scope="module")
def library(samples) -> TargetLibrary:
    return TargetLibrary.from_samples(samples, max_size=5)


def _chebyshev_gaps(boxes: np.ndarray) -> np.ndarray:
    b, c = boxes[:, None, :], boxes[None, :, :]
    gx = np.maximum(c[..., 0] - b[..., 2], b[..., 0] - c[..., 2])
    gy = np.maximum(c[..., 1] - b[..., 3], b[..., 1] - c[..., 3])
    return np.maximum(gx, gy)[~np.eye(len(boxes), dtype=bool)]


def _check_invariants(before: Sample, after: Sample, cfg: BagCPConfig) -> np.ndarray:
    """Return the pasted boxes after checking everything BAG-CP promises."""
    n0 = before.num_targets
    np.testing.assert_array_equal(after.boxes[:n0], before.boxes)  # existing boxes untouched
    pasted = after.boxes[n0:]
    assert len(pasted) == after.meta["bagcp"]["pasted"]
    np.testing.assert_array_equal(pasted, np.round(pasted))  # exact integer boxes
    assert (pasted[:, 2] > pasted[:, 0]).all() and (pasted[:, 3] > pasted[:, 1]).all()
    assert pasted.min(initial=0) >= 0 and (pasted[:, [0, 2]] <= after.size[1]).all()
    np.testing.assert_array_equal(after.sky, before.sky)  # the sky map is never changed
    if len(pasted):  # pasted vs pasted and vs existing boxes (rounded outward); existing pairs may touch
        outward = np.concatenate([np.floor(before.boxes[:, :2]), np.ceil(before.boxes[:, 2:])], 1)
        boxes = np.concatenate([pasted, outward]).astype(np.int64)
        gaps = _chebyshev_gaps(boxes).reshape(len(boxes), len(boxes) - 1)[: len(pasted)]
        assert gaps.min(initial=cfg.min_gap) >= cfg.min_gap
    changed = after.image != before.image
    inside = np.zeros(after.size, bool)
    for x0, y0, x1, y1 in pasted.astype(int):
        inside[y0:y1, x0:x1] = True
        if cfg.background_aware:
            assert (after.sky[y0:y1, x0:x1] == 1).all()
        if after.target_mask is not None:
            assert after.target_mask[y0:y1, x0:x1].all()
    assert not changed[~inside].any()  # pixels change only inside pasted boxes
    if after.target_mask is not None:
        np.testing.assert_array_equal(after.target_mask[~inside], before.target_mask[~inside])
    return pasted


@pytest.mark.parametrize("recipe", ["paper", "reference"])
@pytest.mark.parametrize("row", sorted(TABLE_III_ROWS))
def test_every_table_iii_row_builds_and_keeps_invariants(samples, library, recipe, row):
    cfg = BagCPConfig.table_iii(row, recipe=recipe)
    assert {t for t in TABLE_III_ROWS[row]} == {t for t in ("copy_paste", "cluster", "gaussian", "background_aware")
                                               if getattr(cfg, t)}
    aug = BagCP(cfg, library=library, source=samples)
    rng = np.random.default_rng(5)
    total = 0
    for s in samples:
        out = aug(s, rng)
        pasted = _check_invariants(s, out, cfg)
        total += len(pasted)
    if row == "a":
        assert total == 0
    else:
        assert total > 0


@FEW
@given(seed=SEEDS)
def test_paper_clusters_paste_8_to_12_per_region_in_sky(samples, library, seed):
    cfg = BagCPConfig.table_iii("f", max_target_size=3)  # small targets: every region has room
    sky_image = samples[0].copy(sky=np.ones(samples[0].size, np.uint8))
    out = BagCP(cfg, library=library)(sky_image, np.random.default_rng(seed))
    info = out.meta["bagcp"]
    assert 1 <= info["regions"] <= 3 and info["fallbacks"] == 0
    assert 8 * info["regions"] <= info["pasted"] == info["requested"] <= 12 * info["regions"]
    pasted = _check_invariants(sky_image, out, cfg)
    assert (pasted[:, 2:] - pasted[:, :2]).max() <= 3
    # clustered: every pasted box is at most 2 px from another pasted box (the 1-2 px spacing)
    gaps = _chebyshev_gaps(pasted.astype(np.int64)).reshape(len(pasted), len(pasted) - 1)
    assert (gaps.min(axis=1) <= 2).all()


@FEW
@given(seed=SEEDS)
def test_background_aware_never_pastes_in_ground(samples, library, seed):
    rng = np.random.default_rng(seed)
    s = samples[int(rng.integers(len(samples)))]
    for recipe in ("paper", "reference"):
        cfg = BagCPConfig.table_iii("f", recipe=recipe)
        out = BagCP(cfg, library=library, source=samples)(s, rng)
        _check_invariants(s, out, cfg)  # includes: every pasted pixel has sky == 1


def test_without_background_awareness_targets_reach_the_ground(samples, library):
    cfg = BagCPConfig.table_iii("b")  # plain copy-paste: uniform random places
    rng = np.random.default_rng(0)
    in_ground = 0
    for s in samples * 3:
        out = BagCP(cfg, library=library)(s, rng)
        for x0, y0, x1, y1 in _check_invariants(s, out, cfg).astype(int):
            in_ground += int((out.sky[y0:y1, x0:x1] == 0).any())
    assert in_ground > 10


def test_no_copy_paste_returns_an_equal_copy(samples, library):
    s = samples[0]
    out = BagCP(BagCPConfig.table_iii("a"), library=library)(s, np.random.default_rng(0))
    assert out is not s and out.image is not s.image
    np.testing.assert_array_equal(out.image, s.image)
    np.testing.assert_array_equal(out.boxes, s.boxes)
    assert out.meta["bagcp"]["pasted"] == 0


def test_reproducible_with_a_seed_and_input_untouched(samples, library):
    s = samples[1]
    before = s.copy()
    for recipe in ("paper", "reference"):
        aug = BagCP(BagCPConfig(recipe=recipe), library=library, source=samples)
        a = aug(s, np.random.default_rng(42))
        b = aug(s, np.random.default_rng(42))
        c = aug(s, np.random.default_rng(43))
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        assert not np.array_equal(a.boxes, c.boxes)
    np.testing.assert_array_equal(s.image, before.image)
    np.testing.assert_array_equal(s.boxes, before.boxes)
    np.testing.assert_array_equal(s.target_mask, before.target_mask)


def _dark_scene(size: int = 64) -> Sample:
    image = np.full((size, size), 50, np.uint8)
    return Sample("dark", image, np.zeros((0, 4), np.float32), np.ones((size, size), np.uint8),
                  np.zeros((size, size), np.uint8))


@pytest.mark.parametrize("recipe", ["paper", "reference"])
def test_one_pixel_targets_give_no_nan_and_no_forced_255(recipe):
    """The released code's min-max G is 0/0 for 1x1 boxes and writes 255; ours adds src * lambda."""
    dark = _dark_scene()
    src_image = np.full((64, 64), 60, np.uint8)
    ones = np.array([[x, 5, x + 1, 6] for x in range(2, 60, 3)], np.float32)
    source = [Sample("src", src_image, ones)]
    library = TargetLibrary([np.full((1, 1), 60, np.uint8)] * 4)
    cfg = BagCPConfig.table_iii("f", recipe=recipe)
    rng = np.random.default_rng(0)
    pasted_any = 0
    for _ in range(10):
        out = BagCP(cfg, library=library, source=source)(dark, rng)
        pasted = _check_invariants(dark, out, cfg)
        pasted_any += len(pasted)
        assert (pasted[:, 2:] - pasted[:, :2] == 1).all()
        values = out.image[out.target_mask > 0]
        assert values.max(initial=0) < 255
        assert (values >= 50 + 30).all() and (values <= 50 + 60).all()  # dst + 60 * lambda, lambda in [.5, 1]
    assert pasted_any > 10


def test_without_gaussian_pixels_are_replaced_by_the_patch():
    dark = _dark_scene()
    patch = np.arange(9, dtype=np.uint8).reshape(3, 3) + 200
    out = BagCP(BagCPConfig.table_iii("c"), library=TargetLibrary([patch]))(dark, np.random.default_rng(1))
    assert out.meta["bagcp"]["pasted"] >= 8
    for x0, y0, x1, y1 in out.boxes.astype(int):
        np.testing.assert_array_equal(out.image[y0:y1, x0:x1], patch)


def test_reference_recipe_counts_and_big_targets():
    dark = _dark_scene(128)
    src_image = np.full((128, 128), 90, np.uint8)
    src_boxes = np.array([[10, 10, 14, 13], [30, 30, 45, 42], [60, 60, 62, 62]], np.float32)  # 4x3, 15x12, 2x2
    cfg = BagCPConfig.table_iii("e", recipe="reference")
    aug = BagCP(cfg, source=lambda rng: Sample("src", src_image, src_boxes))
    counts, sizes = [], set()
    rng = np.random.default_rng(3)
    for _ in range(40):
        out = aug(dark, rng)
        pasted = _check_invariants(dark, out, cfg)
        counts.append(len(pasted))
        sizes |= {(int(w), int(h)) for w, h in pasted[:, 2:] - pasted[:, :2]}
    assert set(counts) == {0, 1, 2, 3}  # uniform over {0..n_src}
    assert sizes == {(4, 3), (7, 7), (2, 2)}  # >= 10 px becomes 7x7


def test_no_sky_map_allows_whole_image_but_never_the_padding(library):
    s = Resize("clean", 128)(Sample("wide", np.full((60, 200), 80, np.uint8), np.zeros((0, 4))))
    assert s.meta["pad"][0] > 0
    rng = np.random.default_rng(0)
    for _ in range(10):
        out = BagCP(BagCPConfig.table_iii("f"), library=library)(s, rng)
        assert out.meta["bagcp"]["pasted"] > 0
        assert (out.boxes[:, 3] <= 128 - s.meta["pad"][0]).all()


def test_works_on_real_densesirst(densesirst_root):
    from irstdlab.datasets.readers import DenseSIRST

    from irstdlab.datasets.bagcp import make_source
    from irstdlab.datasets.transforms import HorizontalFlip

    reader = DenseSIRST(densesirst_root, split="train_v2")
    resize = Resize("reference", 512)
    real = [resize(reader[i]) for i in range(4)]
    sources = {"list": real, "pipeline": make_source(reader, lambda s, rng: HorizontalFlip(0.5)(resize(s), rng))}
    library = TargetLibrary.from_samples([reader[i] for i in range(4)], max_size=5)
    assert len(library) > 20 and max(max(p.shape) for p in library.patches) <= 5
    rng = np.random.default_rng(0)
    for recipe, source in (("paper", None), ("reference", sources["list"]), ("reference", sources["pipeline"])):
        cfg = BagCPConfig.table_iii("f", recipe=recipe)
        aug = BagCP(cfg, library=library, source=source)
        for s in real:
            _check_invariants(s, aug(s, rng), cfg)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="recipe"):
        BagCPConfig(recipe="magic")
    with pytest.raises(ValueError, match="row"):
        BagCPConfig.table_iii("g")
    with pytest.raises(ValueError, match="TargetLibrary"):
        BagCP(BagCPConfig())
    with pytest.raises(ValueError, match="source"):
        BagCP(BagCPConfig(recipe="reference"))


@pytest.mark.parametrize("style", ["paper", "reference"])
def test_gaussian_weights_follow_eq_2_3_per_box(style):
    """The batched G equals a direct per-box evaluation of Eq. 2-3 with the same draws."""
    from irstdlab.datasets.gaussian_blend import GaussianParams, gaussian_weights_padded

    params = GaussianParams(style=style)
    shapes = [(3, 4), (5, 5), (2, 3), (1, 1)]
    got = gaussian_weights_padded(shapes, np.random.default_rng(9), params)
    rng = np.random.default_rng(9)
    sigma, mu = rng.uniform(0.3, 0.6, (4, 2)), rng.uniform(0.0, 0.2, (4, 2))
    if style == "reference":
        mu, theta = -mu, np.deg2rad(rng.integers(-90, 90, 4))
    else:
        theta = np.deg2rad(rng.uniform(-90, 90, 4))
    for i, (h, w) in enumerate(shapes):
        if style == "reference":
            xs, ys = np.linspace(-1, 1, w), np.linspace(-1, 1, h)
        else:
            xs, ys = (2 * np.arange(w) + 1) / w - 1, (2 * np.arange(h) + 1) / h - 1
        X, Y = np.meshgrid(xs - mu[i, 0], ys - mu[i, 1])
        xr = np.cos(theta[i]) * X - np.sin(theta[i]) * Y
        yr = np.sin(theta[i]) * X + np.cos(theta[i]) * Y
        g = np.exp(-(xr**2 / (2 * sigma[i, 0] ** 2) + yr**2 / (2 * sigma[i, 1] ** 2)))
        if style == "reference":
            g = g - g.min()
        g = g / g.max() if g.max() > 0 else np.ones_like(g)  # 1x1 reference: 0/0 in the released code
        np.testing.assert_allclose(got[i, :h, :w], g, rtol=1e-5, atol=1e-6)
        assert got[i, h:].sum() == 0 and got[i, :, w:].sum() == 0
