"""Where a small box may go: free-space search on the integer pixel grid.

Shared by the synthetic generator (targets in sky, distractors in non-sky) and BAG-CP.
The static part (allowed region, existing targets dilated by the gap) is one summed-area
table, so testing any candidate box is O(1) and a whole batch of candidates is one numpy
expression; boxes placed so far are checked against a short list.  No loop over pixels.

Boxes are integer ``[x0, y0, x1, y1]`` with exclusive max (pixel-edge geometry).
The gap between two boxes is the Chebyshev count of empty pixels between them: a gap of 1
means they do not touch, not even diagonally.
"""

from __future__ import annotations

import cv2
import numpy as np


class FreeSpace:
    """Free-space bookkeeping for one image.

    ``allowed``: bool HxW, where a box may lie (every pixel of the box must be allowed).
    ``occupied``: bool HxW or None, pixels a new box must keep ``gap`` pixels away from.
    """

    def __init__(self, allowed: np.ndarray, occupied: np.ndarray | None = None, gap: int = 1):
        self.height, self.width = allowed.shape
        self.gap = int(gap)
        self._allowed = np.ascontiguousarray(allowed, dtype=bool)
        blocked = np.logical_not(self._allowed).view(np.uint8)  # uint8 views: no 512^2 copies
        if occupied is not None and occupied.any():
            occ: np.ndarray = np.ascontiguousarray(occupied, dtype=bool).view(np.uint8)
            if self.gap > 0:
                occ = cv2.dilate(occ, np.ones((2 * self.gap + 1,) * 2, np.uint8))
            blocked |= occ
        self._blocked = blocked  # kept current: placed boxes are added, dilated by gap
        self._sat = cv2.integral(blocked)  # (H+1)x(W+1), static part only (placed boxes: list)
        self._allowed_idx: np.ndarray | None = None
        self._placed: list[tuple[int, int, int, int]] = []
        self._placed_array: np.ndarray | None = None

    # ------------------------------------------------------------------ tests
    def _blocked_count(self, x: np.ndarray, y: np.ndarray, w: int, h: int) -> np.ndarray:
        s = self._sat
        return s[y + h, x + w] - s[y, x + w] - s[y + h, x] + s[y, x]

    def box_gaps(self, x: np.ndarray, y: np.ndarray, w: int, h: int, boxes: np.ndarray) -> np.ndarray:
        """Chebyshev gap of each candidate to each of ``boxes``: (K, P) int, negative = overlap."""
        x = x[:, None]
        y = y[:, None]
        gx = np.maximum(boxes[None, :, 0] - (x + w), x - boxes[None, :, 2])
        gy = np.maximum(boxes[None, :, 1] - (y + h), y - boxes[None, :, 3])
        return np.maximum(gx, gy)

    def fits(self, x: np.ndarray, y: np.ndarray, w: int, h: int) -> np.ndarray:
        """Which top-left candidates give a w x h box that is inside, allowed and gap-free."""
        x = np.asarray(x, np.int64)
        y = np.asarray(y, np.int64)
        ok = (x >= 0) & (y >= 0) & (x + w <= self.width) & (y + h <= self.height)
        xc = np.where(ok, x, 0)
        yc = np.where(ok, y, 0)
        ok &= self._blocked_count(xc, yc, w, h) == 0
        if len(self.placed) and ok.any():
            near = self._placed_near(xc[ok].min(), yc[ok].min(), xc[ok].max() + w, yc[ok].max() + h)
            if len(near):
                ok &= (self.box_gaps(xc, yc, w, h, near) >= self.gap).all(axis=1)
        return ok

    def _placed_near(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Placed boxes within ``gap`` of the candidates' bounding range (the rest cannot clash)."""
        p, g = self.placed, self.gap
        keep = (p[:, 0] < x1 + g) & (p[:, 2] > x0 - g) & (p[:, 1] < y1 + g) & (p[:, 3] > y0 - g)
        return p[keep]

    # --------------------------------------------------------------- sampling
    def random_allowed_points(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """n uniform draws over allowed pixels (the reference's "random sky pixel")."""
        # Cheap path: uniform pixels, keep the allowed ones (enough when the sky is not tiny).
        flat = rng.integers(0, self._allowed.size, size=4 * n)
        flat = flat[self._allowed.ravel()[flat]]
        if flat.size >= n:
            return flat[:n] % self.width, flat[:n] // self.width
        if self._allowed_idx is None:
            self._allowed_idx = np.flatnonzero(self._allowed)
        if self._allowed_idx.size == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        flat = self._allowed_idx[rng.integers(0, self._allowed_idx.size, size=n)]
        return flat % self.width, flat // self.width

    def random_fit(
        self, rng: np.random.Generator, w: int, h: int, tries: int = 128
    ) -> tuple[int, int] | None:
        """A uniform valid top-left among ``tries`` candidates anchored on allowed pixels, or None."""
        x, y = self.random_allowed_points(rng, tries)
        x = np.minimum(x, self.width - w)
        y = np.minimum(y, self.height - h)
        ok = np.flatnonzero(self.fits(x, y, w, h))
        if ok.size == 0:
            return None
        i = ok[0]  # candidates are already i.i.d.; the first valid one is a uniform draw among them
        return int(x[i]), int(y[i])

    def find_region(
        self, rng: np.random.Generator, size: int, tries: int = 101
    ) -> tuple[int, int] | None:
        """Top-left of a size x size square that is wholly free (a cluster area), or None.

        Like the reference's ``choose_sky``: the anchor is a random allowed pixel clamped
        so the square stays in the image.
        """
        if size > self.width or size > self.height:
            return None
        return self.random_fit(rng, size, size, tries)

    def area(self, x: int, y: int, size: int, max_spacing: int | None = None) -> ClusterArea:
        """A size x size square (a cluster region) to fill with boxes; see ``ClusterArea``."""
        return ClusterArea(self, x, y, size, max_spacing)

    @property
    def placed(self) -> np.ndarray:
        """Boxes placed so far, (P, 4) int64."""
        if self._placed_array is None:
            self._placed_array = np.array(self._placed, np.int64).reshape(-1, 4)
        return self._placed_array

    def place(self, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
        """Record a box so later boxes keep the gap to it; returns the box."""
        box = (x, y, x + w, y + h)
        self._placed.append(box)
        self._placed_array = None
        g = self.gap
        self._blocked[max(y - g, 0) : y + h + g, max(x - g, 0) : x + w + g] = 1
        return box


class ClusterArea:
    """One cluster region being filled, box after box.

    ``fit`` draws uniformly among ALL valid positions in the region (replacing the
    reference's rejection loop; it never gives up while a spot exists).  With
    ``max_spacing``, every box after the first must also lie within ``max_spacing`` pixels of
    a box already in this area (the paper's "spacing of 1 to 2 pixels").

    A local uint16 map holds both constraints: bit 10 (1024) = blocked (outside the allowed
    region, or within ``gap`` of a target), bit 0 = near a box of this area.  One summed-area
    table then answers "no blocked pixel and at least one near pixel" for every position
    at once: ``0 < sum < 1024`` (boxes are <= 5x5, so a sum of near pixels stays < 1024).
    """

    BLOCKED = 1024

    def __init__(self, space: FreeSpace, x: int, y: int, size: int, max_spacing: int | None):
        self.space = space
        self.x, self.y = max(int(x), 0), max(int(y), 0)
        self.max_spacing = max_spacing
        crop = space._blocked[self.y : self.y + size, self.x : self.x + size]
        self.local = crop.astype(np.uint16) * np.uint16(self.BLOCKED)
        self.count = 0

    def fit(self, rng: np.random.Generator, w: int, h: int) -> tuple[int, int] | None:
        rh, rw = self.local.shape
        if w > rw or h > rh or w * h >= self.BLOCKED:
            return None
        sat = cv2.integral(self.local)
        sums = sat[h:, w:] - sat[:-h, w:] - sat[h:, :-w] + sat[:-h, :-w]
        if self.max_spacing is not None and self.count:
            ok = (sums > 0) & (sums < self.BLOCKED)
        else:
            ok = sums == 0
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return None
        i = int(idx[rng.integers(idx.size)])
        return self.x + i % ok.shape[1], self.y + i // ok.shape[1]

    def place(self, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
        box = self.space.place(x, y, w, h)
        lx, ly = x - self.x, y - self.y
        g = self.space.gap
        self.local[max(ly - g, 0) : max(ly + h + g, 0), max(lx - g, 0) : max(lx + w + g, 0)] |= np.uint16(self.BLOCKED)
        if self.max_spacing is not None:
            m = self.max_spacing
            self.local[max(ly - m, 0) : max(ly + h + m, 0), max(lx - m, 0) : max(lx + w + m, 0)] |= np.uint16(1)
        self.count += 1
        return box
