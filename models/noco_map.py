"""The normalised-contrast (NoCo) map of an image and its GT boxes (ODI ``NoCoTargets``).

One definition for two users: the mNoCoAP metric (``irstdlab.harness.noco``, which checks
its inputs and documents the rules) and OSCAR's NoCo regression target
(``irstdlab.models.oscar_targets``). It lives in ``models`` because models must not import
the harness. Plain numpy.
"""

from __future__ import annotations

import numpy as np


def build_noco_map(img: np.ndarray, boxes: np.ndarray, mu: float = 0.0, sigma: float = 1.0) -> np.ndarray:
    """The GT NoCo map (float64 H x W, values in [0, 1)) of a grey image and pixel-edge xyxy boxes."""
    img = np.asarray(img)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    h_img, w_img = img.shape
    out = np.zeros((h_img, w_img), np.float64)
    for x0, y0, x1, y1 in boxes:
        c0, r0, c1, r1 = int(x0), int(y0), int(x1), int(y1)  # int() truncates, like ODI
        h, w = r1 - r0, c1 - c0
        cell = img[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)]
        if h <= 0 or w <= 0 or cell.size == 0:
            continue
        gx, gy = np.meshgrid(np.linspace(-1.5, 1.5, 3 * w), np.linspace(-1.5, 1.5, 3 * h))
        weight = np.exp(-((np.sqrt(gx * gx + gy * gy) - mu) ** 2) / (2.0 * sigma**2))
        wr0, wr1 = max(0, r0 - h), min(r1 + h, h_img)  # window clipped to the image
        wc0, wc1 = max(0, c0 - w), min(c1 + w, w_img)
        if wr1 <= wr0 or wc1 <= wc0:
            continue
        weight = weight[wr0 - (r0 - h): 3 * h - ((r1 + h) - wr1), wc0 - (c0 - w): 3 * w - ((c1 + w) - wc1)]
        window = img[wr0:wr1, wc0:wc1].astype(np.float64)
        lo = window.min()
        noco = weight * ((window - lo) / (float(cell.max()) - lo + 0.01))
        out[wr0:wr1, wc0:wc1] = (noco - noco.min()) / (noco.max() - noco.min() + 0.001)
    return out


__all__ = ["build_noco_map"]
