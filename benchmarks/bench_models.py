"""Train-step throughput of FCOS versus BAFE-Net with the same backbone.

Both detectors at the reference geometry (3 levels P3-P5, 512 x 512, batch 2, ResNet-18 by
default), one SGD step per iteration on synthetic images with ~13 tiny boxes and a sky map
each (the sky map is ignored by FCOS). Reports images/s of the training step (forward, loss,
backward, optimiser step) and of eval inference, best of ``--repeats`` timed blocks, and
the BAFE-Net / FCOS ratio. Models not registered in this checkout are skipped.

    python benchmarks/bench_models.py [--device auto|cpu|cuda] [--backbone resnet18]
                                      [--size 512] [--batch 2] [--steps 3] [--repeats 2]

Prints a table and writes benchmarks/results/bench_models.json. BAFE-Net's own costs (the
exchange vectorised vs looped, the scorer with/without autograd, GPU bf16/channels_last)
are in bench_bafenet.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch

from irstdlab.harness.complexity import profile
from irstdlab.models import build, list_models

RESULTS = Path(__file__).resolve().parent / "results" / "bench_models.json"


# One function per model (the BAFE-Net helper owns bafenet_config).
def fcos_config(backbone: str) -> dict[str, Any]:
    return {"name": "fcos", "backbone": backbone, "num_levels": 3}  # BAFE-Net's host geometry


def bafenet_config(backbone: str) -> dict[str, Any]:
    return {"name": "bafenet", "backbone": backbone, "num_levels": 3}


MODELS: dict[str, Callable[[str], dict[str, Any]]] = {"fcos": fcos_config, "bafenet": bafenet_config}


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
    """Best seconds per step over ``repeats`` blocks of ``steps`` calls (after one warm-up)."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        _sync(device)
        best = min(best, (time.perf_counter() - t) / steps)
    return best


def bench_model(name: str, cfg: dict[str, Any], args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    model = build(cfg).to(device)
    report = profile(model, (args.size, args.size))
    images, targets = make_batch(args.batch, args.size, device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def train_step() -> None:
        model.train()
        loss = sum(model(images, targets).values())
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(images)

    train_s = time_block(train_step, args.steps, args.repeats, device)
    infer_s = time_block(infer, args.steps, args.repeats, device)
    return {
        "model": name,
        "config": cfg,
        "params": report.params,
        "gmacs": round(report.gmacs, 3),
        "train_step_s": train_s,
        "train_images_per_s": args.batch / train_s,
        "infer_images_per_s": args.batch / infer_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed block")
    parser.add_argument("--repeats", type=int, default=2, help="timed blocks; the best is reported")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)

    registered = set(list_models())
    rows, skipped = [], []
    for name, make_cfg in MODELS.items():
        if name not in registered:
            skipped.append(name)
            continue
        rows.append(bench_model(name, make_cfg(args.backbone), args, device))

    by_name = {r["model"]: r for r in rows}
    ratio = None
    if "fcos" in by_name and "bafenet" in by_name:
        ratio = by_name["bafenet"]["train_images_per_s"] / by_name["fcos"]["train_images_per_s"]

    print(f"train step, {args.backbone}, {args.size}x{args.size}, batch {args.batch}, {device}")
    print(f"{'model':<10}{'params':>14}{'GMACs':>9}{'train img/s':>13}{'infer img/s':>13}")
    for r in rows:
        print(f"{r['model']:<10}{r['params']:>14,}{r['gmacs']:>9.2f}{r['train_images_per_s']:>13.2f}{r['infer_images_per_s']:>13.2f}")
    if ratio is not None:
        print(f"bafenet / fcos train throughput: {ratio:.3f} (BAFE-Net step takes {1 / ratio:.2f}x as long)")
    for name in skipped:
        print(f"{name}: not registered in this checkout, skipped")

    result = {
        "benchmark": "bench_models",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "backbone": args.backbone,
        "size": args.size,
        "batch": args.batch,
        "rows": rows,
        "bafenet_over_fcos_train_throughput": ratio,
        "skipped": skipped,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
