"""One trial: build data and model from a `TrialConfig`, train for the scheduled epochs,
validate every epoch, report metrics and a checkpoint every epoch, and evaluate the selected
checkpoint on the test split at the end.

The same :func:`run_trial` runs in three places; only the :class:`Reporter` differs
(``harness/reporting.py``): on Ray Train workers (:func:`train_worker`), directly inside a Ray
Tune trial (``harness/search_trainable.py``), and without Ray (``irstdlab train --no-ray``, tests).

Reproducibility: every epoch starts from RNG states derived from (seed, epoch, rank), the
sampler is a seeded ``DistributedSampler`` and augmentations draw from (seed, epoch, index), so a
run resumed from its epoch-E checkpoint replays epoch E+1 exactly as the uninterrupted run did.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from irstdlab.datasets.build import build_datasets, collate_eval
from irstdlab.datasets.transforms import collate_detection
from irstdlab.harness.checkpoint import (load_checkpoint, load_weights, restore_training_state, save_checkpoint,
                                         selected_weights, unwrap)
from irstdlab.harness.config import TrialConfig
from irstdlab.harness.errors import ConfigError, UserError
from irstdlab.harness.evaluate import evaluate_model
from irstdlab.harness.optim import build_optimizer, build_scheduler
from irstdlab.harness.reporting import Reporter


class TrialDiverged(UserError):
    """The loss became non-finite: the trial stops instead of training a NaN model."""


# ---------------------------------------------------------------------------------- seeding
def seed_everything(*key: int) -> None:
    """Seed torch, numpy and random from a tuple key, e.g. (seed,) or (seed, epoch, rank)."""
    value = int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def seed_loader_worker(worker_id: int) -> None:
    """DataLoader workers: numpy/random from torch's per-worker seed (itself seeded per epoch)."""
    value = torch.initial_seed() % 2**32
    np.random.seed(value)
    random.seed(value)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for full precision. ``auto``: bf16 on a CUDA device that has it,
    full precision elsewhere; ``bf16`` on CPU too. The detectors post-process in float32 anyway."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "auto" and not torch.cuda.is_bf16_supported():
        return None
    return torch.bfloat16


def resolve_num_workers(setting: int | str, device: torch.device, cpus: int) -> int:
    """``data.num_workers``: an integer as given; ``auto``: 0 for a CPU trial (its cores run the model's
    threads, and loader processes beside them oversubscribe a small machine), else ``min(4, cpus - 1)``
    so a GPU is fed while one core stays with the training loop."""
    if setting != "auto":
        return int(setting)
    if device.type == "cpu":
        return 0
    return max(0, min(4, cpus - 1))


def per_worker_batch(batch_size: int, workers: int) -> int:
    """``data.batch_size`` is the global batch: each of ``workers`` DDP ranks loads an equal share,
    so ``--workers N`` keeps a recipe's optimisation (the reference trains batch 2 on one GPU)."""
    if workers < 1 or batch_size % workers:
        raise ConfigError(f"data.batch_size: {batch_size} is the global batch and does not divide over "
                          f"{workers} workers; use a multiple of {workers} or change --workers")
    return batch_size // workers


# ---------------------------------------------------------------------------------- one epoch
def train_one_epoch(model, loader, optimizer, scheduler, scaler, *, epoch: int, max_iters: int, device,
                    amp_dtype, channels_last: bool, cfg: TrialConfig, reporter: Reporter) -> dict[str, float]:
    model.train()
    sums: dict[str, float] = {}
    images_seen, iters, lr = 0, 0, 0.0
    start = time.perf_counter()
    # time_data: waiting for the next batch; time_step: forward, backward, optimiser (synchronised on
    # CUDA so queued kernels are not billed to the next batch's wait)
    time_data = time_step = 0.0
    first_iter = None  # data + step of the epoch's first iteration: lazy set-up lands there
    batches = iter(loader)
    while iters < max_iters:
        waited = time.perf_counter()
        batch = next(batches, None)
        stepping = time.perf_counter()
        time_data += stepping - waited
        if batch is None:
            break
        images, targets, _metas = batch
        global_iter = scheduler.last_epoch  # iterations finished before this one
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            losses = model(images, targets)
        losses = {k: v.float() for k, v in losses.items()}
        if cfg.train.debug_nan_at_iter == global_iter:  # test hook, see TrainConfig
            first = next(iter(losses))
            losses[first] = losses[first] * float("nan")
        total = sum(losses.values())
        values = {k: float(v.detach()) for k, v in losses.items()}
        if not math.isfinite(sum(values.values())):
            bad = next(k for k, v in values.items() if not math.isfinite(v))
            raise TrialDiverged(f"diverged at epoch {epoch + 1}, iteration {global_iter} "
                                f"(loss term {bad} = {values[bad]})")
        lr = float(optimizer.param_groups[0]["lr"])  # the LR this iteration trains with
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if cfg.optim.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        time_step += time.perf_counter() - stepping
        if first_iter is None:
            first_iter = time.perf_counter() - waited
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + v
        iters += 1
        images_seen += images.shape[0]
        if cfg.train.log_every and iters % cfg.train.log_every == 0:
            reporter.log(f"epoch {epoch + 1} iter {iters}/{max_iters} loss {sum(values.values()):.4f}")
    elapsed = time.perf_counter() - start
    stats = {f"train/{k}": v / max(iters, 1) for k, v in sums.items()}
    stats["train/loss"] = sum(stats.values())
    stats["train/iterations"] = iters
    stats["train/time_s"] = elapsed
    stats["train/time_data_s"] = time_data
    stats["train/time_step_s"] = time_step
    stats["time/first_iter_s"] = first_iter or 0.0
    stats["lr"] = lr if iters else float(optimizer.param_groups[0]["lr"])  # of the epoch's last iteration
    # every rank processes its shard at the same pace: global throughput ~ local x world size
    stats["images_per_s"] = images_seen * reporter.world_size / max(elapsed, 1e-9)
    return stats


