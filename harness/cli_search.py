"""``irstdlab search``: run, resume or preview a hyper-parameter search (see harness/search.py)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from irstdlab.harness.cli_args import CPUS, GPUS, MAX_CPUS, SEED, WORKERS, int_range


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "search", help="run a Ray Tune search (Optuna + ASHA) over a YAML search space",
        description="Run a search over SPACE (a shipped name such as quickstart, bafe_ablation, paper_grid, "
                    "detectors, or a YAML file). Without arguments: quickstart on an embedded local Ray, CPU, "
                    "results under ./irstdlab-runs/<name>/ and the leaderboard in ./irstdlab-runs/leaderboard/.")
    p.add_argument("space", nargs="?", default=None, metavar="SPACE", help="search space (default: quickstart)")
    add_search_arguments(p)
    p.set_defaults(handler=run)


def add_search_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of a search (not its SPACE): `irstdlab reproduce` takes the same ones."""
    p.add_argument("--name", help="search name (default: the space's name); names the folder under --storage")
    p.add_argument("--storage", default="./irstdlab-runs",
                   help="results root: a folder (on a cluster one every node can reach) or a URI such as "
                        "s3://bucket/prefix (default: ./irstdlab-runs)")
    p.add_argument("--address", help="Ray cluster to join ('auto' or an address; default: RAY_ADDRESS, "
                                     "else an embedded local Ray on 127.0.0.1)")
    p.add_argument("--num-samples", type=int_range(1, 1_000_000), help="configurations to sample (grid: at most this many)")
    p.add_argument("--max-epochs", type=int_range(1, 100_000), help="override the space's full-fidelity epochs")
    p.add_argument("--max-concurrent", type=int_range(1, 100_000), help="trials running at once (default: as resources allow)")
    p.add_argument("--workers-per-trial", type=WORKERS, default=1, help="Ray Train workers per trial (DDP)")
    p.add_argument("--gpus-per-worker", type=GPUS, default=0.0)
    p.add_argument("--cpus-per-worker", type=CPUS, default=1.0)
    p.add_argument("--trial-backend", choices=("auto", "direct", "train"), default="auto",
                   help="direct: the loop runs in the Tune trial; train: a nested TorchTrainer; "
                        "auto: train only for more than one worker")
    p.add_argument("--scheduler", choices=("asha", "none"), default="asha")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="fixed config override on top of the space, e.g. --set data.root=/data/SIRSTdevkit")
    p.add_argument("--searcher-seed", type=SEED, help="override the space's searcher seed")
    p.add_argument("--num-cpus", type=MAX_CPUS, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--resume", action="store_true", help="continue the search --name under --storage")
    p.add_argument("--more", type=int_range(1, 1_000_000), metavar="K",
                   help="with --resume: add K sampled configurations (x seeds) to the search, finished or not")
    p.add_argument("--retry-failed", action="store_true",
                   help="with --resume: rerun the trials that raised an error (their rows are replaced)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the plan; start nothing")


def run(args: argparse.Namespace) -> int:
    from irstdlab.harness.paths import ensure_writable_dir, validate_name

    if args.name is not None:  # cheap checks before the imports below (Ray, torch) take seconds
        validate_name(args.name, "--name")
    if "://" not in args.storage:
        ensure_writable_dir(args.storage, "--storage")
    elif not args.dry_run:  # unusable storage: one line within seconds, before Ray and torch load
        from irstdlab.harness.search_storage import open_storage

        open_storage(args.storage, args.name or "-")
    from irstdlab.harness.errors import ConfigError
    from irstdlab.harness.search import SearchOptions, resume_command, run_search
    from irstdlab.harness.search_trainable import TrialResources

    if args.trial_backend == "direct" and args.workers_per_trial > 1:
        raise ConfigError("--trial-backend direct runs one worker; use train (or auto) for --workers-per-trial > 1")
    opts = SearchOptions(
        space=args.space, name=args.name, storage=args.storage, address=args.address,
        num_samples=args.num_samples, max_epochs=args.max_epochs, max_concurrent=args.max_concurrent,
        resources=TrialResources(args.trial_backend, args.workers_per_trial, args.cpus_per_worker,
                                 args.gpus_per_worker),
        scheduler=args.scheduler, overrides=tuple(args.overrides), searcher_seed=args.searcher_seed,
        resume=args.resume, dry_run=args.dry_run, num_cpus=args.num_cpus, more=args.more,
        retry_failed=args.retry_failed)
    outcome = run_search(opts)
    if outcome is None:
        return 0
    counts = ", ".join(f"{n} {s}" for s, n in sorted(outcome.rows.items())) or "no rows"
    print(f"\nsearch {outcome.name}: {outcome.final_rows}/{outcome.planned} trials finished ({counts})")
    if outcome.top is not None and len(outcome.top):
        print("best full-fidelity trials:")
        print(outcome.top.to_string(index=False))
    print(f"leaderboard:   {outcome.leaderboard_dir}   ({leaderboard_command(args.storage, outcome.name)})")
    print(f"optuna study:  {outcome.journal}   (study {outcome.study_name}; "
          f"{dashboard_hint(args.storage, outcome.name)})")
    print(f"trials:        {outcome.search_dir}   ({tensorboard_hint(outcome.search_dir)}; "
          f"Ray's own log: {Path(outcome.work_dir or outcome.search_dir) / 'ray.log'})")
    if outcome.interrupted:
        print(f"irstdlab: search interrupted; resume with: {resume_command(outcome.name, _storage(args))}",
              file=sys.stderr)
        return 130
    return 0


def leaderboard_command(storage: str, name: str) -> str:
    """The follow-up command that shows this search's rows, runnable as printed from this folder."""
    from irstdlab.harness.search import DEFAULT_STORAGE

    where = "" if os.path.normpath(storage) == os.path.normpath(DEFAULT_STORAGE) else f" --storage {shlex.quote(storage)}"
    return f"irstdlab leaderboard show{where} --search {shlex.quote(name)}"


def dashboard_hint(storage: str, name: str) -> str:
    """optuna-dashboard is an optional extra: print the command only where it is installed."""
    import importlib.util

    from irstdlab.harness.search import DEFAULT_STORAGE

    default = os.path.normpath(storage) == os.path.normpath(DEFAULT_STORAGE)
    where = "" if default else f" --storage {shlex.quote(storage)}"
    command = f"irstdlab dashboard{where} {shlex.quote(name)}"
    if importlib.util.find_spec("optuna_dashboard") is not None:
        return f"live view: {command}"
    return "live view: pip install 'irstdlab[dashboard]', then " + command


def tensorboard_hint(search_dir: object) -> str:
    """Tune writes TensorBoard event files into each trial folder of the search."""
    import importlib.util

    command = f"tensorboard --logdir {shlex.quote(str(search_dir))}"
    if importlib.util.find_spec("tensorboard") is not None:
        return command
    return f"TensorBoard event files; once tensorboard is installed: {command}"


def _storage(args: argparse.Namespace) -> str:
    import shlex

    return shlex.quote(args.storage)  # the hint is pasted into a shell
