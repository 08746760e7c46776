"""`irstdlab train` and `irstdlab eval`.

``train`` runs one trial from a preset or a YAML file (plus ``--set`` overrides) as a Ray Train
run on an embedded local Ray (``--workers``, ``--gpus-per-worker``), or in this process with
``--no-ray``. Results, checkpoints, ``progress.jsonl`` and TensorBoard logs go under
``--storage/--name``. ``--json`` makes the last line of standard output one JSON object with
``metrics``, ``best_epoch``, ``checkpoint`` and ``config_hash``. ``--dry-run`` validates the config
(and builds the model on the meta device), prints it as YAML (``--json``: one object with ``config``,
``config_hash``, ``source`` and ``run``) and starts nothing: no Ray, no run folder.

``eval`` loads a checkpoint with ``torch.load(weights_only=True)``, evaluates its selected
weights on a split, and writes ``metrics.json``, a PR-curve PNG and optionally detections.

torch and Ray are imported inside the handlers so that ``irstdlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from irstdlab.harness.cli_args import GPUS, MAX_CPUS, NON_NEGATIVE_INT, WORKERS, int_range
from irstdlab.harness.errors import ConfigError, UserError
from irstdlab.harness.paths import ensure_writable_dir, safe_label, validate_name
from irstdlab.harness.preflight import (check_same_config, load_checked, missing_dirs, preflight_data,
                                           remove_unstarted, resume_hint)

DEFAULT_STORAGE = "./irstdlab-runs"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train one detector (a preset or a YAML config)",
                              description="Train one trial; prints one line per epoch and a final summary.")
    p.add_argument("config", nargs="?", default="quickstart", metavar="CONFIG|PRESET",
                   help="a YAML file or a preset name (default: quickstart)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (YAML-parsed), e.g. --set schedule.epochs=2; repeatable")
    p.add_argument("--workers", type=WORKERS, default=1, help="Ray Train workers (DDP); default 1")
    p.add_argument("--gpus-per-worker", type=GPUS, default=0.0, help="GPUs per worker (0 = CPU, gloo)")
    p.add_argument("--no-ray", action="store_true", help="train in this process without Ray")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help=f"results folder or storage URI such as s3://bucket/prefix (default {DEFAULT_STORAGE})")
    p.add_argument("--name", default=None, help="run name (default: <config>-<hash>-<time>); reusing one resumes it")
    p.add_argument("--address", default=None, help="join an existing Ray cluster (e.g. auto) instead of starting one")
    p.add_argument("--num-cpus", type=MAX_CPUS, default=None, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object with the results")
    p.add_argument("--dry-run", action="store_true",
                   help="validate and print the resolved config (YAML; with --json one JSON object); start nothing")
    p.set_defaults(handler=cmd_train)

    e = subparsers.add_parser("eval", help="evaluate a checkpoint on a split (metrics JSON, PR curve)")
    e.add_argument("checkpoint", help="a checkpoint folder or its checkpoint.pt")
    e.add_argument("--dataset", choices=("synthetic", "densesirst", "sirstv2"), default=None,
                   help="data set (default: the one the checkpoint was trained on)")
    e.add_argument("--root", default=None, help="data set root (for on-disk layouts)")
    e.add_argument("--split", default="test", help="split name, or train/val/test role (default test)")
    e.add_argument("--protocol", choices=("clean", "reference"), default=None,
                   help="box geometry and AP arithmetic (default: the checkpoint's)")
    e.add_argument("--out", default=None, help="output folder (default: <checkpoint>/eval-<split>)")
    e.add_argument("--show", type=NON_NEGATIVE_INT, default=0, metavar="N", help="also draw detections on the first N images")
    e.add_argument("--batch-size", type=int_range(1, 4096), default=None, help="evaluation batch size")
    e.set_defaults(handler=cmd_eval)


# ------------------------------------------------------------------------------------ train
def _run_name(config: str, config_hash: str) -> str:
    label = Path(config).stem if config.endswith((".yaml", ".yml")) else config
    return f"{safe_label(label)}-{config_hash}-{time.strftime('%Y%m%d-%H%M%S')}"


def _summary(metrics: dict[str, Any], checkpoint: str | None, cfg: Any, run_dir: Path, wall: float) -> dict[str, Any]:
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    return {
        "metrics": clean,
        "best_epoch": metrics.get("best_epoch"),
        "checkpoint": checkpoint,
        "config_hash": cfg.config_hash,
        "run_dir": str(run_dir),
        "protocol": cfg.data.protocol,
        "selection": cfg.data.selection,
        "wall_time_s": round(wall, 2),
    }


def _dry_run(args: argparse.Namespace, cfg: Any) -> int:
    """The resolved config and how it would run; no Ray, no run folder, no data read.

    The model is built once on torch's ``meta`` device (shapes only, no weights, no memory), so a
    combination the config check cannot see (e.g. a head width the norm groups do not divide in
    one detector's builder) fails here rather than on the cluster.
    """
    import dataclasses

    import torch
    import yaml

    from irstdlab.models import build

    try:
        with torch.device("meta"):
            build(dataclasses.replace(cfg.model, pretrained=None))
    except ValueError as exc:
        raise ConfigError(str(exc) if str(exc).startswith("model.") else f"model: {exc}") from None

    plan = {
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash,
        "source": args.config,
        "run": {"ray": not args.no_ray, "workers": args.workers, "gpus_per_worker": args.gpus_per_worker,
                "storage": str(args.storage), "name": args.name},
    }
    print(f"irstdlab train --dry-run: {args.config} is valid (config {cfg.config_hash}, protocol "
          f"{cfg.data.protocol}, selection {cfg.data.selection}); nothing was started", file=sys.stderr)
    if args.json:
        print(json.dumps(plan, sort_keys=True))
    else:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import yaml

    if args.name is not None:
        validate_name(args.name, "--name")
    if args.no_ray and args.workers != 1:
        raise ConfigError("--no-ray runs one process: --workers must be 1")
    if args.no_ray and args.address:
        raise ConfigError("--address joins a Ray cluster; it cannot be combined with --no-ray")
    from irstdlab.leaderboards.storage_uri import is_uri

    if is_uri(args.storage) and not args.dry_run and not args.no_ray:  # before torch loads: seconds, not tens
        from irstdlab.harness.search_storage import open_storage

        open_storage(args.storage, args.name or "-")
    cfg = load_checked(args.config, args.overrides)
    cfg.check_trainable(args.config or "defaults")  # refused before anything is written
    from irstdlab.harness.trial import per_worker_batch

    per_worker_batch(cfg.data.batch_size, args.workers)  # before Ray starts, not inside fit()
    if args.dry_run:
        return _dry_run(args, cfg)
    name = args.name or _run_name(args.config, cfg.config_hash)
    if is_uri(args.storage):
        return _train_on_storage(args, cfg, name)
    storage = ensure_writable_dir(args.storage, "--storage")
    run_dir = storage / name
    ensure_writable_dir(run_dir, "--name")
    if (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir}: run {name!r} already finished; choose another --name")
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    check_same_config(run_dir, config_text, name)
    if not (args.address or os.environ.get("RAY_ADDRESS")):  # on a cluster the root is the workers' path
        preflight_data(cfg)
    created = missing_dirs(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        (run_dir / "config.yaml").write_text(config_text)
        return _train(args, cfg, name, storage, run_dir)
    except KeyboardInterrupt:
        print(f"irstdlab: train interrupted; resume with: {resume_hint(args, name)}", file=sys.stderr)
        return 130
    except BaseException:
        if created:
            remove_unstarted(created)
        raise


def _train_on_storage(args: argparse.Namespace, cfg: Any, name: str) -> int:
    """``--storage URI``: checkpoints and the run's config/summary live in the storage (Train's
    ``storage_filesystem``); progress logs and Ray's log stay in a driver-local work folder.
    Reusing ``--name`` resumes the run from its last checkpoint there, from any machine."""
    import yaml

    from irstdlab.harness import search_storage

    if args.no_ray:
        raise ConfigError(f"--storage {args.storage}: --no-ray keeps checkpoints on this machine; "
                          f"use a folder for --storage, or drop --no-ray")
    where = search_storage.open_storage(args.storage, name)  # one line, exit 2, before Ray starts
    if not where.remote:  # file:///...: a local folder after all
        return _train(args, cfg, name, Path(where.root.path), Path(where.root.path) / name)
    if search_storage.exists(where.file("summary.json")):
        raise UserError(f"{where.shown()}: run {name!r} already finished; choose another --name")
    config_text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    if search_storage.exists(where.file("config.yaml")) and \
            search_storage.read_bytes(where.file("config.yaml")).decode(errors="replace") != config_text:
        raise ConfigError(f"{where.shown('config.yaml')}: run {name!r} was started with a different config; "
                          f"resume it with the same config and --set values, or choose another --name")
    if not (args.address or os.environ.get("RAY_ADDRESS")):
        preflight_data(cfg)
    search_storage.write_bytes(where.file("config.yaml"), config_text.encode())
    where.work_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _train(args, cfg, name, where, where.work_dir)
    except KeyboardInterrupt:
        print(f"irstdlab: train interrupted; resume with: {resume_hint(args, name)}", file=sys.stderr)
        return 130


def _train(args: argparse.Namespace, cfg: Any, name: str, storage: Any, run_dir: Path) -> int:
    """``storage``: the local results folder, or a ``search_storage.SearchStorage`` (a URI)."""
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731 - progress goes to stderr
    where = "this process (no Ray)" if args.no_ray else f"Ray Train, {args.workers} worker(s)"
    log(f"irstdlab train: {args.config} (config {cfg.config_hash}, protocol {cfg.data.protocol}, "
        f"selection {cfg.data.selection}) on {where}; results in "
        f"{run_dir if isinstance(storage, Path) else storage.shown()}")

    start = time.perf_counter()
    if args.no_ray:
        from irstdlab.harness.reporting import LocalReporter
        from irstdlab.harness.trial import run_trial

        reporter = LocalReporter(run_dir, resume=True, echo=log)
        try:
            metrics = run_trial(cfg, reporter)
        finally:
            reporter.runlog.close()
        if not metrics:
            raise UserError(f"{run_dir}: nothing left to train (all {cfg.schedule.epochs} epochs are done)")
        checkpoint = str(reporter.last_checkpoint) if reporter.last_checkpoint else None
    else:
        from irstdlab.harness.ray_logs import attach_log_file, quiet_reporter_env, route_ray_logs

        quiet_reporter_env()
        from irstdlab.harness import ray_runtime

        route_ray_logs()  # Ray's own chatter goes to <run>/ray.log, its warnings still to the console
        attach_log_file(run_dir / "ray.log")
        # the epoch lines are printed by the Train controller actor, so its output must reach us
        ray_runtime.init_local_ray(num_cpus=args.num_cpus, address=args.address)
        try:
            if isinstance(storage, Path):
                result = ray_runtime.fit(cfg, storage=storage, name=name, workers=args.workers,
                                         gpus_per_worker=args.gpus_per_worker)
            else:
                path, filesystem = storage.tune_storage()
                result = ray_runtime.fit(cfg, storage=path, name=name, workers=args.workers,
                                         gpus_per_worker=args.gpus_per_worker, storage_filesystem=filesystem,
                                         log_dir=run_dir)
        except SystemExit:  # Ray Train's own Ctrl-C handler exits the driver from inside fit()
            raise KeyboardInterrupt from None
        metrics, checkpoint = result.metrics, result.checkpoint
        if int(metrics.get("epoch") or 0) < cfg.schedule.epochs:
            raise KeyboardInterrupt  # a gracefully aborted run: resumable, so no summary.json
    if not isinstance(storage, Path) and checkpoint is not None:  # a path inside the bucket -> its URI
        checkpoint = storage.root.join(checkpoint.removeprefix(storage.root.path)).uri
    summary = _summary(metrics, checkpoint, cfg, run_dir, time.perf_counter() - start)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    if not isinstance(storage, Path):
        from irstdlab.harness import search_storage

        summary["run_dir"] = storage.shown()
        search_storage.write_bytes(storage.file("summary.json"), json.dumps(summary, indent=2, sort_keys=True).encode())
    m = summary["metrics"]
    log(f"done in {summary['wall_time_s']:.1f} s: best epoch {summary['best_epoch']} "
        f"val mAP07 {m.get('best/val/' + cfg.eval.select_metric, float('nan')) or 0:.3f}; "
        f"test mAP07 {m.get('test/mAP07') or 0:.3f} mAP12 {m.get('test/mAP12') or 0:.3f} "
        f"recall {m.get('test/recall') or 0:.3f}; checkpoint {checkpoint}")
    if cfg.data.selection == "reference":
        log("note: selection=reference (checkpoint chosen on the test split): test numbers are optimistic")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0


# ------------------------------------------------------------------------------------ eval
def cmd_eval(args: argparse.Namespace) -> int:
    import dataclasses

    import torch
    from torch.utils.data import DataLoader

    from irstdlab.datasets.build import ROLES, collate_eval
    from irstdlab.harness.evaluate import curves, eval_dataset, predict, score
    from irstdlab.harness.trial import load_selected_model

    validate_name(args.split, "--split")  # it names a split file and the default eval-<split> folder
    model, cfg, state = load_selected_model(args.checkpoint)
    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else (ckpt if ckpt.is_dir() else ckpt.parent) / f"eval-{args.split}"
    ensure_writable_dir(out, "--out")  # before any evaluation work
    changes: dict[str, Any] = {}
    if args.dataset:
        changes["dataset"] = args.dataset
        changes["root"] = args.root
    elif args.root:
        changes["root"] = args.root
    if args.protocol:
        changes["protocol"] = args.protocol
    role = args.split if args.split in ROLES else "test"
    if args.split not in ROLES:
        changes["test_split"] = args.split
    if args.batch_size:
        changes["eval_batch_size"] = args.batch_size
    from irstdlab.datasets.build import IN_MEMORY_SPLITS

    data_cfg = dataclasses.replace(cfg.data, **changes)
    known = (*ROLES, *IN_MEMORY_SPLITS)
    if data_cfg.dataset == "synthetic" and data_cfg.root is None and args.split not in known:
        raise ConfigError(f"--split {args.split}: the in-memory synthetic set has only the splits "
                          f"{', '.join(known)} (give --root for a set written by `irstdlab data synth`)")
    try:
        data_cfg.validate()
    except ValueError as exc:
        raise ConfigError(f"data.{exc}") from None
    keep_original = cfg.eval.needs_noco or data_cfg.dataset == "sirstv2"  # mNoCoAP: OSCAR's metric on SIRST-V2
    dataset = eval_dataset(data_cfg, role, seed=cfg.train.seed, keep_original=keep_original)
    loader = DataLoader(dataset, batch_size=data_cfg.eval_batch_size, shuffle=False, collate_fn=collate_eval)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    preds = predict(model, loader, device)
    metrics = score(preds, data_cfg.protocol)
    out.mkdir(parents=True, exist_ok=True)
    report = {"checkpoint": str(ckpt), "config_hash": state["config_hash"], "epoch": state["epoch"],
              "best_epoch": state["best_epoch"], "dataset": data_cfg.dataset, "split": args.split,
              "protocol": data_cfg.protocol, "metrics": metrics}
    (out / "metrics.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    _plot_pr(curves(preds, data_cfg.protocol), metrics, out / "pr_curve.png")
    if args.show > 0:
        _draw_detections(dataset, preds, args.show, out)
    print(f"wrote {out}/metrics.json and pr_curve.png", file=sys.stderr)
    print(json.dumps(report, sort_keys=True))
    return 0


def _plot_pr(curve: dict[str, Any], metrics: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(curve["recall"], curve["precision"], lw=1.5)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"mAP07 {metrics['mAP07']:.3f}  mAP12 {metrics['mAP12']:.3f}  recall {metrics['recall']:.3f}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _draw_detections(dataset: Any, preds: Any, count: int, out: Path, score_thr: float = 0.3) -> None:
    """Original images with GT (green) and detections above ``score_thr`` (red)."""
    import cv2
    import numpy as np

    for i in range(min(count, len(preds))):
        image = cv2.cvtColor(dataset.base[i].image, cv2.COLOR_GRAY2BGR)
        for box in preds.gt_boxes[i]:
            x0, y0, x1, y1 = np.round(box).astype(int)
            cv2.rectangle(image, (x0 - 1, y0 - 1), (x1, y1), (0, 200, 0), 1)
        for box, s in zip(preds.boxes[i], preds.scores[i]):
            if s >= score_thr:
                x0, y0, x1, y1 = np.round(box).astype(int)
                cv2.rectangle(image, (x0 - 2, y0 - 2), (x1 + 1, y1 + 1), (0, 0, 255), 1)
        cv2.imwrite(str(out / f"det_{i:03d}_{preds.ids[i]}.png"), image)


__all__ = ["cmd_eval", "cmd_train", "register"]
