"""Data-pipeline throughput: load + resize, with and without BAG-CP, at 512x512.

Run from the repo root:  python benchmarks/bench_data.py [--root PATH] [--passes 3]
                         python benchmarks/bench_data.py --cache-compare [--passes 5]

Reads DenseSIRST-mini (``../shared/data/DenseSIRST-mini/SIRSTdevkit`` by default); without
it, falls back to the synthetic set written to a temporary folder (same reader, same
layout) and says so.  Every stage is timed per sample inside one loop (so machine load
hits all stages alike); the table gives samples/s for load+resize+flip alone and with
each BAG-CP recipe, and the overhead ratio.  Goal: BAG-CP adds <= 20 %.
Results go to ``benchmarks/results/bench_data.json``.

``--cache-compare``: a trial's training set (``build_datasets``: resize, flip) read sample by sample
with the node's decoded-data cache (``datasets/cache.py``, built fresh in a temporary folder) and
without it, in alternating passes of one run; then the in-memory synthetic set's rate, which the cache
leaves alone. Prints a table and, as the last stdout line, a JSON object with ``cache_speedup``
(goal >= 3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IRSTDLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_ROOT = SHARED_DATA / "DenseSIRST-mini" / "SIRSTdevkit"


def _rate(dataset, passes_times: list[float]) -> None:
    """Append the seconds of each sample of one pass over ``dataset`` to ``passes_times``."""
    for i in range(len(dataset)):
        t0 = time.perf_counter()
        dataset[i]
        passes_times.append(time.perf_counter() - t0)


def cache_compare(args: argparse.Namespace) -> int:
    """Samples/s of the training set with and without the cache, side by side."""
    import shutil

    from irstdlab.datasets.build import AugmentConfig, DataConfig, build_datasets

    if not (args.root / "PNGImages").is_dir():
        print(f"{args.root} not found (set IRSTDLAB_SHARED_DATA or --root)", file=sys.stderr)
        return 2
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # where the cache goes by default
    cache_dir = Path(tempfile.mkdtemp(prefix="irstdlab-bench-cache-", dir=base))
    try:
        data = DataConfig(dataset="densesirst", root=str(args.root), protocol=args.protocol, size=args.size,
                          selection="reference", cache_dir=str(cache_dir))
        t0 = time.perf_counter()
        cached = build_datasets(data, AugmentConfig(), seed=args.seed)["train"]
        build_s = time.perf_counter() - t0
        plain = build_datasets(DataConfig(**{**data.__dict__, "cache": False}), AugmentConfig(), seed=args.seed)["train"]
        times: dict[str, list[float]] = {"uncached": [], "cached": []}
        for epoch in range(args.passes):  # alternate, so load on the machine hits both alike
            for name, dataset in (("uncached", plain), ("cached", cached)):
                dataset.set_epoch(epoch)
                _rate(dataset, times[name])
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    synth_cfg = DataConfig(size=128, synthetic_images=(64, 1, 1))  # quickstart's geometry
    synth = build_datasets(synth_cfg, AugmentConfig(), seed=args.seed)["train"]
    times["synthetic"] = []
    for epoch in range(args.passes):
        synth.set_epoch(epoch)
        _rate(synth, times["synthetic"])
    med = {k: float(np.median(v)) for k, v in times.items()}
    mean = {k: float(np.mean(v)) for k, v in times.items()}
    speedup = med["uncached"] / med["cached"]
    print(f"data: {args.root}  split=trainval_v2 (train role, selection reference)  images={len(plain)}  "
          f"passes={args.passes}  size={args.size}  protocol={args.protocol}")
    print(f"{'training set (resize, flip)':36s} {'samples/s':>10s} {'(mean)':>8s} {'ms/sample':>10s}")
    labels = {"uncached": "DenseSIRST-mini, decoded each time", "cached": "DenseSIRST-mini, from the cache",
              "synthetic": "in-memory synthetic (128 px)"}
    for key, label in labels.items():
        print(f"{label:36s} {1 / med[key]:10.1f} {1 / mean[key]:8.1f} {1000 * med[key]:10.2f}")
    print(f"cache built once in {build_s:.2f} s ({len(plain)} images); speedup {speedup:.1f}x (medians), "
          f"{mean['uncached'] / mean['cached']:.1f}x (means)")
    result = {"cache_speedup": round(speedup, 2), "cache_speedup_mean": round(mean["uncached"] / mean["cached"], 2),
              "samples_per_s": {k: round(1 / v, 1) for k, v in med.items()}, "cache_build_s": round(build_s, 3),
              "images": len(plain), "passes": args.passes, "size": args.size, "protocol": args.protocol,
              "goal_speedup_min": 3.0}
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--split", default="trainval_v2")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--protocol", default="reference", choices=("reference", "clean"))
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_data.json")
    parser.add_argument("--cache-compare", action="store_true",
                        help="samples/s of a trial's training set with and without the decoded-data cache")
    args = parser.parse_args(argv)
    if args.cache_compare:
        import cv2

        cv2.setNumThreads(1)  # a data-loader worker is one process on one core
        return cache_compare(args)

    import cv2

    cv2.setNumThreads(1)  # a data-loader worker is one process on one core
    from irstdlab.datasets.bagcp import BagCP, BagCPConfig, TargetLibrary
    from irstdlab.datasets.readers import DenseSIRST
    from irstdlab.datasets.transforms import HorizontalFlip, Resize

    source_note = str(args.root)
    tmp = None
    if not (args.root / "PNGImages").is_dir():
        from irstdlab.datasets.synthetic import write_dataset

        tmp = tempfile.TemporaryDirectory()
        print(f"{args.root} not found: benchmarking a synthetic set written in the same layout (107 images, 512 px) instead", file=sys.stderr)
        write_dataset(tmp.name, num_images=107, size=512, seed=args.seed)
        args.root = Path(tmp.name)
        source_note = "synthetic (DenseSIRST-mini absent)"

    reader = DenseSIRST(args.root, split=args.split, protocol=args.protocol, load_masks=False)  # as the trainer
    resize, flip = Resize(args.protocol, args.size), HorizontalFlip(0.5)
    # BAG-CP inputs are prepared once per run, as a trainer would: the library from the
    # training GT, and for the reference recipe the resized training samples it draws from.
    resized = [resize(s) for s in reader]
    library = TargetLibrary.from_samples(list(reader), max_size=5)
    augs = {
        "paper": BagCP(BagCPConfig.table_iii("f", recipe="paper"), library=library),
        "reference": BagCP(BagCPConfig.table_iii("f", recipe="reference"), source=resized),
    }

    times = {"load": [], "resize+flip": [], **{f"bagcp_{k}": [] for k in augs}}
    pasted = {k: [] for k in augs}
    rng = np.random.default_rng(args.seed)
    for _ in range(args.passes):
        for i in range(len(reader)):
            t0 = time.perf_counter()
            sample = reader[i]
            t1 = time.perf_counter()
            sample = flip(resize(sample), rng)
            t2 = time.perf_counter()
            times["load"].append(t1 - t0)
            times["resize+flip"].append(t2 - t1)
            for name, aug in augs.items():
                t3 = time.perf_counter()
                out = aug(sample, rng)
                times[f"bagcp_{name}"].append(time.perf_counter() - t3)
                pasted[name].append(out.meta["bagcp"]["pasted"])

    # Other processes share this machine: report the plain means and, as the robust figure,
    # medians per stage (a spike in one stage does not inflate the ratio).
    med = {k: float(np.median(v)) for k, v in times.items()}
    mean = {k: float(np.mean(v)) for k, v in times.items()}
    base_med = med["load"] + med["resize+flip"]
    base_mean = mean["load"] + mean["resize+flip"]
    rows = [("load+resize+flip", 1 / base_med, 1 / base_mean, 0.0, 0.0)]
    for name in augs:
        k = f"bagcp_{name}"
        rows.append((f"+ BAG-CP ({name})", 1 / (base_med + med[k]), 1 / (base_mean + mean[k]),
                     med[k] / base_med, mean[k] / base_mean))
    print(f"data: {source_note}  split={args.split}  images={len(reader)}  passes={args.passes}  "
          f"size={args.size}  protocol={args.protocol}")
    print(f"{'pipeline':26s} {'samples/s':>10s} {'(mean)':>8s} {'overhead':>9s} {'(mean)':>8s}")
    for label, rate, rate_mean, over, over_mean in rows:
        print(f"{label:26s} {rate:10.1f} {rate_mean:8.1f} {over:9.1%} {over_mean:8.1%}")
    for name in augs:
        print(f"BAG-CP {name}: median {1000 * med[f'bagcp_{name}']:.2f} ms/sample, "
              f"{np.mean(pasted[name]):.1f} targets pasted/sample")
    result = {
        "data": source_note,
        "split": args.split,
        "images": len(reader),
        "passes": args.passes,
        "size": args.size,
        "protocol": args.protocol,
        "ms_per_sample_median": {k: 1000 * v for k, v in med.items()},
        "ms_per_sample_mean": {k: 1000 * v for k, v in mean.items()},
        "samples_per_s_median": {label: rate for label, rate, *_ in rows},
        "bagcp_overhead_median": {name: row[3] for row, name in zip(rows[1:], augs)},
        "bagcp_overhead_mean": {name: row[4] for row, name in zip(rows[1:], augs)},
        "pasted_per_sample": {k: float(np.mean(v)) for k, v in pasted.items()},
        "goal_overhead_max": 0.20,
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
