"""The Gaussian-weighted additive blend of the BAFE-Net paper (Eq. 1-3), shared by the
synthetic generator and BAG-CP.

``T_new = clip(T_back + B_box * lambda * G, 0, 255)`` where ``G`` is an anisotropic,
rotated Gaussian laid on a box-normalised grid (half-width = 1), so sigma and the
centre offset rho scale with the target's box as the paper intends.

Two styles, because the released code (GrokCV/BAFE-Net ``deepir/datasets/transforms/transforms.py``,
``SkyCopyPaste``) differs from the paper:

* ``"paper"``: pixel-centred grid, centre ``+rho``, continuous theta, ``G /= G.max()``
  (the peak pixel always gets weight 1, nothing is forced to 0).
* ``"reference"``: ``linspace(-1, 1, n)`` grid, centre ``-rho``, integer theta in
  [-90, 89], min-max normalisation (one pixel always 0, one always 1).  The released
  code divides 0 by 0 for a constant patch (every 1x1 box) and ``min(255, NaN)`` then
  writes a saturated 255 pixel.  We do not copy that bug: a constant patch gets G = 1
  everywhere, so a 1x1 paste is a plain ``dst + src * lambda`` clipped to 255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STYLES = ("paper", "reference")


@dataclass(frozen=True)
class GaussianParams:
    """Ranges of Eq. 1-3 (paper §III-B); every draw is uniform over its range."""

    lam: tuple[float, float] = (0.5, 1.0)  # brightness factor lambda
    sigma: tuple[float, float] = (0.3, 0.6)  # per-axis spread, box-normalised units
    rho: tuple[float, float] = (0.0, 0.2)  # centre offset, box-normalised units
    theta_deg: tuple[float, float] = (-90.0, 90.0)
    style: str = "paper"

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"gaussian style must be one of {STYLES}, got {self.style!r}")
        for name in ("lam", "sigma", "rho", "theta_deg"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"gaussian {name} range ({lo}, {hi}) has min > max")
        if self.sigma[0] <= 0:
            raise ValueError(f"gaussian sigma must be > 0, got {self.sigma}")


def _axes(sizes: np.ndarray, style: str, longest: int) -> np.ndarray:
    """(N, longest) grid coordinates per box side (values past a box's own size are unused)."""
    j = np.arange(longest)[None, :].astype(np.float64)
    n = sizes[:, None].astype(np.float64)
    if style == "reference":  # np.linspace(-1, 1, n); a 1-px side sits at -1 like linspace
        return np.where(n > 1, -1.0 + 2.0 * j / np.maximum(n - 1, 1), -1.0)
    return (2.0 * j + 1.0) / n - 1.0  # pixel centres; a 1-px side sits at 0


def gaussian_weights_padded(shapes, rng: np.random.Generator, params: GaussianParams) -> np.ndarray:
    """G of Eq. 2-3 for N (h, w) boxes at once: float32 (N, Hmax, Wmax), box i in ``[i, :h, :w]``
    (in [0, 1], max 1, never NaN), 0 outside its box.  One numpy pass, no per-box Python math."""
    hw = np.asarray(shapes, np.int64).reshape(-1, 2)
    n = len(hw)
    sigma = rng.uniform(*params.sigma, size=(n, 2))
    mu = rng.uniform(*params.rho, size=(n, 2))
    if params.style == "reference":
        mu = -mu
        theta = np.deg2rad(rng.integers(int(params.theta_deg[0]), int(params.theta_deg[1]), size=n))
    else:
        theta = np.deg2rad(rng.uniform(*params.theta_deg, size=n))
    hmax, wmax = int(hw[:, 0].max()), int(hw[:, 1].max())
    xx = (_axes(hw[:, 1], params.style, wmax) - mu[:, :1])[:, None, :]  # (N, 1, W)
    yy = (_axes(hw[:, 0], params.style, hmax) - mu[:, 1:])[:, :, None]  # (N, H, 1)
    inside = (np.arange(hmax)[None, :, None] < hw[:, 0, None, None]) & (np.arange(wmax)[None, None, :] < hw[:, 1, None, None])
    c, s = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    xr = c * xx - s * yy
    yr = s * xx + c * yy
    g = np.exp(-(xr**2 / (2 * sigma[:, 0, None, None] ** 2) + yr**2 / (2 * sigma[:, 1, None, None] ** 2)))
    if params.style == "reference":
        g = g - np.where(inside, g, np.inf).min(axis=(1, 2), keepdims=True)
    g = np.where(inside, g, 0.0)
    peak = g.max(axis=(1, 2), keepdims=True)
    flat = peak <= 1e-12  # constant patch (1x1 box): the reference's 0/0; see module docstring
    g = np.where(flat, inside, g / np.where(flat, 1.0, peak))
    return g.astype(np.float32)


def gaussian_weights_batch(shapes, rng: np.random.Generator, params: GaussianParams) -> list[np.ndarray]:
    """Like ``gaussian_weights_padded`` but one h x w array per box."""
    if len(shapes) == 0:
        return []
    g = gaussian_weights_padded(shapes, rng, params)
    return [g[i, :h, :w] for i, (h, w) in enumerate(np.asarray(shapes, np.int64).reshape(-1, 2))]


def gaussian_weights(h: int, w: int, rng: np.random.Generator, params: GaussianParams) -> np.ndarray:
    """One G of Eq. 2-3 for an h x w box: float32 in [0, 1], max 1, never NaN."""
    return gaussian_weights_batch([(h, w)], rng, params)[0]


def blend_add(
    background: np.ndarray, patch: np.ndarray, lam: float, weights: np.ndarray
) -> np.ndarray:
    """Eq. 1 on one box: background + patch * lambda * G, clipped to [0, 255], uint8 (rounded)."""
    out = background.astype(np.float32) + patch.astype(np.float32) * np.float32(lam) * weights
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def paste_boxes(image: np.ndarray, boxes: np.ndarray, patches: list[np.ndarray],
                weights: np.ndarray | None, lams: np.ndarray | None) -> None:
    """Write N patches into ``image`` (uint8, in place) at integer ``boxes`` (N x 4, xyxy).

    With ``weights`` (from ``gaussian_weights_padded``) and ``lams``: Eq. 1, clipped and rounded;
    without: plain replacement.  All boxes in one vectorised gather/scatter (boxes must not overlap).
    """
    n = len(boxes)
    if n == 0:
        return
    boxes = np.asarray(boxes, np.int64)
    hs, ws = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    hmax, wmax = int(hs.max()), int(ws.max())
    stack = np.zeros((n, hmax, wmax), np.float32)
    for i, p in enumerate(patches):  # one slice per box
        stack[i, : p.shape[0], : p.shape[1]] = p
    ii, jj = np.arange(hmax)[None, :, None], np.arange(wmax)[None, None, :]
    inside = (ii < hs[:, None, None]) & (jj < ws[:, None, None])
    ys = np.broadcast_to(boxes[:, 1, None, None] + ii, inside.shape)[inside]
    xs = np.broadcast_to(boxes[:, 0, None, None] + jj, inside.shape)[inside]
    if weights is None:
        values = stack[inside]
    else:
        assert lams is not None, "weights come with lams"
        add = stack * lams.astype(np.float32)[:, None, None] * weights[:, :hmax, :wmax]
        values = image[ys, xs].astype(np.float32) + add[inside]
    image[ys, xs] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
