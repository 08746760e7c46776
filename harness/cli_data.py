"""`irstdlab data ...`: check, stats, preview and synth for the data sets on disk.

Data-layer errors (DatasetError) propagate to ``harness/cli.py``, which prints them as one line and
exits 2. Imports of numpy/cv2/matplotlib stay inside the handlers so that ``irstdlab --help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from irstdlab.harness.cli_args import SEED, int_range
from irstdlab.harness.paths import ensure_writable_dir, ensure_writable_file, validate_name

DATASETS = ("densesirst", "sirstv2", "synthetic")
MAX_LISTED = 20  # problems shown in the readable report; --json has them all
MAX_IMAGES = 1_000_000
MAX_SIDE = 8192  # one synthetic image is side^2 floats while it is drawn


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="check, describe, preview or synthesise data sets")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", title="subcommands")
    data.set_defaults(handler=lambda args: _print_help(data))

    def dataset_args(p: argparse.ArgumentParser, split_help: str | None) -> None:
        p.add_argument("--dataset", required=True, choices=DATASETS,
                       help="layout: densesirst (SIRSTdevkit/), sirstv2 (open-sirst-v2/), synthetic (written by `data synth`)")
        p.add_argument("--root", required=True, type=Path,
                       help="data-set root: the folder holding PNGImages/ (DenseSIRST) or mixed/ (SIRST-V2)")
        if split_help:
            p.add_argument("--split", action="append", help=split_help)

    check = sub.add_parser("check", help="validate every file of a data set (exit 2 on any error)")
    dataset_args(check, "split to check (repeatable; default: every split file)")
    check.add_argument("--json", action="store_true", help="print one JSON object instead of a readable report")
    check.set_defaults(handler=run_check)

    stats = sub.add_parser("stats", help="target size / local contrast / brightness / sky statistics and plots")
    dataset_args(stats, "split(s) to describe (repeatable; default: the data set's default split)")
    stats.add_argument("--out", required=True, type=Path, help="folder for stats.json and the PNG plots")
    stats.set_defaults(handler=run_stats)

    preview = sub.add_parser("preview", help="write a PNG of one image with its boxes and sky overlay")
    preview.add_argument("id", help="image id, e.g. Misc_1")
    dataset_args(preview, None)
    preview.add_argument("--out", type=Path, help="output PNG (default: preview_<id>.png)")
    preview.set_defaults(handler=run_preview)

    synth = sub.add_parser("synth", help="write a synthetic data set in the DenseSIRST layout")
    synth.add_argument("--out", required=True, type=Path, help="new (or empty) folder to become the data-set root")
    synth.add_argument("--images", required=True, type=int_range(1, MAX_IMAGES), help="number of images")
    synth.add_argument("--size", type=int_range(128, MAX_SIDE), default=128,
                       help=f"image side in pixels (128 to {MAX_SIDE}; default 128)")
    synth.add_argument("--seed", type=SEED, default=0)
    synth.add_argument("--difficulty", choices=("easy", "medium", "hard"), default="medium")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing data set in --out")
    synth.set_defaults(handler=run_synth)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _check_splits(args: argparse.Namespace) -> None:
    for split in args.split or ():
        validate_name(split, "--split")  # it names a file under Splits/


def run_check(args: argparse.Namespace) -> int:
    from irstdlab.datasets.checks import check_dataset

    _check_splits(args)
    report = check_dataset(args.dataset, args.root, args.split)
    if args.json:
        print(report.to_json())
        return 0 if report.ok else 2
    rate = "n/a" if report.box_mask_agreement is None else f"{100 * report.box_mask_agreement:.2f} %"
    print(f"{report.dataset} at {report.root}")
    for name, counts in report.per_split.items():
        print(f"  split {name}: {counts['images']} images, {counts['targets']} targets, "
              f"{counts['background_images']} background-only")
    print(f"  distinct images {report.images}, targets {report.targets}, background-only {report.background_images}")
    print(f"  box/mask agreement ({report.connectivity}-connected components): {rate} "
          f"({report.boxes_agreeing}/{report.boxes_compared} boxes)")
    for label, items in (("errors", report.errors), ("warnings", report.warnings)):
        print(f"  {label}: {len(items)}")
        for item in items[:MAX_LISTED]:
            print(f"    {item['file']}: {item['problem']}")
        if len(items) > MAX_LISTED:
            print(f"    ... {len(items) - MAX_LISTED} more (use --json for all)")
    print("OK" if report.ok else "FAILED")
    return 0 if report.ok else 2


def run_stats(args: argparse.Namespace) -> int:
    from irstdlab.datasets.readers import open_dataset, reader_class
    from irstdlab.datasets.stats import DatasetStats, write_stats

    _check_splits(args)
    ensure_writable_dir(args.out, "--out")  # before reading every image
    splits = args.split or [reader_class(args.dataset).default_split]
    stats, seen = DatasetStats(), set()
    for split in splits:
        reader = open_dataset(args.dataset, args.root, split)
        for ident in reader.ids:
            if ident not in seen:  # overlapping splits (trainval + val) count each image once
                seen.add(ident)
                stats.add(reader.sample(ident))
    written = write_stats(stats, args.out, title=f"{args.dataset} {'+'.join(splits)}")
    summary = stats.summary()
    print(f"{summary['images']} images, {summary['targets']} targets from {args.dataset} {', '.join(splits)}")
    for name, path in written.items():
        print(f"  {name}: {path}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from irstdlab.datasets.readers import reader_class
    from irstdlab.datasets.stats import write_preview
    from irstdlab.harness.errors import UserError

    validate_name(args.id, "ID")  # it names the image file and the default output
    out = args.out or Path(f"preview_{args.id}.png")
    if out.suffix.lower() != ".png":
        raise UserError(f"--out {out}: the preview is written as PNG; use a .png name")
    ensure_writable_file(out, "--out")
    reader = reader_class(args.dataset)(args.root, ids=[args.id])
    write_preview(reader.sample(args.id), out)
    print(f"wrote {out}")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    from irstdlab.datasets.synthetic import write_dataset

    ensure_writable_dir(args.out, "--out")
    summary = write_dataset(args.out, num_images=args.images, size=args.size, seed=args.seed,
                            difficulty=args.difficulty, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2, default=str))
    print(f"check it with: irstdlab data check --dataset synthetic --root {args.out}", file=sys.stderr)
    return 0
