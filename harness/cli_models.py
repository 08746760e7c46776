"""`irstdlab models ...`: list the registered detectors, show one's size and cost, and check a
recipe's assignment coverage (``harness/coverage.py``) before any training.

torch and the models are imported inside the handlers so `irstdlab --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from irstdlab.harness.cli_args import int_range
from irstdlab.harness.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list detectors, show parameters and GMACs")
    sub = parser.add_subparsers(dest="models_command", metavar="SUBCOMMAND")

    p_list = sub.add_parser("list", help="registered detector names with a one-line description")
    p_list.set_defaults(handler=cmd_list)

    p_info = sub.add_parser("info", help="parameters (all / trainable) and GMACs of one detector")
    p_info.add_argument("name", help="a name from `irstdlab models list`")
    p_info.add_argument("--size", type=int_range(32, 4096), default=512,
                        help="square input side in pixels, 32-4096 (default 512)")
    p_info.add_argument("--backbone", default=None, help="backbone, e.g. resnet18 (default: the config default)")
    p_info.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a model config field (YAML value), e.g. --set num_levels=3; repeatable",
    )
    p_info.add_argument("--memory", action="store_true",
                        help="also the peak memory of one training step at --batch-size: measured on a CUDA "
                             "device (bf16 autocast, as train.amp auto), estimated on the CPU (a lower bound)")
    p_info.add_argument("--batch-size", type=int_range(1, 1024), default=2, metavar="N",
                        help="batch of the --memory step, 1-1024 (default 2)")
    p_info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p_info.set_defaults(handler=cmd_info)

    p_cov = sub.add_parser(
        "coverage", help="which ground-truth boxes the recipe's own assignment makes positive (recall ceiling)",
        description="For every ground-truth box of a split, whether the detector's own target assignment gives it "
                    "at least one positive location or anchor; by level and by size, with the recall ceiling and "
                    "the best 11-point mAP it allows. No training, no weights.",
    )
    p_cov.add_argument("config", metavar="CONFIG|PRESET", help="a YAML trial config or a preset name")
    p_cov.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a trial config value, e.g. --set data.root=/data/SIRSTdevkit; repeatable",
    )
    p_cov.add_argument("--split", default="test", help="train/val/test (the recipe's roles) or a split name, e.g. test_v2")
    p_cov.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p_cov.set_defaults(handler=cmd_coverage)

    parser.set_defaults(handler=lambda args: _print_help(parser))


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_list(args: argparse.Namespace) -> int:
    from irstdlab.models import describe, list_models

    names = list_models()
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {describe(name)}")
    return 0


def model_config_from_args(name: str, backbone: str | None, overrides: list[str]) -> Any:
    """A validated ModelConfig from the CLI's name, --backbone and --set values."""
    from irstdlab.harness.configtree import parse_override
    from irstdlab.models import ModelConfig, list_models

    if name not in list_models():
        raise ConfigError(f"model.name: unknown model {name!r}; registered: {', '.join(list_models())}")
    values: dict[str, Any] = {"name": name}
    if backbone is not None:
        values["backbone"] = backbone
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "model":  # accept the trial-config spelling model.x=...
            keys = keys[1:]
        if len(keys) != 1:
            raise ConfigError(f"--set {text!r}: model fields are flat, expected KEY=VALUE")
        values[keys[0]] = value
    try:
        return ModelConfig.from_dict(values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(str(exc)) from None


def cmd_coverage(args: argparse.Namespace) -> int:
    from irstdlab.harness.config import load_config
    from irstdlab.harness.coverage import format_report, measure_coverage

    cfg = load_config(args.config, args.overrides)
    report = measure_coverage(cfg, args.split)
    if args.json:
        print(json.dumps({"config": args.config, **report.to_dict()}, sort_keys=True))
    else:
        print(format_report(report))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    if args.size <= 0:
        raise ConfigError(f"--size: must be a positive number of pixels, got {args.size}")
    cfg = model_config_from_args(args.name, args.backbone, args.overrides)

    from irstdlab.harness.complexity import profile
    from irstdlab.models import build

    try:
        model = build(cfg)
    except ValueError as exc:  # e.g. model.pretrained pointing at a missing file
        raise ConfigError(str(exc)) from None
    report = profile(model, (args.size, args.size))
    neck = getattr(model, "neck", None)
    strides = list(getattr(neck, "strides", cfg.level_strides()))  # the built pyramid, whatever the detector
    info = {
        "name": cfg.name,
        "backbone": cfg.backbone,
        "level_strides": strides,
        **report.to_dict(),
    }
    if cfg.name in ("fcos", "bafenet"):  # the only detectors that assign by regress range
        info["regress_ranges"] = [[lo, hi if hi != float("inf") else "inf"] for lo, hi in cfg.level_regress_ranges()]
    memory = _training_memory(model, args) if args.memory else None
    if memory is not None:
        info["train_memory"] = memory.to_dict()
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"model      {cfg.name} ({cfg.backbone})")
    ranges = f", regress ranges {info['regress_ranges']}" if "regress_ranges" in info else ""
    print(f"levels     strides {info['level_strides']}{ranges}")
    print(f"params     {report.params:,} ({report.params_m:.3f} M); trainable {report.trainable_params:,} ({report.trainable_params / 1e6:.3f} M)")
    print(f"compute    {report.gmacs:.3f} GMACs (multiply-adds, the papers' 'FLOPs'), {report.gflops:.3f} GFLOPs at 1x{args.size}x{args.size}")
    if memory is not None:
        print(f"memory     {memory.peak_gib:.3f} GiB peak per training step at batch {memory.batch_size}, "
              f"{memory.size}x{memory.size}, amp {memory.amp} on {memory.device}: {memory.method}")
    return 0


def _training_memory(model: Any, args: argparse.Namespace) -> Any:
    import torch

    from irstdlab.harness.train_memory import training_memory

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    return training_memory(model, args.batch_size, args.size, device, amp=cuda and torch.cuda.is_bf16_supported())
