"""The Tune trainable of ``irstdlab search``: one sampled point + seed -> one training run.

Two backends run the same loop (``harness.trial.run_trial``):

* ``direct``: the loop runs inside the Tune trial (one worker). Cheapest (~1-3 s of Ray overhead
  per trial here); Tune-level checkpoints, so an interrupted trial continues at its epoch.
* ``train``: the Tune trial is a *driver* that starts a Ray Train ``TorchTrainer`` (DDP over
  ``workers_per_trial`` processes/GPUs). Its run is named ``train-trial_id=<id>`` on the search's
  storage, so a restarted trial finds its own checkpoints and continues (Ray Train resumes a run by its
  name and storage path);
  metrics reach Tune through ``TuneReportCallback`` (rank 0's).

``auto`` picks ``train`` only when a trial needs more than one worker. The trial is resolved once
(``trial_spec.resolve_trial``); its spec and facts (``rows.TrialFacts``: model cost, hardware,
backend, seed, versions) go with its first report; a
cost that an objective names (``gmacs``, ``params_m``) goes with every report, as Tune reads
objectives from results.

A trial whose loss diverges is not retried (retries would diverge again): the trainable reports
``rows.FAILURE_FIELD`` and returns, and the row records it as ``failed`` with the reason.
"""

from __future__ import annotations

import dataclasses

import os
import platform
import socket
from dataclasses import dataclass
from typing import Any, Literal

from irstdlab.harness.reporting import TuneReporter
from irstdlab.harness.rows import COST_METRICS, FACTS_FIELD, FAILURE_FIELD, SPEC_FIELD, TrialFacts
from irstdlab.harness.trial_spec import resolve_trial
from irstdlab.harness.space_loader import SEED_INDEX_KEY, SearchSpace


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
    storage: str  # the search's storage root, a path or URI (Train runs live under <storage>/<search>/train)
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
    """GMACs and millions of parameters of the trial's model at its input size: counted on the meta
    device, once per architecture and size in this actor (``complexity.architecture_cost``)."""
    import torch

    from irstdlab.harness.complexity import architecture_cost
    from irstdlab.models import build as build_model

    # counting needs the architecture only: no initial weights are read (or downloaded) for it
    model_cfg = dataclasses.replace(cfg.model, pretrained=None)
    threads = torch.get_num_threads()
    try:
        report = architecture_cost(lambda: build_model(model_cfg), (cfg.data.size, cfg.data.size),
                                   dataclasses.asdict(model_cfg))
    finally:
        torch.set_num_threads(threads)
    return {"gmacs": float(report.gmacs), "params_m": report.params / 1e6}


def trial_facts(cfg: Any, backend: str, seed: int) -> TrialFacts:
    """What is true of this trial for its whole life, measured where it runs."""
    import ray
    import torch

    from irstdlab.harness.cli import package_version

    cost = model_cost(cfg)
    return TrialFacts(backend=backend, hardware=hardware(), seed=seed, gmacs=cost["gmacs"], params_m=cost["params_m"],
                      irstdlab_version=package_version(), torch_version=torch.__version__, ray_version=ray.__version__,
                      python_version=platform.python_version())


def objective_facts(space: SearchSpace, facts: TrialFacts) -> dict[str, Any]:
    """The facts an objective names (e.g. ``gmacs`` to minimise): these go into every report."""
    return {o.metric: facts.cost(o.metric) for o in space.objectives if o.metric in COST_METRICS}


def search_trial(config: dict[str, Any], ctx: SearchContext) -> None:
    """The Tune function trainable (wrapped with ``tune.with_parameters(search_trial, ctx=...)``)."""
    import sys
    import time

    from irstdlab.harness.ray_logs import quiet_worker_logs

    quiet_worker_logs()
    # the trial's own set-up (benchmarks/bench_search.py --part overhead): importing torch and the
    # training loop costs seconds in a fresh actor and nothing in a reused one (``warm_actor``)
    started = time.perf_counter()
    warm = "irstdlab.harness.trial" in sys.modules
    import torch  # noqa: F401 - timed here, used by the modules below
    import irstdlab.harness.trial  # noqa: F401
    timings = {"time/imports_s": time.perf_counter() - started, "time/warm_actor": float(warm)}

    started = time.perf_counter()
    params, seed = split_config(config)
    spec = resolve_trial(ctx.space, params, seed)
    cfg = spec.config
    facts = trial_facts(cfg, ctx.resources.resolved_backend(), seed)
    timings["time/trial_setup_s"] = time.perf_counter() - started  # resolving, model cost (FLOPs), facts
    record = {FACTS_FIELD: facts.to_json(), SPEC_FIELD: spec.to_json()}
    if ctx.resources.resolved_backend() == "train":
        _run_nested(cfg, ctx, record, objective_facts(ctx.space, facts))
        return
    from irstdlab.harness.trial import TrialDiverged, run_trial

    reporter = TuneReporter(record, {**objective_facts(ctx.space, facts), **timings})
    try:
        run_trial(cfg, reporter)
    except TrialDiverged as exc:
        reporter.report_failure(str(exc))


def _run_nested(cfg: Any, ctx: SearchContext, record: dict[str, str], every: dict[str, Any]) -> None:
    """Driver of a nested ``TorchTrainer``: DDP over the trial's workers, stable run name."""
    import ray.train
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from irstdlab.harness.ray_runtime import build_trainer, worker_failure
    from irstdlab.harness.search_storage import tune_storage_of

    class FactsReportCallback(TuneReportCallback):
        """Rank 0's report to Tune, with the trial's record on the first one and objective costs on all."""

        sent = False

        def after_report(self, run_context, metrics, checkpoint):
            first = {**metrics[0], **every}
            if not self.sent:
                first.update(record)
                self.sent = True
            super().after_report(run_context, [first] + list(metrics[1:]), checkpoint)

    res = ctx.resources
    storage_path, storage_filesystem = tune_storage_of(train_storage(ctx.storage, ctx.search))
    trainer = build_trainer(
        cfg, storage=storage_path, storage_filesystem=storage_filesystem,
        name=f"train-trial_id={ray.tune.get_context().get_trial_id()}",  # stable: a restarted trial resumes its own run
        workers=res.workers_per_trial, cpus_per_worker=res.cpus_per_worker, gpus_per_worker=res.gpus_per_worker,
        callbacks=[FactsReportCallback()],
        max_failures=1)  # one retry inside the trial (a lost worker); Tune retries the trial itself too
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as exc:
        failure = worker_failure(exc)
        if failure is None or not failure.diverged:
            raise
        # a diverged loss is final: the trial ends with its reason instead of being retried
        ray.tune.report({**every, **record, "epoch": 0, FAILURE_FIELD: failure.message})


def train_storage(storage: str, search: str) -> str:
    """The nested Train runs' storage reference (a path or URI) under the search's folder."""
    from irstdlab.harness.search_storage import join

    return join(storage, search, "train")


__all__ = ["SearchContext", "TrialResources", "hardware", "model_cost", "objective_facts", "search_trial",
           "split_config", "train_storage", "trial_facts"]
