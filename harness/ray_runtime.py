"""Ray plumbing for training: an embedded local Ray on loopback, and one trial as a Ray Train run.

The one place a trial's ``TorchTrainer`` is built (:func:`build_trainer`) and a worker's failure
is read back (:func:`worker_failure`), for ``irstdlab train`` (:func:`fit`) and for a search trial
on the ``train`` backend (``search_trainable``) alike.

Import this module only when Ray is needed (it imports Ray at the top; ``irstdlab --help``
must stay fast). Ray 2.60 specifics: Train V2 is the default; a run resumes automatically when
``(storage_path, name)`` is reused; the driver-side
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
    through the State API, which needs it (without it, a trial Tune stops early keeps its placement
    group and the next trial waits forever).
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


class TrainProgressCallback(UserCallback):
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


@dataclass(frozen=True)
class WorkerFailure:
    """A worker's own one-line error (bad config, bad data, a diverged loss), read from Ray's
    wrapper exception, whose text ends with the worker's traceback."""

    kind: str  # the worker's exception class
    message: str

    @property
    def diverged(self) -> bool:
        """A diverged loss: final, a retry would diverge again."""
        return self.kind == "TrialDiverged"

    def as_user_error(self) -> UserError:
        return UserError(f"trial failed: {self.message}" if self.diverged else self.message)


def worker_failure(exc: BaseException) -> WorkerFailure | None:
    """The worker's user error inside ``exc`` (the last one named), or None for anything else."""
    for text in (str(exc), repr(exc)):
        matches = _USER_ERROR.findall(text)
        if matches:
            kind, message = matches[-1]
            return WorkerFailure(kind, message.strip().split("\\n")[0][:500])
    return None


def build_trainer(cfg: TrialConfig, *, storage: str, name: str, workers: int, cpus_per_worker: float,
                  gpus_per_worker: float, callbacks: list[Any], max_failures: int,
                  storage_filesystem: Any = None) -> Any:
    """One trial as a ``TorchTrainer``: DDP over ``workers`` (gloo on CPU, NCCL on GPU), the config
    as canonical JSON, the newest two checkpoints kept (each holds the selected weights too).
    ``(storage, name)`` names the run: reusing it resumes the run from its last checkpoint. With a
    ``storage_filesystem`` (S3 ...), ``storage`` is the path inside it, as Train expects."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from irstdlab.harness.trial import train_worker

    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
    return TorchTrainer(
        train_worker,
        train_loop_config={"config_json": cfg.canonical_json()},
        torch_config=TorchConfig(backend="nccl" if gpus_per_worker else "gloo"),
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(gpus_per_worker), resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage, storage_filesystem=storage_filesystem,
                             callbacks=callbacks,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )


def fit(cfg: TrialConfig, *, storage: str | Path, name: str, workers: int = 1, gpus_per_worker: float = 0.0,
        cpus_per_worker: float = 1.0, storage_filesystem: Any = None, log_dir: str | Path | None = None
        ) -> TrainRunResult:
    """``irstdlab train`` on Ray: run one trial and wait for it. A failure is not retried (the user
    is watching, and ``irstdlab train`` again resumes from the last checkpoint). With a
    ``storage_filesystem`` (S3 ...), ``storage`` is the path inside it and the progress log goes to
    the driver-local ``log_dir``."""
    from irstdlab.harness.trial import per_worker_batch

    per_worker_batch(cfg.data.batch_size, workers)  # a global batch that does not divide fails before any worker starts
    if storage_filesystem is None:
        storage = Path(storage).resolve()
    run_dir = Path(log_dir) if log_dir is not None else Path(storage) / name
    trainer = build_trainer(cfg, storage=str(storage), name=name, workers=workers, cpus_per_worker=cpus_per_worker,
                            gpus_per_worker=gpus_per_worker, callbacks=[TrainProgressCallback(str(run_dir))],
                            max_failures=0, storage_filesystem=storage_filesystem)
    try:
        result = trainer.fit()
    except Exception as exc:  # TrainingFailedError wraps the worker's exception text
        failure = worker_failure(exc)
        if failure is None:
            raise
        raise failure.as_user_error() from exc
    if result.error is not None:
        failure = worker_failure(result.error)
        raise failure.as_user_error() if failure else result.error
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return TrainRunResult(dict(result.metrics or {}), checkpoint, str(run_dir))


__all__ = ["TrainProgressCallback", "TrainRunResult", "WorkerFailure", "build_trainer", "check_loopback", "fit",
           "init_local_ray", "worker_failure"]
