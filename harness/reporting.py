"""How a running trial talks to the outside: one small interface, three implementations.

The training loop (``harness/trial.py``) never asks "am I under Ray?"; it calls a
:class:`Reporter`:

* :class:`LocalReporter`: no Ray (``irstdlab train --no-ray``, tests of the loop). Checkpoints
  are folders under ``<run_dir>/checkpoints``, metrics go to ``progress.jsonl`` and TensorBoard.
* :class:`RayTrainReporter`: inside a Ray Train worker. ``ray.train.report`` (a barrier: every
  rank calls it), DDP through ``ray.train.torch.prepare_model``.
* :class:`TuneReporter`: directly inside a Ray Tune function trial (single worker). There
  ``ray.train.report`` raises under Train V2, so ``ray.tune.report`` is used.

Ray is imported inside methods only: importing this module stays cheap.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

CHECKPOINT_FILE = "checkpoint.pt"


class Reporter:
    """Base: a single process, no distribution. Subclasses override what differs."""

    world_rank: int = 0
    world_size: int = 1

    @property
    def is_chief(self) -> bool:
        return self.world_rank == 0

    def device(self, want: str = "auto") -> torch.device:
        if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
            return torch.device("cpu")
        return torch.device("cuda")

    def prepare_model(self, model: nn.Module, device: torch.device) -> nn.Module:
        return model.to(device)

    def cpus(self) -> int:
        """CPU cores this trial may use (sizes ``data.num_workers: auto``): the process's affinity."""
        try:
            return len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # pragma: no cover - not Linux
            return os.cpu_count() or 1

    def prepare_loader(self, loader: DataLoader) -> DataLoader:
        return loader

    def restore_dir(self) -> Path | None:
        """Folder of the checkpoint to resume from, or None for a fresh start."""
        return None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        raise NotImplementedError

    def log(self, line: str) -> None:
        if self.is_chief:
            print(line, file=sys.stderr, flush=True)


