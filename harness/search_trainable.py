"""The Tune trainable of ``irstdlab search``: one sampled point + seed -> one training run.

Two backends run the same loop (``harness.trial.run_trial``):

* ``direct``: the loop runs inside the Tune trial (one worker). Cheapest (~1-3 s of Ray overhead
  per trial here); Tune-level checkpoints, so an interrupted trial continues at its epoch.
* ``train``: the Tune trial is a *driver* that starts a Ray Train ``TorchTrainer`` (DDP over
  ``workers_per_trial`` processes/GPUs). Its run is named ``train-trial_id=<id>`` on the search's
  storage, so a restarted trial finds its own checkpoints and continues (notes §1.1, E4);
  metrics reach Tune through ``TuneReportCallback`` (rank 0's).

``auto`` picks ``train`` only when a trial needs more than one worker. Every report also carries
the model's size and cost (``gmacs``, ``params_m``: a possible second objective) and the
hardware, which the leaderboard callback copies into the row.

A trial whose loss diverges is not retried (retries would diverge again): the trainable reports
``failure`` and returns, and the row records it as ``failed`` with the reason.
"""

from __future__ import annotations

import dataclasses

import os
import platform
import socket
from dataclasses import dataclass
from typing import Any, Literal

from irstdlab.harness.reporting import TuneReporter
from irstdlab.search_spaces.loader import SEED_INDEX_KEY, SearchSpace

FAILURE_KEY = "failure"  # reported (with the reason) when a trial diverged


@dataclass(frozen=True)
class TrialResources:
    """How one trial runs: the backend and what each of its workers gets."""

    backend: Literal["auto", "direct", "train"] = "auto"
    workers_per_trial: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0

    def resolved_backend(self) -> str:
        if self.backend == "auto":
            return "train" if self.workers_per_trial > 1 else "direct"
        return self.backend

    def tune_resources(self) -> dict[str, float]:
        """What the Tune trial itself reserves (the driver of a nested trainer needs almost nothing)."""
        if self.resolved_backend() == "direct":
            return {"cpu": self.cpus_per_worker, "gpu": self.gpus_per_worker}
        return {"cpu": 0.01, "gpu": 0.0}


@dataclass(frozen=True)
class SearchContext:
    """Everything a trial needs beside its sampled config; pickled into the trainable."""

    search: str
    space: SearchSpace
    storage: str  # the search's storage root (Train runs live under <storage>/<search>/train)
    resources: TrialResources = TrialResources()


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """A Tune config -> (sampled parameters, seed). Grid configs nest the point under ``params``."""
    seed = int(config.get(SEED_INDEX_KEY, 0) or 0)
    if isinstance(config.get("params"), dict):
        return dict(config["params"]), seed
    return {k: v for k, v in config.items() if k != SEED_INDEX_KEY}, seed


def hardware() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{socket.gethostname()} {platform.machine()} {os.cpu_count()} CPUs, {gpu}"


def model_cost(cfg: Any) -> dict[str, float]:
    """GMACs and millions of parameters of the trial's model at its input size."""
    import torch

    from irstdlab.harness.complexity import profile
    from irstdlab.models import build as build_model

    threads = torch.get_num_threads()
    try:
        # counting needs the architecture only: no initial weights are read (or downloaded) for it
        report = profile(build_model(dataclasses.replace(cfg.model, pretrained=None)), (cfg.data.size, cfg.data.size))
    finally:
        torch.set_num_threads(threads)
    return {"gmacs": float(report.gmacs), "params_m": report.params / 1e6}


def search_trial(config: dict[str, Any], ctx: SearchContext) -> None:
    """The Tune function trainable (wrapped with ``tune.with_parameters(search_trial, ctx=...)``)."""
    import ray.tune

    from irstdlab.harness.ray_logs import quiet_worker_logs

    quiet_worker_logs()

    params, seed = split_config(config)
    cfg = ctx.space.trial_config(params, seed)
    extras: dict[str, Any] = {"hardware": hardware(), "backend": ctx.resources.resolved_backend(), "seed": seed}
    extras.update(model_cost(cfg))
    if ctx.resources.resolved_backend() == "train":
        _run_nested(cfg, ctx, extras)
        return
    from irstdlab.harness.trial import TrialDiverged, run_trial

    reporter = ExtrasTuneReporter(extras)
    try:
        run_trial(cfg, reporter)
    except TrialDiverged as exc:
        ray.tune.report({**extras, "epoch": reporter.last_epoch, FAILURE_KEY: str(exc)})


class ExtrasTuneReporter(TuneReporter):
    """``TuneReporter`` that adds constant columns (cost, hardware, seed) to every report."""

    def __init__(self, extras: dict[str, Any]) -> None:
        self.extras = dict(extras)
        self.last_epoch = 0

    def restore_dir(self) -> Any:
        found = super().restore_dir()
        if found is not None:  # a resumed trial: remember where it starts for a divergence report
            from irstdlab.harness.checkpoint import load_checkpoint

            self.last_epoch = int(load_checkpoint(found)["epoch"])
        return found

    def report(self, metrics: dict[str, Any], checkpoint_dir: Any) -> None:
        self.last_epoch = int(metrics.get("epoch", self.last_epoch))
        super().report({**metrics, **self.extras}, checkpoint_dir)


def _run_nested(cfg: Any, ctx: SearchContext, extras: dict[str, Any]) -> None:
    """Driver of a nested ``TorchTrainer``: DDP over the trial's workers, stable run name."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from irstdlab.harness.trial import train_worker

    class ExtrasReportCallback(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            super().after_report(run_context, [{**metrics[0], **extras}] + list(metrics[1:]), checkpoint)

    res = ctx.resources
    trial_id = ray.tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config_json": cfg.canonical_json()},
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.workers_per_trial, use_gpu=res.gpus_per_worker > 0,
            resources_per_worker={"CPU": res.cpus_per_worker,
                                  **({"GPU": res.gpus_per_worker} if res.gpus_per_worker > 0 else {})}),
        run_config=ray.train.RunConfig(
            name=f"train-trial_id={trial_id}",  # stable: a restarted trial resumes its own run
            storage_path=train_storage(ctx.storage, ctx.search),
            callbacks=[ExtrasReportCallback()],
            failure_config=ray.train.FailureConfig(max_failures=1),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as exc:  # a diverged loss is final: do not retry it
        if "TrialDiverged" not in repr(exc) and "non-finite" not in str(exc):
            raise
        ray.tune.report({**extras, "epoch": 0, FAILURE_KEY: str(exc).strip().splitlines()[-1][:500]})


def train_storage(storage: str, search: str) -> str:
    return f"{storage.rstrip('/')}/{search}/train"


__all__ = ["FAILURE_KEY", "SearchContext", "TrialResources", "hardware", "model_cost", "search_trial",
           "split_config", "train_storage"]
