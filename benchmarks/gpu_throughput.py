"""Images/s of BAFE-Net R18 and FCOS R18 at 512x512 in fp32 and bf16: training step and inference.

The models are the paper presets' model sections (``paper_bafenet_r18``; ``paper_fcos_r50``
with a ResNet-18 trunk, i.e. the Table II FCOS geometry P3-P7) with random weights: speed does
not depend on the weights, and this needs no ImageNet file. A training step is forward with
targets, the summed loss, backward and an SGD step (the optimiser's own cost is not the
question here); inference is the eval forward with post-processing. bf16 is
``torch.autocast(dtype=torch.bfloat16)`` around the forward, as the trainer does with
``train.amp: bf16``; on CUDA the input and model are channels_last, as in the trainer.
Inputs are synthetic grey images with 13 tiny boxes and a sky map each.

    python benchmarks/gpu_throughput.py [--device auto|cpu|cuda] [--size 512] [--batch 8]
                                        [--iters 20] [--warmup 3] [--models bafenet,fcos]
                                        [--precisions fp32,bf16]

``--packed 1,4`` measures instead several trials sharing one GPU, as a search with
``--gpus-per-worker 0.25`` runs them: for each count K, K processes each build BAFE-Net R18, train
at ``--batch`` with bf16 autocast for ``--seconds`` after a common start, and the total images/s
of the K processes is reported beside each one's peak memory (model steps only: no data loading).

Prints a table, then one JSON line (the last line of stdout) with every row. Runs on CPU too
(bf16 autocast works there), e.g. ``--device cpu --size 128 --batch 2 --iters 2 --warmup 1``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from irstdlab.harness.config import load_config
from irstdlab.models import build

# model -> (preset whose model section it uses, the overrides that make it the R18 benchmark model)
MODELS: dict[str, tuple[str, list[str]]] = {
    "bafenet": ("paper_bafenet_r18", ["model.pretrained=null"]),
    "fcos": ("paper_fcos_r50", ["model.backbone=resnet18", "model.pretrained=null"]),
}
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def model_config(name: str) -> Any:
    preset, overrides = MODELS[name]
    return load_config(preset, overrides).model


def make_batch(batch: int, size: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, list[dict]]:
    g = torch.Generator().manual_seed(seed)
    images = (30 + 20 * torch.rand(batch, 1, size, size, generator=g)).round()
    targets = []
    for b in range(batch):
        xy = torch.randint(0, size - 8, (13, 2), generator=g).float()
        wh = torch.randint(2, 6, (13, 2), generator=g).float()
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


def seconds_per_call(fn: Callable[[], None], iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / iters


def measure(name: str, precision: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build(model_config(name)).to(device)
    images, targets = make_batch(args.batch, args.size, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    dtype = PRECISIONS[precision]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=1e-4)

    def autocast():
        return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def train_step() -> None:
        with autocast():
            losses = model(images, targets)
        total = sum(v.float() for v in losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()

    @torch.no_grad()
    def infer() -> None:
        with autocast():
            model(images)

    model.train()
    train_s = seconds_per_call(train_step, args.iters, args.warmup, device)
    model.eval()
    infer_s = seconds_per_call(infer, args.iters, args.warmup, device)
    row = {"model": name, "backbone": "resnet18", "precision": precision, "size": args.size, "batch": args.batch,
           "train_images_per_s": round(args.batch / train_s, 2), "infer_images_per_s": round(args.batch / infer_s, 2)}
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        torch.cuda.reset_peak_memory_stats(device)
    return row


def _packed_worker(args: argparse.Namespace, start: Any, results: Any) -> None:
    """One of K processes sharing the GPU: warm up, wait for the others, train for ``args.seconds``."""
    device = torch.device("cuda" if args.device != "cpu" else "cpu")
    torch.manual_seed(0)
    model = build(model_config("bafenet")).to(device).train()
    images, targets = make_batch(args.batch, args.size, device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            losses = model(images, targets)
        optimizer.zero_grad(set_to_none=True)
        sum(v.float() for v in losses.values()).backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    _sync(device)
    start.wait()
    began, steps = time.perf_counter(), 0
    while time.perf_counter() - began < args.seconds:
        step()
        steps += 1
    _sync(device)
    elapsed = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    results.put({"images_per_s": args.batch * steps / elapsed, "peak_mem_gib": peak})


def packed(counts: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Total training images/s of K processes training at once on the one device, for each K."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    rows = []
    for k in counts:
        start, results = context.Barrier(k), context.Queue()
        procs = [context.Process(target=_packed_worker, args=(args, start, results)) for _ in range(k)]
        for proc in procs:
            proc.start()
        got = [results.get(timeout=args.seconds + 300) for _ in procs]
        for proc in procs:
            proc.join()
        peaks = [g["peak_mem_gib"] for g in got if g["peak_mem_gib"] is not None]
        rows.append({"processes": k, "model": "bafenet", "batch": args.batch, "size": args.size, "precision": "bf16",
                     "total_train_images_per_s": round(sum(g["images_per_s"] for g in got), 2),
                     "per_process_images_per_s": [round(g["images_per_s"], 2) for g in got],
                     "peak_mem_gib_per_process": round(max(peaks), 2) if peaks else None})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--models", default="bafenet,fcos")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--packed", default=None, metavar="K,K", help="trials sharing the device, e.g. 1,4 (see above)")
    p.add_argument("--seconds", type=float, default=20.0, help="--packed: training seconds per count (default 20)")
    args = p.parse_args(argv)
    names, precisions = args.models.split(","), args.precisions.split(",")
    unknown = [n for n in names if n not in MODELS] + [q for q in precisions if q not in PRECISIONS]
    if unknown:
        p.error(f"unknown model or precision {unknown[0]!r}; models {sorted(MODELS)}, precisions {sorted(PRECISIONS)}")
    if min(args.size, args.batch, args.iters) < 1 or args.warmup < 0 or args.size % 32:
        p.error("--size must be a positive multiple of 32; --batch and --iters >= 1; --warmup >= 0")
    want_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    device = torch.device("cuda" if want_cuda else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"

    if args.packed:
        counts = [int(k) for k in args.packed.split(",") if k.strip().isdigit() and int(k) > 0]
        if not counts:
            p.error("--packed: positive process counts, comma-separated, e.g. 1,4")
        packing = packed(counts, args)
        base = packing[0]["total_train_images_per_s"]
        print(f"{'trials/GPU':>10} {'total img/s':>12} {'vs first':>9} {'peak GiB each':>14}   ({hardware}, BAFE-Net R18 "
              f"bf16, {args.size}^2, batch {args.batch})")
        for r in packing:
            print(f"{r['processes']:>10} {r['total_train_images_per_s']:>12.1f} "
                  f"{r['total_train_images_per_s'] / base:>9.2f} {r['peak_mem_gib_per_process'] or 0:>14.2f}")
        print(json.dumps({"benchmark": "gpu_packing", "device": str(device), "hardware": hardware,
                          "torch": torch.__version__, "rows": packing}, sort_keys=True))
        return 0
    rows = [measure(n, q, args, device) for n in names for q in precisions]
    print(f"{'model':<8} {'precision':<9} {'train img/s':>11} {'infer img/s':>11}   ({hardware}, {args.size}^2, batch {args.batch})")
    for r in rows:
        print(f"{r['model']:<8} {r['precision']:<9} {r['train_images_per_s']:>11.1f} {r['infer_images_per_s']:>11.1f}")
    print(json.dumps({"benchmark": "gpu_throughput", "device": str(device), "hardware": hardware,
                      "torch": torch.__version__, "rows": rows}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
