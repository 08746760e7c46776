"""Speed of the metrics on a DenseSIRST-sized evaluation.

1000 images of 512 x 512, ~13 targets each (2-5 px boxes, like DenseSIRST), 100
detections per image (jittered hits, duplicates and false alarms with random
scores). Times VOC AP in both modes, Pd/Fa, and mNoCoAP from precomputed maps
(building the maps is per image and timed separately), best of ``--repeats``.

    python benchmarks/bench_metrics.py [--images 1000] [--dets 100] [--repeats 5]

Prints a table and writes benchmarks/results/bench_metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from irstdlab.harness.metrics import evaluate_detections
from irstdlab.harness.noco import evaluate_nocoap, noco_map
from irstdlab.harness.pdfa import evaluate_pdfa

SIZE = 512


def make_scene(n_images: int, n_dets: int, mean_targets: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    dets, gts = [], []
    for _ in range(n_images):
        m = rng.poisson(mean_targets)
        wh = rng.integers(2, 6, size=(m, 2)).astype(np.float64)
        xy = rng.uniform(0, SIZE - 6, size=(m, 2)).round()
        gt = np.concatenate([xy, xy + wh], axis=1)
        n_hit = min(m, n_dets) if m else 0
        hit_src = rng.integers(0, max(m, 1), size=2 * n_hit) if m else np.zeros(0, int)
        hits = gt[hit_src] + rng.normal(0, 0.7, size=(len(hit_src), 4)) if m else np.zeros((0, 4))
        n_fa = n_dets - len(hits)
        fa_xy = rng.uniform(0, SIZE - 6, size=(n_fa, 2))
        fa = np.concatenate([fa_xy, fa_xy + rng.integers(2, 6, size=(n_fa, 2))], axis=1)
        boxes = np.concatenate([hits, fa])[:n_dets]
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 0.5)
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(hits)), rng.uniform(0.05, 0.6, n_fa)])[:n_dets]
        dets.append((boxes, scores))
        gts.append(gt)
    return dets, gts


def best_of(fn, repeats: int) -> tuple[float, dict]:
    best, out = float("inf"), {}
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--dets", type=int, default=100)
    ap.add_argument("--targets", type=float, default=13.3, help="mean targets per image (DenseSIRST: 13655/1024)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_metrics.json")
    args = ap.parse_args()

    dets, gts = make_scene(args.images, args.dets, args.targets)
    n_det, n_gt = sum(len(b) for b, _ in dets), sum(len(g) for g in gts)
    t_maps, maps = 0.0, []
    for g in gts:  # flat sky with the targets painted in, so the maps (and mNoCoAP) mean something
        img = np.full((SIZE, SIZE), 80, np.uint8)
        for x0, y0, x1, y1 in g.astype(int):
            img[y0:y1, x0:x1] = 200
        t = time.perf_counter()
        maps.append(noco_map(img, g))
        t_maps += time.perf_counter() - t
    t_maps /= max(len(gts), 1)

    rows = []
    for name, fn in [
        ("VOC AP 11points (legacy)", lambda: evaluate_detections(dets, gts, ap_mode="11points")),
        ("VOC AP area (legacy)", lambda: evaluate_detections(dets, gts, ap_mode="area")),
        ("VOC AP area (exact IoU)", lambda: evaluate_detections(dets, gts, ap_mode="area", legacy_coordinates=False)),
        ("VOC AP area (tie_order=mmdet)", lambda: evaluate_detections(dets, gts, ap_mode="area", tie_order="mmdet")),
        ("Pd/Fa centroid r=3", lambda: evaluate_pdfa(dets, gts, score_thr=0.3, image_sizes=(SIZE, SIZE))),
        ("mNoCoAP (9 thresholds, maps given)", lambda: evaluate_nocoap(dets, gts, noco_maps=maps)),
    ]:
        sec, out = best_of(fn, args.repeats)
        value = out.get("ap", out.get("pd", out.get("mNoCoAP")))
        rows.append({"metric": name, "seconds": sec, "value": float(value)})
    rows.append({"metric": "NoCo map build, per image", "seconds": t_maps, "value": None})

    print(f"{args.images} images x {args.dets} detections ({n_det} dets, {n_gt} targets), best of {args.repeats}")
    print(f"{'metric':<38} {'seconds':>9} {'value':>8}")
    for r in rows:
        value = "" if r["value"] is None else f"{r['value']:.4f}"
        print(f"{r['metric']:<38} {r['seconds']:>9.4f} {value:>8}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "images": args.images, "detections_per_image": args.dets, "num_dets": n_det, "num_targets": n_gt,
        "repeats": args.repeats, "rows": rows,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "numpy": np.__version__},
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
