"""Ray plumbing for training: an embedded local Ray on loopback, and one trial as a Ray Train run.

Import this module only when Ray is needed (it imports Ray at the top; ``irstdlab --help``
must stay fast). Ray 2.60 specifics (RAY_TUNE_OPTUNA_NOTES §1): Train V2 is the default; a
run resumes automatically when ``(storage_path, name)`` is reused; the driver-side
``UserCallback`` sees every report, which is where progress lines and TensorBoard logs are
written, so the Ray path leaves the same files as ``--no-ray``.
"""

from __future__ import annotations

import os

# A plain ray.init() binds to the host's external address; these keep every Ray process on
# loopback (must be set before Ray is imported).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # Train V2 (the 2.60 default), also for nested Train runs

import re  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import ray  # noqa: E402
from ray.train.v2.api.callback import UserCallback  # noqa: E402

from irstdlab.harness.config import TrialConfig  # noqa: E402
from irstdlab.harness.errors import UserError  # noqa: E402
from irstdlab.harness.reporting import RunLog  # noqa: E402

LOOPBACK = "127.0.0.1"


def init_local_ray(num_cpus: int | None = None, num_gpus: int | None = None, address: str | None = None,
                   dashboard: bool = True, log_to_driver: bool = True) -> dict[str, Any]:
    """Start (or join, with ``address`` or ``RAY_ADDRESS``) Ray. A local start binds to 127.0.0.1.

    ``log_to_driver=False`` keeps the actors' own output (Train's controller, Ray's clean-up threads)
    in Ray's session logs; errors still reach the driver as exceptions. The dashboard stays on by default: Train V2 frees the placement groups of stopped runs
    through the State API, which needs it (RAY_TUNE_OPTUNA_NOTES E5).
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=log_to_driver)
        else:
            # address="local": always a new embedded instance, never another process's cluster
            ray.init(address="local", _node_ip_address=LOOPBACK, dashboard_host=LOOPBACK, include_dashboard=dashboard,
                     num_cpus=num_cpus, num_gpus=num_gpus, log_to_driver=log_to_driver)
            check_loopback()
    return {"nodes": len(ray.nodes()), "resources": ray.cluster_resources()}


def check_loopback() -> None:
    """Every node of the embedded Ray must listen on 127.0.0.1 only."""
    for node in ray.nodes():
        if node.get("NodeManagerAddress") != LOOPBACK:
            raise RuntimeError(f"Ray node bound to {node.get('NodeManagerAddress')!r}, expected {LOOPBACK}")


class ProgressCallback(UserCallback):
    """Driver side (Train controller): rank 0's metrics -> progress.jsonl, TensorBoard, a console line."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self._log: RunLog | None = None

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if self._log is None:
            self._log = RunLog(self.run_dir, echo=lambda line: print(line, file=sys.stderr, flush=True))
        record = dict(metrics[0])
        if checkpoint is not None:
            record["checkpoint"] = checkpoint.path
        self._log.record(record)


@dataclass
class TrainRunResult:
    metrics: dict[str, Any]
    checkpoint: str | None
    run_dir: str


_USER_ERROR = re.compile(r"(TrialDiverged|ConfigError|DatasetError|UserError): (.+)")


def fit(cfg: TrialConfig, *, storage: str | Path, name: str, workers: int = 1, gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 1.0) -> TrainRunResult:
    """Run one trial as a Ray Train ``TorchTrainer`` (gloo on CPU, NCCL on GPU) and wait for it."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from irstdlab.harness.trial import per_worker_batch, train_worker

    per_worker_batch(cfg.data.batch_size, workers)  # a global batch that does not divide fails before any worker starts
    storage = Path(storage).resolve()
    run_dir = storage / name
    resources = {"CPU": cpus_per_worker}
    if gpus_per_worker:
        resources["GPU"] = gpus_per_worker
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config_json": cfg.canonical_json()},
        torch_config=TorchConfig(backend="nccl" if gpus_per_worker else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(gpus_per_worker),
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            # every checkpoint holds the selected (best) weights too, so the newest two suffice
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=0),
            callbacks=[ProgressCallback(str(run_dir))],
        ),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError wraps the worker's exception text
        raise _as_user_error(exc) from exc
    if result.error is not None:
        raise _as_user_error(result.error)
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return TrainRunResult(dict(result.metrics or {}), checkpoint, str(run_dir))


def _as_user_error(exc: BaseException) -> BaseException:
    """A worker's one-line failure (divergence, bad config, bad data) as a one-line error."""
    matches = _USER_ERROR.findall(str(exc))
    if matches:
        kind, message = matches[-1]
        return UserError(f"trial failed: {message.strip()}") if kind == "TrialDiverged" else UserError(message.strip())
    return exc


__all__ = ["ProgressCallback", "TrainRunResult", "check_loopback", "fit", "init_local_ray"]