# ---------------------------------------------------------------------------------- the trial
def run_trial(cfg: TrialConfig, reporter: Reporter) -> dict[str, Any]:
    """Train and evaluate one trial; returns the metrics of the last report."""
    cfg.check_trainable()
    seed, rank = cfg.train.seed, reporter.world_rank
    seed_everything(seed)  # identical initial weights on every rank
    device = reporter.device(cfg.train.device)
    amp_dtype = resolve_amp(cfg.train.amp, device)
    channels_last = cfg.train.channels_last and device.type == "cuda"
    protocol = cfg.data.protocol
    # where a trial's fixed cost goes (benchmarks/bench_search.py --part overhead): set-up phases once,
    # then per-trial totals of evaluation, checkpoint writes and the reporter's hand-over (which, in a
    # Tune trial, persists the checkpoint and waits for the driver); "time/" keys are not leaderboard metrics
    timings: dict[str, float] = {}
    started = time.perf_counter()

    data: dict[str, Any] = build_datasets(cfg.data, cfg.augment, seed=seed, keep_original=cfg.eval.needs_noco)
    sampler: DistributedSampler[Any] = DistributedSampler(data["train"], num_replicas=reporter.world_size, rank=rank, shuffle=True, seed=seed)
    num_workers = resolve_num_workers(cfg.data.num_workers, device, reporter.cpus())
    loader_args: dict[str, Any] = dict(num_workers=num_workers, worker_init_fn=seed_loader_worker,
                       pin_memory=device.type == "cuda")
    batch_size = per_worker_batch(cfg.data.batch_size, reporter.world_size)
    train_loader = reporter.prepare_loader(DataLoader(data["train"], batch_size=batch_size, sampler=sampler,
                                                      collate_fn=collate_detection, **loader_args))
    eval_loaders = {role: DataLoader(data[role], batch_size=cfg.data.eval_batch_size, shuffle=False,
                                     collate_fn=collate_eval, **loader_args) for role in ("val", "test")}
    timings["time/data_build_s"] = time.perf_counter() - started

    started = time.perf_counter()
    restore = reporter.restore_dir()
    model = build_trial_model(cfg, initial_weights=restore is None)  # a resumed run loads its own
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = reporter.prepare_model(model, device)
    optimizer = build_optimizer(unwrap(model), cfg.optim)
    max_iters = min(len(train_loader), cfg.train.max_iters_per_epoch or len(train_loader))
    scheduler = build_scheduler(optimizer, cfg.schedule, max_iters)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    timings["time/model_build_s"] = time.perf_counter() - started  # with a resumed run's checkpoint read

    config_json, config_hash = cfg.canonical_json(), cfg.config_hash
    history: list[dict[str, Any]] = []
    best_epoch, best_value, best_weights = 0, -math.inf, None
    start_epoch = 0
    if restore is not None:
        state = load_checkpoint(restore)
        if state["config_hash"] != config_hash:
            raise ConfigError(f"{restore}: checkpoint of config {state['config_hash']}, "
                              f"this trial is {config_hash}; resume needs the same config")
        restore_training_state(state, restore, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler)
        start_epoch, history = int(state["epoch"]), list(state["history"])
        best_epoch, best_value = int(state["best_epoch"]), float(state["best_value"])
        best_weights = selected_weights(state) if best_epoch else None
        reporter.log(f"resumed from {restore} after epoch {start_epoch}")

    epochs = cfg.schedule.epochs
    metrics: dict[str, Any] = {}
    for key in ("time/eval_s", "time/checkpoint_s", "time/report_s"):
        timings[key] = 0.0
    for epoch in range(start_epoch, epochs):
        seed_everything(seed, epoch, rank)
        sampler.set_epoch(epoch)
        data["train"].set_epoch(epoch)
        metrics = {"epoch": epoch + 1, "epochs": epochs, "protocol": protocol, "selection": cfg.data.selection,
                   "config_hash": config_hash, "workers": reporter.world_size, "loader_workers": num_workers}
        metrics.update(train_one_epoch(model, train_loader, optimizer, scheduler, scaler, epoch=epoch,
                                       max_iters=max_iters, device=device, amp_dtype=amp_dtype,
                                       channels_last=channels_last, cfg=cfg, reporter=reporter))
        first_iter = metrics.pop("time/first_iter_s")
        timings.setdefault("time/first_iter_s", first_iter)  # the session's first iteration only
        if "d" in optimizer.param_groups[0]:  # DAdaptAdam's adapted step size
            metrics["dadapt_d"] = float(optimizer.param_groups[0]["d"])
        last = epoch + 1 == epochs
        checkpoint_dir = None
        with tempfile.TemporaryDirectory(prefix="irstdlab-ckpt-") as tmp:
            if reporter.is_chief:  # rank 0 evaluates and writes; the others only report
                if (epoch + 1) % cfg.eval.every == 0 or last:
                    started = time.perf_counter()
                    metrics.update(evaluate_model(unwrap(model), eval_loaders["val"], device, protocol, "val/",
                                                  amp_dtype, channels_last))
                    value = metrics[f"val/{cfg.eval.select_metric}"]
                    if value > best_value:
                        best_epoch, best_value = epoch + 1, value
                        best_weights = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
                    timings["time/eval_s"] += time.perf_counter() - started
                metrics["best_epoch"] = best_epoch
                if best_epoch:
                    metrics[f"best/val/{cfg.eval.select_metric}"] = best_value
                history.append({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
                started = time.perf_counter()
                save_checkpoint(tmp, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                                epoch=epoch + 1, config_json=config_json, config_hash=config_hash,
                                history=history, best_epoch=best_epoch, best_value=best_value,
                                best_model=None if best_epoch == epoch + 1 else best_weights)
                timings["time/checkpoint_s"] += time.perf_counter() - started
                checkpoint_dir = Path(tmp)
                if last and cfg.eval.test_at_end:
                    if best_weights is not None and best_epoch != epoch + 1:
                        unwrap(model).load_state_dict(best_weights)  # the selected weights, not the last
                    started = time.perf_counter()
                    metrics.update(evaluate_model(unwrap(model), eval_loaders["test"], device, protocol, "test/",
                                                  amp_dtype, channels_last))
                    timings["time/eval_s"] += time.perf_counter() - started
            metrics.update(timings)  # totals so far; the report_s of this report reaches the next one
            started = time.perf_counter()
            reporter.report(metrics, checkpoint_dir)
            timings["time/report_s"] += time.perf_counter() - started
    metrics.update(timings)  # the returned metrics hold the last report's hand-over too
    return metrics


def build_trial_model(cfg: TrialConfig, initial_weights: bool = True):
    """The configured detector; ``initial_weights=False`` skips ``model.pretrained`` (the caller
    loads a checkpoint over it, so no ImageNet download or local file is needed).
    Build problems (a missing weights file, an offline download) become one-line ConfigErrors."""
    from irstdlab.models import build as build_model

    model_cfg = cfg.model if initial_weights else cfg.model.replace(pretrained=None)
    try:
        return build_model(model_cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# ---------------------------------------------------------------------------------- entry points
def train_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's per-worker function; ``ray_runtime.build_trainer`` passes ``{"config_json": ...}``."""
    from irstdlab.harness.reporting import RayTrainReporter

    run_trial(TrialConfig.from_json(loop_config["config_json"]), RayTrainReporter())


def load_selected_model(checkpoint: str | Path):
    """(model in eval mode with the selected weights, TrialConfig) from a checkpoint."""
    state = load_checkpoint(checkpoint)
    cfg = TrialConfig.from_json(state["config_json"])
    model = build_trial_model(cfg, initial_weights=False)
    load_weights(model, selected_weights(state), checkpoint)
    return model.eval(), cfg, state


__all__ = ["TrialDiverged", "load_selected_model", "per_worker_batch", "resolve_num_workers", "run_trial", "seed_everything", "train_worker"]
