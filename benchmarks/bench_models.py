"""Train-step time of BAFE-Net against its FCOS host, side by side, and their MAC ratio.

Both detectors are built from a preset's model section (BAFE-Net as the preset has it, FCOS = the
same section with ``name: fcos``, which ignores the BAFE-only fields), trained with one SGD step
per iteration on synthetic images with ~13 tiny boxes and a sky map each (FCOS ignores the map).
Geometries:

* ``paper``: ``paper_bafenet_r18`` (ResNet-18, P3-P5, 256-wide head, LSK module on), 512 x 512,
  batch 2; random weights (the ImageNet file changes no timing).
* ``quickstart``: the ``quickstart`` preset's light detector (64-wide, one P2 level, no LSK module),
  128 x 128, batch 4.

The CPU may be shared, so the two models alternate: each round times ``--steps`` steps of one,
then of the other (the order flips every round), and the step ratio is the median over rounds
of BAFE-Net / FCOS within the round; each model's ms/step is its median over rounds. MACs are
one forward pass at batch 1 (``harness/complexity.py``, torch.utils.flop_counter).

    python benchmarks/bench_models.py [--geometry paper,quickstart] [--device auto|cpu|cuda]
                                      [--steps 2] [--rounds 5] [--threads 1] [--clock auto|cpu|wall] [--infer]

Prints a table per geometry, writes benchmarks/results/bench_models.json, and prints as its last
stdout line a JSON object whose ``step_ratio`` and ``mac_ratio`` are those of the first geometry
(each geometry's own are under ``geometries``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

from irstdlab.harness.complexity import profile
from irstdlab.harness.config import load_config
from irstdlab.models import build, list_models

RESULTS = Path(__file__).resolve().parent / "results" / "bench_models.json"
MODELS = ("bafenet", "fcos")


@dataclass(frozen=True)
class Geometry:
    preset: str
    size: int
    batch: int
    model: dict[str, Any]  # fields over the preset's model section


GEOMETRIES = {
    "paper": Geometry("paper_bafenet_r18", 512, 2, {"pretrained": None}),
    "quickstart": Geometry("quickstart", 128, 4, {}),
}


def model_config(geometry: Geometry, name: str) -> dict[str, Any]:
    fields = dict(load_config(geometry.preset).model.__dict__)
    fields.update(geometry.model, name=name)
    return fields


def make_batch(batch: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, list[dict]]:
    g = torch.Generator().manual_seed(seed)
    images = (30 + 20 * torch.rand(batch, 1, size, size, generator=g)).round()
    targets = []
    for b in range(batch):
        n = 13
        xy = torch.randint(0, size - 8, (n, 2), generator=g).float()
        wh = torch.randint(2, 6, (n, 2), generator=g).float()
        boxes = torch.cat([xy, xy + wh], dim=1)
        for x1, y1, x2, y2 in boxes.long().tolist():
            images[b, 0, y1:y2, x1:x2] = 200
        sky = torch.zeros(size, size, dtype=torch.uint8)
        sky[: size * 2 // 3] = 1
        targets.append({"boxes": boxes.to(device), "sky": sky.to(device)})
    return images.to(device), targets


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_block(fn: Callable[[], None], steps: int, repeats: int, device: torch.device) -> float:
    """Best wall seconds per step over ``repeats`` blocks of ``steps`` calls (after one warm-up)."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        best = min(best, _seconds_per_step(fn, steps, device)[0])
    return best


