"""What `irstdlab train` checks before it starts, how --set errors are worded, and the clean-up.

Loading the config with ``--set`` blamed as ``--set key``, refusing an empty config file, opening
the data splits before a run folder exists, refusing a reused name with another config, the command
that resumes an interrupted run, and removing a run folder that a failed start left without a
finished epoch. ``blame_set`` rewords search-space errors the same way.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from irstdlab.harness.errors import ConfigError


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The dotted keys of ``--set key=value`` items, in order."""
    from irstdlab.harness import configtree

    return [".".join(configtree.parse_override(o)[0]) for o in overrides]


def check_not_empty(config: str) -> None:
    """A config file with no settings would silently train the defaults: refuse it."""
    import yaml

    path = Path(config)
    if not (path.suffix in (".yaml", ".yml") or path.exists()) or not path.is_file():
        return  # a preset name, or a missing file that load_config reports
    try:
        data = yaml.safe_load(path.read_bytes())
    except (yaml.YAMLError, OSError):
        return  # load_config reports it with its line
    if data is None or data == {}:
        raise ConfigError(f"{path}: the config file is empty; give at least one section "
                          f"(data, model, optim, ...) or use a preset such as quickstart")


def load_checked(config: str, overrides: list[str]) -> Any:
    """load_config, blaming ``--set key`` when the bad value came from an override."""
    check_not_empty(config)  # before the imports below: they take seconds
    from irstdlab.harness.config import load_config

    keys = override_keys(overrides)
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        rest = str(exc).partition(" with --set: ")[2]
        for key in reversed(keys):  # the last --set of a key wins
            if rest.startswith((f"{key}: ", f"{key}[")):
                raise ConfigError(f"--set {rest}") from None
        if rest:
            load_config(config)  # an error of the file itself is reported as such
            raise ConfigError(f"--set {', '.join(keys)}: with these values, {rest}") from None
        raise
    from irstdlab.models import list_models

    if cfg.model.name not in list_models():  # else the model build fails after the run folder exists
        where = "--set model.name" if "model.name" in keys else f"{config}: model.name"
        raise ConfigError(f"{where}: {cfg.model.name!r} is not a registered detector "
                          f"(registered: {', '.join(list_models())})")
    return cfg


def resume_hint(args: argparse.Namespace, name: str) -> str:
    import shlex

    words = ["irstdlab", "train", args.config]
    for item in args.overrides:
        words += ["--set", item]
    words += ["--storage", args.storage, "--name", name]
    if args.no_ray:
        words.append("--no-ray")
    if args.workers != 1:
        words += ["--workers", str(args.workers)]
    if args.gpus_per_worker:
        words += ["--gpus-per-worker", f"{args.gpus_per_worker:g}"]
    if args.address:
        words += ["--address", args.address]
    if args.num_cpus:
        words += ["--num-cpus", str(args.num_cpus)]
    return shlex.join(words)


def missing_dirs(path: Path) -> list[Path]:
    """``path`` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing


def remove_unstarted(created: list[Path]) -> None:
    """Remove the run folder (and the empty parents) this command created, if no epoch finished."""
    import shutil

    run_dir = created[0]
    progress = run_dir / "progress.jsonl"
    if progress.is_file() and progress.stat().st_size > 0:
        return  # an epoch finished: its checkpoint lets the run resume
    shutil.rmtree(run_dir, ignore_errors=True)
    for parent in created[1:]:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break


def check_same_config(run_dir: Path, config_text: str, name: str) -> None:
    """Reusing a name resumes the run: refuse a different config before touching its files."""
    path = run_dir / "config.yaml"
    if path.is_file() and path.read_text(errors="replace") != config_text:
        raise ConfigError(f"{path}: run {name!r} was started with a different config; resume it with the "
                          f"same config and --set values, or choose another --name")


def preflight_data(cfg: Any) -> None:
    """Open every split a local run reads (cheap: split files and image names), before any folder
    is made: a wrong root or a missing split is one line, not a failed run."""
    from irstdlab.datasets.build import ROLES
    from irstdlab.datasets.errors import DatasetError
    from irstdlab.datasets.readers import open_dataset

    if cfg.data.root is None:
        return  # generated in memory
    for name in dict.fromkeys(cfg.data.split_names()[role] for role in ROLES):
        reader = open_dataset(cfg.data.dataset, cfg.data.root, split=name, protocol=cfg.data.protocol,
                              load_masks=False)
        if len(reader) == 0:
            raise DatasetError(reader.split_file, "split is empty")


def blame_set(message: str, overrides: Sequence[str], only_named: bool = False) -> ConfigError:
    """A space error caused by ``--set`` values, reworded to name the option (and the key).

    ``only_named``: the error may come from the file too; reword it only when it names a --set key.
    """
    keys = override_keys(overrides)
    for key in reversed(keys):  # the last --set of a key wins
        for marker in (f": overrides: {key}: ", f": {key}: "):
            if marker in message:
                return ConfigError(f"--set {key}: {message.split(marker, 1)[1]}")
    if only_named:
        return ConfigError(message)
    _, marker, rest = message.partition(": overrides: ")
    return ConfigError(f"--set {', '.join(keys)}: with these values, {rest if marker else message}")


__all__ = ["blame_set", "check_not_empty", "check_same_config", "load_checked", "missing_dirs", "override_keys",
           "preflight_data", "remove_unstarted", "resume_hint"]
