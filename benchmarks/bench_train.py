"""Ray overhead of a trial, and (on a GPU) the effect of AMP / channels_last.

1. The same epochs of one config run twice: in this process (``--no-ray`` path) and as a Ray Train
   run with one worker. Goal: Ray's share of the wall time <= 5 %. Ray's start-up (``ray.init``) is
   timed separately: it is paid once per session, not per trial.
2. With CUDA: training images/s of ``paper_bafenet_r18`` (synthetic 512 px images standing in for
   DenseSIRST) with AMP off / bf16 and channels_last off / on.

Both paths use one intra-op thread (a Ray Train worker with 1 CPU gets OMP_NUM_THREADS=1).
Writes ``benchmarks/results/bench_train.json`` and prints a table.

    python benchmarks/bench_train.py                       # quickstart, 2 epochs
    python benchmarks/bench_train.py --set schedule.epochs=1 --gpu-iters 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "bench_train.json"


def no_ray(cfg) -> tuple[float, dict]:
    from irstdlab.harness.reporting import LocalReporter
    from irstdlab.harness.trial import run_trial

    with tempfile.TemporaryDirectory() as tmp:
        reporter = LocalReporter(tmp)
        start = time.perf_counter()
        run_trial(cfg, reporter)
        wall = time.perf_counter() - start
        reporter.runlog.close()
    return wall, {"train_s": sum(m["train/time_s"] for m in reporter.history), "history": reporter.history}


def with_ray(cfg) -> tuple[float, float, dict]:
    from irstdlab.harness import ray_runtime

    start = time.perf_counter()
    ray_runtime.init_local_ray(num_cpus=2)
    init_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = ray_runtime.fit(cfg, storage=tmp, name="bench", workers=1)
        wall = time.perf_counter() - start
        history = [json.loads(line) for line in (Path(result.run_dir) / "progress.jsonl").read_text().splitlines()]
    return init_s, wall, {"train_s": sum(m["train/time_s"] for m in history), "history": history}


def gpu_throughput(iters: int) -> list[dict]:
    from irstdlab.harness.config import load_config
    from irstdlab.harness.reporting import LocalReporter
    from irstdlab.harness.trial import run_trial

    rows = []
    for amp in ("off", "bf16"):
        for channels_last in (False, True):
            cfg = load_config("paper_bafenet_r18", [
                "data.dataset=synthetic", "data.root=null", "data.synthetic_size=512", "data.size=512",
                f"data.synthetic_images=[{iters * 2 + 4}, 4, 4]", "data.repeat=1", "data.num_workers=4",
                "schedule.epochs=1", f"train.max_iters_per_epoch={iters}", "eval.test_at_end=false",
                f"train.amp={amp}", f"train.channels_last={str(channels_last).lower()}", "train.device=cuda"])
            with tempfile.TemporaryDirectory() as tmp:
                reporter = LocalReporter(tmp)
                run_trial(cfg, reporter)
            rows.append({"amp": amp, "channels_last": channels_last,
                         "images_per_s": reporter.history[-1]["images_per_s"]})
            print(f"  bafenet r18 512px amp={amp:4s} channels_last={channels_last!s:5s} "
                  f"{rows[-1]['images_per_s']:.1f} img/s")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default="quickstart")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--gpu-iters", type=int, default=50)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()

    from irstdlab.harness.config import load_config

    torch.set_num_threads(1)
    cfg = load_config(args.config, args.overrides)
    report = {"config": args.config, "overrides": args.overrides, "config_hash": cfg.config_hash,
              "machine": {"cpus": os.cpu_count(), "load_avg_start": os.getloadavg(), "python": platform.python_version(),
                          "torch": torch.__version__,
                          "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}}
    local_wall, local = no_ray(cfg)
    init_s, ray_wall, ray_run = with_ray(cfg)
    report["no_ray"] = {"wall_s": local_wall, "train_s": local["train_s"]}
    report["ray_train_1_worker"] = {"ray_init_s": init_s, "wall_s": ray_wall, "train_s": ray_run["train_s"]}
    report["ray_overhead_fraction"] = (ray_wall - local_wall) / ray_wall
    report["same_metrics"] = [m.get("val/mAP07") for m in local["history"]] == [m.get("val/mAP07") for m in ray_run["history"]]
    report["machine"]["load_avg_end"] = os.getloadavg()
    print(f"{'path':24s} {'wall s':>8s} {'train s':>8s}")
    print(f"{'no Ray':24s} {local_wall:8.1f} {local['train_s']:8.1f}")
    print(f"{'Ray Train, 1 worker':24s} {ray_wall:8.1f} {ray_run['train_s']:8.1f}   (+ ray.init {init_s:.1f} s once)")
    print(f"Ray overhead: {100 * report['ray_overhead_fraction']:.1f} % of the Ray run's wall time (goal <= 5 %); "
          f"same val mAP07 per epoch: {report['same_metrics']}; load avg {report['machine']['load_avg_start']}")
    if torch.cuda.is_available():
        print("GPU throughput:")
        report["gpu"] = gpu_throughput(args.gpu_iters)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
