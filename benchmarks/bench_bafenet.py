"""BAFE-Net's own costs: the exchange (vectorised vs the released per-sample loop), what
running the gradient-free dynamic scorer without autograd saves, and (GPU) AMP / channels_last.

The FCOS-vs-BAFE-Net train-step ratio is in ``bench_models.py``.

    python benchmarks/bench_bafenet.py [--device auto|cpu|cuda] [--size 512] [--batch 2]
                                       [--exchange-batch 8] [--exchange-size 64] [--threads 0]

Memory, honestly: on CUDA the peak of ``torch.cuda.max_memory_allocated`` over a train step;
on CPU each variant runs in a fresh subprocess and we report the growth of the process's
peak RSS (``resource.getrusage(...).ru_maxrss``) from just before the first step to after
the timed steps -- it includes allocator slack, but it is the memory the OS had to give.
Writes benchmarks/results/bench_bafenet.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from torch import Tensor

from irstdlab.models import build
from irstdlab.models.exchange import ChannelExchange, ChannelSelector

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_models import make_batch, time_block  # noqa: E402  (the FCOS helper's batch and timer)

RESULTS = Path(__file__).resolve().parent / "results" / "bench_bafenet.json"
VARIANTS = ("dynamic_no_graph", "dynamic_with_graph", "dynamic_st")


class LoopChannelExchange(ChannelExchange):
    """The released code's exchange: advanced-index gather, then a Python loop over the batch."""

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        i1, _ = self.selector(x1)
        i2, _ = self.selector(x2)
        rows = torch.arange(x1.shape[0], device=x1.device)[:, None]
        to_x2, to_x1 = self.adapter(x1[rows, i1]), self.adapter(x2[rows, i2])
        out1, out2 = x1.clone(), x2.clone()
        for i in range(x1.shape[0]):
            out1[i, i1[i]] = to_x1[i]
            out2[i, i2[i]] = to_x2[i]
        return out1, out2


