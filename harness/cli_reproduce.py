"""``irstdlab reproduce TABLE``: run one paper table's grid through ``irstdlab search`` and print the
paper's numbers beside ours (see harness/reproduce.py)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "reproduce", help="run one of the paper's Tables II-IX (3 seeds per row) and compare with the paper",
        description="Run the grid search space search_spaces/reproduce_table_<TABLE>.yaml (each table on its own "
                    "base; every row x 3 seeds, full fidelity: --scheduler none by default) through the normal "
                    "search machinery, then print per row the paper's value, our mean and 95 percent CI over "
                    "seeds, the difference and whether the paper's value lies inside our interval. Takes every "
                    "option of `irstdlab search`; --resume --name NAME continues an interrupted run.")
    p.add_argument("table", metavar="TABLE", help="II, III, IV, V, VI, VII, VIII or IX (any case)")
    from irstdlab.harness.cli_search import add_search_arguments

    add_search_arguments(p)  # every option of `irstdlab search`, defined once there
    p.add_argument("--json", action="store_true",
                   help="also print the plan (--dry-run) or the side-by-side table as one JSON object on the last line")
    p.add_argument("--images-per-s", type=float,
                   help="your measured training throughput (images/s on one GPU) for the GPU-hours estimate "
                        "(default: benchmarks/results/bench_train.json when it has a GPU measurement)")
    p.add_argument("--seeds", type=int,
                   help="seeds per row (default: the table's 3; fewer gives no interval, for a quick check only)")
    p.set_defaults(handler=run, scheduler="none")


def _stored_space(storage: str, name: str):
    from irstdlab.harness.search import STATE_FILE, SearchOptions, build_space

    from irstdlab.harness import search_storage

    # any --storage the search itself takes: a folder or a URI (search_storage reads both)
    text = search_storage.read_bytes(search_storage.join(_root_ref(storage), name, STATE_FILE))
    return build_space(SearchOptions(), json.loads(text))


def _root_ref(storage: str) -> str:
    from irstdlab.harness import search_storage

    return search_storage.reference(search_storage.open_storage(storage, "").root)


def run(args: argparse.Namespace) -> int:
    from irstdlab.harness import reproduce
    from irstdlab.harness.errors import ConfigError
    from irstdlab.harness.search import SearchOptions, build_space

    table = reproduce.table_name(args.table)
    space_name = reproduce.space_name(table)
    args.name = args.name or space_name
    if args.images_per_s is not None and args.images_per_s <= 0:
        raise ConfigError(f"--images-per-s: must be > 0, got {args.images_per_s}")
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds: must be >= 1, got {args.seeds}")
    if args.resume:  # the stored space (with the flags it was started with) is what continues
        if args.seeds is not None:
            raise ConfigError("--seeds: a resumed reproduction keeps the seeds it was started with")
        args.space = None
        try:
            space = _stored_space(args.storage, args.name)
        except FileNotFoundError as exc:
            raise ConfigError(f"{exc}: no reproduction named {args.name!r} to resume here") from None
        return _run(args, table, space)
    with tempfile.TemporaryDirectory(prefix="irstdlab-reproduce-") as tmp:
        args.space = _space_with_seeds(space_name, args.seeds, Path(tmp))
        space = build_space(SearchOptions(space=args.space, overrides=tuple(args.overrides),
                                          max_epochs=args.max_epochs))
        return _run(args, table, space)


def _space_with_seeds(space_name: str, seeds: int | None, folder: Path) -> str:
    """The shipped space's name, or (with --seeds) a copy of its text with that many seeds: the search
    stores the text it ran, so a resume needs neither the copy nor the flag."""
    import yaml

    from irstdlab.harness import space_loader

    if seeds is None:
        return space_name
    text, _, _ = space_loader.resolve(space_name)
    raw = yaml.safe_load(text)
    raw["seeds"] = seeds
    path = folder / f"{space_name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def _run(args: argparse.Namespace, table: str, space) -> int:
    from irstdlab.harness import cli_search, reproduce

    plan = reproduce.plan_of(space, table)
    trials = space.num_trials(args.num_samples)
    if args.dry_run:
        code = cli_search.run(args)
        measured = ((args.images_per_s, "--images-per-s") if args.images_per_s is not None
                    else reproduce.measured_throughput())
        estimate = reproduce.estimate_gpu_hours(space, trials, *(measured or (None, "")))
        print(reproduce.format_plan(plan, trials, estimate))
        if args.json:
            print(json.dumps(reproduce.plan_dict(plan, trials, estimate), default=str))
        return code
    code = cli_search.run(args)
    board = _leaderboard_rows(args.storage, args.name)
    entries = reproduce.side_by_side(plan, board)
    print()
    print(reproduce.format_side_by_side(plan, entries))
    if args.json:
        print(json.dumps({"table": table, "search": args.name, "rows": entries}, default=str))
    return code


def _leaderboard_rows(storage: str, name: str):
    import warnings

    from irstdlab.harness import search_storage
    from irstdlab.leaderboards import open as open_leaderboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_leaderboard(search_storage.join(_root_ref(storage), "leaderboard")).read_table(
            search=name).table.to_pandas()