class RunLog:
    """Per-epoch records of one run: ``progress.jsonl``, TensorBoard scalars, a console line.

    Used by the local reporter and, on the Ray driver side, by the Train callback, so both
    paths leave the same files behind.
    """

    def __init__(self, run_dir: Path | str, echo: Callable[[str], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.echo = echo
        self._writer: Any = None  # a tensorboardX SummaryWriter once the first scalars arrive

    def record(self, metrics: dict[str, Any]) -> None:
        with open(self.run_dir / "progress.jsonl", "a") as f:
            f.write(json.dumps(metrics, sort_keys=True, default=str) + "\n")
        self._tensorboard(metrics)
        if self.echo is not None:
            self.echo(format_progress(metrics))

    def _tensorboard(self, metrics: dict[str, Any]) -> None:
        try:
            if self._writer is None:
                from tensorboardX import SummaryWriter  # a Ray dependency; optional here

                self._writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        except ImportError:  # pragma: no cover - TensorBoard logs are a convenience
            return
        step = int(metrics.get("epoch", 0))
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self._writer.add_scalar(key, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def format_progress(m: dict[str, Any]) -> str:
    """One console line per epoch: losses, validation metrics, speed."""
    parts = [f"epoch {m.get('epoch')}/{m.get('epochs', '?')}"]
    parts += [f"{k[6:] if k.startswith('train/') else k}={v:.4f}" for k, v in m.items()
              if k.startswith("train/loss") and isinstance(v, float)]
    for key in ("val/mAP07", "val/mAP12", "val/recall", "test/mAP07", "test/mAP12", "test/recall"):
        if isinstance(m.get(key), float) and not math.isnan(m[key]):
            parts.append(f"{key}={m[key]:.3f}")
    if "lr" in m:
        parts.append(f"lr={m['lr']:.3g}")
    if "images_per_s" in m:
        parts.append(f"{m['images_per_s']:.1f} img/s")
    data_s, step_s = m.get("train/time_data_s"), m.get("train/time_step_s")
    if isinstance(data_s, float) and isinstance(step_s, float):  # is the loader the bottleneck?
        parts.append(f"data {data_s:.3g}s / step {step_s:.3g}s ({data_s / max(data_s + step_s, 1e-9):.0%} waiting)")
    return "  ".join(parts)


class LocalReporter(Reporter):
    """No Ray: checkpoints in ``<run_dir>/checkpoints/epoch_NNNN``, keeping the last ``keep``
    and the best one (by ``best_epoch`` in the metrics)."""

    def __init__(self, run_dir: Path | str, resume: bool = True, keep: int = 2,
                 echo: Callable[[str], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoints = self.run_dir / "checkpoints"
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        self.resume = resume
        self.keep = max(1, keep)
        self.runlog = RunLog(self.run_dir, echo)
        self.history: list[dict[str, Any]] = []
        self.best_checkpoint: Path | None = None
        self.last_checkpoint: Path | None = None

    def restore_dir(self) -> Path | None:
        if not self.resume:
            return None
        found = sorted(p for p in self.checkpoints.glob("epoch_*") if (p / CHECKPOINT_FILE).is_file())
        return found[-1] if found else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        epoch = int(metrics["epoch"])
        if checkpoint_dir is not None:
            dest = self.checkpoints / f"epoch_{epoch:04d}"
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(checkpoint_dir, dest)
            self.last_checkpoint = dest
            self._prune(int(metrics.get("best_epoch", epoch)))
            self.best_checkpoint = self.checkpoints / f"epoch_{int(metrics.get('best_epoch', epoch)):04d}"
        self.history.append(dict(metrics))
        self.runlog.record(metrics)

    def _prune(self, best_epoch: int) -> None:
        found = sorted(self.checkpoints.glob("epoch_*"))
        protected = set(found[-self.keep:]) | {self.checkpoints / f"epoch_{best_epoch:04d}"}
        for path in found:
            if path not in protected:
                shutil.rmtree(path, ignore_errors=True)


class RayTrainReporter(Reporter):
    """Inside ``TorchTrainer`` workers (Train V2). Every rank must call :meth:`report`."""

    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.world_rank = context.get_world_rank()
        self.world_size = context.get_world_size()

    def device(self, want: str = "auto") -> torch.device:
        import ray.train.torch

        device = ray.train.torch.get_device()
        return torch.device("cpu") if want == "cpu" else device

    def prepare_model(self, model: nn.Module, device: torch.device) -> nn.Module:
        import ray.train.torch

        model = model.to(device)
        if self.world_size == 1:
            return model
        # DDP over gloo (CPU) or NCCL (GPU), as configured by TorchConfig in the trainer.
        # find_unused_parameters: some configurations leave parameters out of the loss (e.g. the
        # stride-32 stage feeding no level, BAFE's LSK scorer that gets no gradient by design).
        return ray.train.torch.prepare_model(model, move_to_device=False,
                                             parallel_strategy_kwargs={"find_unused_parameters": True})

    def cpus(self) -> int:
        return _ray_cpus(super().cpus())

    def prepare_loader(self, loader: DataLoader) -> DataLoader:
        import ray.train.torch

        # The loop already gives a DistributedSampler seeded by the trial; Ray keeps it.
        return ray.train.torch.prepare_data_loader(loader, move_to_device=False)

    def restore_dir(self) -> Path | None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        return _local_copy(checkpoint) if checkpoint is not None else None

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.train

        checkpoint = None
        if checkpoint_dir is not None and self.is_chief:
            checkpoint = ray.train.Checkpoint.from_directory(str(checkpoint_dir))
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch_{int(metrics['epoch']):04d}")


class TuneReporter(Reporter):
    """Directly inside a Ray Tune function trial: one worker, ``ray.tune.report``.

    ``record`` (the trial's facts and spec as JSON, ``rows.FACTS_FIELD``/``rows.SPEC_FIELD``) goes
    with this session's first report only and with a failure report; ``objective_facts`` (a cost an
    objective names, e.g. ``gmacs``) goes with every report, because Tune's searcher and scheduler
    read objectives from results (the trainable's own set-up times, ``time/*``, travel the same way)."""

    def __init__(self, record: dict[str, str] | None = None, objective_facts: dict[str, Any] | None = None) -> None:
        self.record = dict(record or {})
        self.objective_facts = dict(objective_facts or {})
        self.record_sent = False
        self.last_epoch = 0  # the epoch a failure report names

    def cpus(self) -> int:
        return _ray_cpus(super().cpus())

    def restore_dir(self) -> Path | None:
        import ray.tune

        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is None:
            return None
        found = _local_copy(checkpoint)
        from irstdlab.harness.checkpoint import load_checkpoint

        self.last_epoch = int(load_checkpoint(found)["epoch"])
        return found

    def _payload(self, metrics: dict[str, Any]) -> dict[str, Any]:
        payload = {**metrics, **self.objective_facts}
        if not self.record_sent:
            payload.update(self.record)
            self.record_sent = True
        return payload

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        import ray.tune

        self.last_epoch = int(metrics.get("epoch", self.last_epoch))
        checkpoint = ray.tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir else None
        ray.tune.report(self._payload(metrics), checkpoint=checkpoint)

    def report_failure(self, reason: str) -> None:
        """The trial's last report: it failed for a reason a retry cannot fix (``rows.FAILURE_FIELD``)."""
        import ray.tune

        from irstdlab.harness.rows import FAILURE_FIELD

        self.record_sent = False  # a failure report always carries the record
        ray.tune.report(self._payload({"epoch": self.last_epoch, FAILURE_FIELD: reason}))


def _ray_cpus(fallback: int) -> int:
    """The CPUs Ray granted this actor (a whole node's affinity would oversubscribe shared nodes)."""
    import ray

    try:
        granted = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - sizing the loader must never fail a trial
        return fallback
    return max(1, int(granted)) if granted else fallback


def _local_copy(checkpoint: Any) -> Path:
    """A Ray checkpoint as a local folder (a no-op for checkpoints on a local path)."""
    return Path(checkpoint.to_directory())


__all__ = ["CHECKPOINT_FILE", "LocalReporter", "RayTrainReporter", "Reporter", "RunLog", "TuneReporter",
           "format_progress"]
