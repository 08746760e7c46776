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
                                      [--components] [--profile N]

``--components`` also times BAFE-Net without its LSK module, without the exchange, and without
both (same rounds, same batch), so the step time beyond the MACs can be put on a part of the head.
``--profile N`` runs one train step of each model under ``torch.profiler`` and prints its N most
expensive operators (self time, grouped by input shape).

Where BAFE-Net's step goes beyond its MACs (paper geometry, CPU, 1 thread, 2026-12-02,
``--components --profile 12``): step ratio 1.758 for a MAC ratio of 1.568. Without the LSK module it
is 1.580 for 1.535, and without LSK module and exchange 1.567 for 1.497: the segmentation tower,
the conv-BN blocks and the exchange cost about what their MACs predict (within 3-5%), and the LSK
module (P3-P5) holds the rest, ~0.5 s of the ~4.9 s step for 2% of the MACs. Inside it (profiled on
its own at P3): oneDNN's depth-wise weight gradients (the 5x5 and the dilated 7x7, 40-55 ms each,
~20x their forward; a grouped-convolution or per-tap formulation of the same gradient measured 2x
and 10x slower), the NCHW <-> channels-last copies around it, and the phase copies of the dilated
conv. Rounds vary by +-10% on this shared VM, so compare ratios, not milliseconds. Freshly
allocated large tensors also page-fault here: ``THP_MEM_ALLOC_ENABLE=1`` (PyTorch's huge pages for
CPU tensors >= 2 MB) cut BAFE-Net's step 12% and FCOS's 7% (ratio 1.76 -> 1.66), and did nothing
for the 128 px quickstart training, so irstdlab does not set it.

Why oneDNN's depth-wise weight gradient is slow (2026-12-03, ``ONEDNN_VERBOSE=1``, oneDNN v3.12 in
torch 2.14, AVX-512 CPU): the forward and the input gradient run oneDNN's depth-wise kernels
(``brdgmm_dw``, ``jit_dw``), but the weight gradient of a channels-last depth-wise convolution runs
its generic grouped-convolution kernel (``jit:avx512_core``, weights ``aBCde16c16b``): each
channel's 1-in/1-out group is computed as a 16 x 16 block, 16x the work (60-80 ms at P3 where the
forward takes 5-10). NCHW takes its GEMM path (``x64:gemm:jit``, 136 ms); ATen's own im2col kernel
(oneDNN switched off) takes 39 ms for the 5x5 but 292 for the dilated 7x7 on the full map. A custom
backward (input gradient as the forward with the kernel turned by 180 degrees, weight gradient
alone from oneDNN over the phase grids) cut the isolated LSK module (P3-P5, fwd + bwd, ~650 ms)
by at most 5%, inside this VM's run-to-run spread, and was not kept. On that day's VM the step
ratio was 1.595 (rounds 1.570, 1.605, 1.595, 1.548, 1.707) for a MAC ratio of 1.568: BAFE-Net
8.8 s, FCOS 5.5 s a step, the whole excess ~130 ms while the LSK module alone runs 400-500 ms over
its MAC share (~180 ms). Closing it takes a dedicated depth-wise weight-gradient kernel.
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


# BAFE-Net with parts of its head switched off (--components): which part's time exceeds its MACs
COMPONENTS = {
    "bafenet-no-lsk": {"name": "bafenet", "lsk_module": False},
    "bafenet-no-exchange": {"name": "bafenet", "exchange": "none"},
    "bafenet-neither": {"name": "bafenet", "lsk_module": False, "exchange": "none"},
}