def bench_exchange(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Forward+backward ms of one exchange call at (B, 256, S, S), both implementations."""
    b, s = args.exchange_batch, args.exchange_size
    x1 = torch.randn(b, 256, s, s, device=device, requires_grad=True)
    x2 = torch.randn(b, 256, s, s, device=device, requires_grad=True)
    out: dict[str, Any] = {"shape": [b, 256, s, s]}
    for selection in ("dynamic", "fixed"):  # fixed isolates the exchange from the scorer
        for name, cls in (("vectorised", ChannelExchange), ("loop", LoopChannelExchange)):
            torch.manual_seed(0)
            ex = cls(256, 0.5, selection, "mlp", 64).to(device)

            def step(ex: ChannelExchange = ex) -> None:
                y1, y2 = ex(x1, x2)
                (y1.sum() + y2.sum()).backward()

            out[f"{selection}_{name}_ms"] = 1e3 * time_block(step, args.steps, args.repeats, device)
        scorer = ChannelSelector(256, 128, "dynamic").to(device) if selection == "dynamic" else None
        if scorer is not None:
            out["dynamic_scorer_alone_ms"] = 1e3 * time_block(lambda s=scorer: (s(x1), s(x2)), args.steps, args.repeats, device)
    return out


def _set_variant(model: torch.nn.Module, variant: str) -> None:
    for m in model.modules():
        if isinstance(m, ChannelSelector) and m.strategy == "dynamic":
            # "with graph" = the released code: scorer parameters require grad, scored under autograd
            m.score_without_graph = variant != "dynamic_with_graph"
            m.scorer.requires_grad_(variant == "dynamic_with_graph")


def train_step_fn(model: torch.nn.Module, images: Tensor, targets: list, device: torch.device) -> Callable[[], None]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)
    model.train()

    def step() -> None:
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def run_variant(variant: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One train-step variant of BAFE-R18; measured in this process (call it in a fresh one on CPU)."""
    torch.manual_seed(0)
    selection = "dynamic_st" if variant == "dynamic_st" else "dynamic"
    model = build({"name": "bafenet", "backbone": args.backbone, "num_levels": 3, "selection": selection}).to(device)
    _set_variant(model, variant)
    images, targets = make_batch(args.batch, args.size, device)
    step = train_step_fn(model, images, targets, device)
    if device.type == "cuda":
        step()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        seconds = time_block(step, args.steps, args.repeats, device)
        peak_mb = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        seconds = time_block(step, args.steps, args.repeats, device)
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024  # KiB on Linux
    return {"variant": variant, "train_step_s": seconds, "peak_growth_mb": peak_mb}


def bench_scorer_autograd(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Variants interleaved over ``--rounds`` (a shared machine drifts); min time, max memory."""
    best: dict[str, dict[str, Any]] = {}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            if device.type == "cuda":
                row = run_variant(variant, args, device)
            else:
                cmd = [sys.executable, __file__, "--child", variant, "--device", "cpu", "--size", str(args.size),
                       "--batch", str(args.batch), "--steps", str(args.steps), "--repeats", str(args.repeats),
                       "--backbone", args.backbone, "--threads", str(args.threads)]
                done = subprocess.run(cmd, check=True, capture_output=True, text=True)
                row = json.loads(done.stdout.strip().splitlines()[-1])
            old = best.setdefault(variant, row)
            old["train_step_s"] = min(old["train_step_s"], row["train_step_s"])
            old["peak_growth_mb"] = max(old["peak_growth_mb"], row["peak_growth_mb"])
    return [best[v] for v in VARIANTS]


def bench_gpu_formats(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Train images/s of fcos and bafenet in fp32, bf16 autocast, and bf16 + channels_last."""
    rows = []
    for name in ("fcos", "bafenet"):
        for amp, channels_last in ((False, False), (True, False), (True, True)):
            torch.manual_seed(0)
            model = build({"name": name, "backbone": args.backbone, "num_levels": 3}).to(device)
            images, targets = make_batch(args.batch, args.size, device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
                images = images.contiguous(memory_format=torch.channels_last)
            inner = train_step_fn(model, images, targets, device)

            def step(inner: Callable[[], None] = inner, amp: bool = amp) -> None:
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    inner()

            seconds = time_block(step, args.steps, args.repeats, device)
            rows.append({"model": name, "bf16": amp, "channels_last": channels_last,
                         "train_images_per_s": args.batch / seconds})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--exchange-batch", type=int, default=8)
    parser.add_argument("--exchange-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the scorer variants")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.child:
        print(json.dumps(run_variant(args.child, args, device)))
        return 0

    exchange = bench_exchange(args, device)
    print(f"exchange fwd+bwd at {exchange['shape']} ({device}), ms:")
    for key, value in exchange.items():
        if key.endswith("_ms"):
            print(f"  {key:<28}{value:>10.1f}")
    scorer = bench_scorer_autograd(args, device)
    print(f"BAFE-{args.backbone} train step, {args.size}x{args.size}, batch {args.batch}:")
    for row in scorer:
        print(f"  {row['variant']:<20}{row['train_step_s']:>8.2f} s/step   peak growth {row['peak_growth_mb']:>8.1f} MB")
    gpu = bench_gpu_formats(args, device) if device.type == "cuda" else []
    for row in gpu:
        print(f"  {row['model']:<8} bf16={row['bf16']!s:<5} channels_last={row['channels_last']!s:<5} {row['train_images_per_s']:.1f} img/s")
    if not gpu:
        print("AMP bf16 / channels_last: GPU only, skipped")

    result = {
        "benchmark": "bench_bafenet",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "memory_method": "cuda max_memory_allocated" if device.type == "cuda" else "subprocess ru_maxrss growth",
        "exchange": exchange,
        "scorer_autograd": scorer,
        "gpu_formats": gpu,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