def _seconds_per_step(fn: Callable[[], None], steps: int, device: torch.device) -> tuple[float, float]:
    """(wall, process CPU) seconds per step."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def _train_step(model: torch.nn.Module, images: torch.Tensor, targets: list[dict]) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step() -> None:
        model.train()
        loss = sum(model(images, targets).values())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    return step


def _infer_step(model: torch.nn.Module, images: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        model.eval()
        with torch.no_grad():
            model(images)

    return step


def interleaved(fns: dict[str, Callable[[], None]], steps: int, rounds: int, device: torch.device,
                clock: str) -> dict[str, list[float]]:
    """Seconds per step of each function on ``clock`` (wall or cpu), round by round, alternating
    the order every round."""
    names = list(fns)
    for name in names:  # warm-up: allocator, oneDNN primitive caches
        fns[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            wall, cpu = _seconds_per_step(fns[name], steps, device)
            times[name].append(cpu if clock == "cpu" else wall)
    return times


def bench_geometry(key: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    geometry = GEOMETRIES[key]
    models, rows = {}, {}
    for name in MODELS:
        torch.manual_seed(0)
        models[name] = build(model_config(geometry, name)).to(device)
        report = profile(models[name], (geometry.size, geometry.size))
        rows[name] = {"config": model_config(geometry, name), "params": report.params, "macs": report.macs,
                      "gmacs": round(report.gmacs, 3)}
    images, targets = make_batch(geometry.batch, geometry.size, device)
    train = interleaved({n: _train_step(m, images, targets) for n, m in models.items()}, args.steps, args.rounds, device,
                        args.clock)
    for name in MODELS:
        rows[name]["train_step_ms"] = 1e3 * statistics.median(train[name])
        rows[name]["train_step_ms_rounds"] = [round(1e3 * s, 1) for s in train[name]]
    step_ratios = [b / f for b, f in zip(train["bafenet"], train["fcos"])]
    result: dict[str, Any] = {
        "geometry": key, "clock": args.clock, "preset": geometry.preset, "size": geometry.size, "batch": geometry.batch,
        "step_ratio": round(statistics.median(step_ratios), 4),
        "step_ratio_rounds": [round(r, 3) for r in step_ratios],
        "mac_ratio": round(rows["bafenet"]["macs"] / rows["fcos"]["macs"], 4),
        "rows": rows,
    }
    if args.infer:
        infer = interleaved({n: _infer_step(m, images) for n, m in models.items()}, args.steps, args.rounds, device,
                            args.clock)
        for name in MODELS:
            rows[name]["infer_step_ms"] = 1e3 * statistics.median(infer[name])
        result["infer_ratio"] = round(statistics.median(b / f for b, f in zip(infer["bafenet"], infer["fcos"])), 4)
    return result


def print_table(result: dict[str, Any], device: torch.device) -> None:
    print(f"{result['geometry']}: {result['preset']}, {result['size']}x{result['size']}, batch {result['batch']}, {device}, "
          f"{result['clock']} clock")
    print(f"{'model':<10}{'params':>14}{'GMACs':>9}{'train ms/step':>15}{'infer ms/step':>15}  rounds (train ms)")
    for name, r in result["rows"].items():
        infer = f"{r['infer_step_ms']:>15.1f}" if "infer_step_ms" in r else f"{'-':>15}"
        print(f"{name:<10}{r['params']:>14,}{r['gmacs']:>9.2f}{r['train_step_ms']:>15.1f}{infer}  {r['train_step_ms_rounds']}")
    print(f"step ratio bafenet/fcos {result['step_ratio']:.3f} (rounds {result['step_ratio_rounds']}), "
          f"MAC ratio {result['mac_ratio']:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--geometry", default="paper", help=f"comma-separated, from {', '.join(GEOMETRIES)}")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=2, help="steps per model per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto",
                        help="auto: process CPU time on a CPU device (what the step costs, not how long it waited "
                             "for a shared core; use with --threads 1), wall time on CUDA")
    parser.add_argument("--infer", action="store_true", help="also time eval inference")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.geometry.split(",") if k.strip()]
    unknown = [k for k in keys if k not in GEOMETRIES]
    if not keys or unknown:
        parser.error(f"--geometry: unknown {unknown or keys}; choose from {', '.join(GEOMETRIES)}")
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be >= 1")
    missing = [m for m in MODELS if m not in set(list_models())]
    if missing:
        parser.error(f"models not registered in this checkout: {missing}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.clock == "auto":
        args.clock = "cpu" if device.type == "cpu" else "wall"

    results = []
    for key in keys:
        results.append(bench_geometry(key, args, device))
        print_table(results[-1], device)
    summary = {
        "benchmark": "bench_models",
        "step_ratio": results[0]["step_ratio"],
        "mac_ratio": results[0]["mac_ratio"],
        "geometries": {r["geometry"]: {k: r[k] for k in ("step_ratio", "mac_ratio")} | {
            f"{n}_train_step_ms": round(r["rows"][n]["train_step_ms"], 1) for n in MODELS} for r in results},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "clock": args.clock,
        "steps": args.steps,
        "rounds": args.rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary | {"results": results, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