def bench_geometry(key: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    geometry = GEOMETRIES[key]
    configs = {name: model_config(geometry, name) for name in MODELS}
    if args.components:
        configs |= {label: model_config(geometry, "bafenet") | fields for label, fields in COMPONENTS.items()}
    models, rows = {}, {}
    for label, config in configs.items():
        torch.manual_seed(0)
        models[label] = build(config).to(device)
        report = profile(models[label], (geometry.size, geometry.size))
        rows[label] = {"config": config, "params": report.params, "macs": report.macs, "gmacs": round(report.gmacs, 3)}
    images, targets = make_batch(geometry.batch, geometry.size, device)
    train = interleaved({n: _train_step(m, images, targets) for n, m in models.items()}, args.steps, args.rounds, device,
                        args.clock)
    for label in configs:
        rows[label]["train_step_ms"] = 1e3 * statistics.median(train[label])
        rows[label]["train_step_ms_rounds"] = [round(1e3 * s, 1) for s in train[label]]
        rows[label]["step_ratio"] = round(statistics.median(t / f for t, f in zip(train[label], train["fcos"])), 4)
        rows[label]["mac_ratio"] = round(rows[label]["macs"] / rows["fcos"]["macs"], 4)
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
    if args.profile:
        result["profile"] = {name: top_operators(models[name], images, targets, args.profile) for name in MODELS}
    return result


def top_operators(model: torch.nn.Module, images: torch.Tensor, targets: list[dict], n: int) -> list[dict[str, Any]]:
    """The ``n`` operators with the most self time in one train step (after a warm-up step),
    grouped by input shape: [{"op", "shapes", "calls", "self_ms"}]."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    step = _train_step(model, images, targets)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if images.is_cuda else [])
    with torch_profile(activities=activities, record_shapes=True) as prof:
        step()
    _sync(images.device)
    events = prof.key_averages(group_by_input_shape=True)
    key = "self_device_time_total" if images.is_cuda else "self_cpu_time_total"
    ranked = sorted(events, key=lambda e: -getattr(e, key))[:n]
    return [{"op": e.key, "shapes": str(e.input_shapes)[:100], "calls": e.count, "self_ms": round(getattr(e, key) / 1e3, 1)}
            for e in ranked]


def print_table(result: dict[str, Any], device: torch.device) -> None:
    print(f"{result['geometry']}: {result['preset']}, {result['size']}x{result['size']}, batch {result['batch']}, {device}, "
          f"{result['clock']} clock")
    width = max(10, *(len(name) + 1 for name in result["rows"]))
    print(f"{'model':<{width}}{'params':>14}{'GMACs':>9}{'train ms/step':>15}{'infer ms/step':>15}  rounds (train ms)")
    for name, r in result["rows"].items():
        infer = f"{r['infer_step_ms']:>15.1f}" if "infer_step_ms" in r else f"{'-':>15}"
        print(f"{name:<{width}}{r['params']:>14,}{r['gmacs']:>9.2f}{r['train_step_ms']:>15.1f}{infer}  {r['train_step_ms_rounds']}")
    print(f"step ratio bafenet/fcos {result['step_ratio']:.3f} (rounds {result['step_ratio_rounds']}), "
          f"MAC ratio {result['mac_ratio']:.3f}")
    parts = [label for label in result["rows"] if label not in MODELS]
    if parts:
        print("BAFE-Net with parts of its head off, against FCOS (step ratio beside MAC ratio):")
        for label in parts:
            r = result["rows"][label]
            print(f"  {label:<22} step {r['step_ratio']:.3f}  MACs {r['mac_ratio']:.3f}  {r['train_step_ms']:8.1f} ms/step")
    for name, ops in result.get("profile", {}).items():
        print(f"{name}: the {len(ops)} operators with the most self time in one train step")
        for op in ops:
            print(f"  {op['self_ms']:9.1f} ms  x{op['calls']:<4} {op['op']:<32} {op['shapes']}")


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
    parser.add_argument("--components", action="store_true",
                        help="also time BAFE-Net without its LSK module / exchange / both")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N most expensive operators of one train step per model (torch.profiler)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    keys = [k.strip() for k in args.geometry.split(",") if k.strip()]
    unknown = [k for k in keys if k not in GEOMETRIES]
    if not keys or unknown:
        parser.error(f"--geometry: unknown {unknown or keys}; choose from {', '.join(GEOMETRIES)}")
    if args.steps < 1 or args.rounds < 1 or args.profile < 0:
        parser.error("--steps and --rounds must be >= 1, --profile >= 0")
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
