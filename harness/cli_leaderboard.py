"""`irstdlab leaderboard ...`: show, compare, importance, plot, export, merge, validate, compact.

A leaderboard is given as PATH (the directory, or a URI such as ``s3://bucket/runs/leaderboard``) or
``--storage DIR|URI`` (its ``leaderboard/`` folder; default ``$IRSTDLAB_STORAGE``); any URI
``pyarrow.fs.FileSystem.from_uri`` understands works, with credentials from the environment.
Without either, ``./irstdlab-runs/leaderboard`` is used when it exists, since that is where ``irstdlab search`` and ``irstdlab train`` write by default. pandas/pyarrow are imported
inside the handlers so that ``irstdlab --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from irstdlab.harness.cli_args import NON_NEGATIVE_INT, POSITIVE_INT, float_range, int_range
from irstdlab.harness.paths import ensure_writable_dir, ensure_writable_file, validate_name

PLOT_KINDS = ("bars", "pareto", "ablation", "pr", "history")
OPTUNA_KINDS = ("parallel", "contour", "slice", "importance")  # leaderboards/optuna_plots.py
DEFAULT_LEADERBOARD = "./irstdlab-runs/leaderboard"  # where `search` and `train` write without --storage
MAX_BOOT = 1_000_000  # resample weights are n_boot x n floats: beyond this a typo exhausts memory


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="leaderboard directory or URI, e.g. s3://bucket/runs/leaderboard "
                                           "(or a storage location holding leaderboard/)")
    p.add_argument("--storage", default=os.environ.get("IRSTDLAB_STORAGE"), metavar="DIR|URI",
                   help="storage directory or URI (s3://bucket/prefix, gs://..., file://...); the leaderboard is "
                        f"<storage>/leaderboard (default $IRSTDLAB_STORAGE, else {DEFAULT_LEADERBOARD} when it "
                        "exists); S3 credentials and endpoint come from the environment (AWS_*)")


def _selection(p: argparse.ArgumentParser) -> None:
    _where(p)
    p.add_argument("--search", metavar="NAME", help="only the rows of this search")
    p.add_argument("--filter", help="row condition, e.g. \"model == 'bafenet' and param.p > 0.25\": column names, constants, "
                        "comparisons, in / not in, and / or / not, arithmetic; nothing is executed")
    p.add_argument("--protocol", help="only rows of this protocol (reference, clean)")
    p.add_argument("--dataset", help="only rows of this dataset")
    p.add_argument("--include-partial", action="store_true",
                   help="also rows that did not finish (early-stopped, failed), flagged 'partial'")
    p.add_argument("--with-paper", action="store_true", help="add the BAFE-Net paper's Tables II-IX as rows")


def register(subparsers: Any) -> None:
    lb = subparsers.add_parser("leaderboard", help="query, compare, plot and export the Parquet leaderboard",
                               description="Query, compare, plot and export the Parquet leaderboard.")
    sub = lb.add_subparsers(dest="lb_command", metavar="ACTION", title="actions")
    lb.set_defaults(handler=lambda args: (lb.print_help(), 2)[1])

    p = sub.add_parser("show", help="ranked table per (protocol, dataset)")
    _selection(p)
    p.add_argument("--by", help="metric to rank by, e.g. val/mAP07 (default val/mAP07 or test/mAP07)")
    p.add_argument("--top", type=NON_NEGATIVE_INT, default=20, metavar="K", help="rows per block (default 20; 0 = all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_show)

    p = sub.add_parser("compare", help="mean, s.d. and bootstrap CI per group over seeds")
    _selection(p)
    p.add_argument("--group-by", nargs="+", default=["model"], metavar="COL",
                   help="model, config_hash, param.X ... (default model)")
    p.add_argument("--metric", help="metric, e.g. val/mAP07")
    p.add_argument("--n-boot", type=int_range(1, MAX_BOOT), default=2000,
                   help=f"bootstrap resamples (default 2000, at most {MAX_BOOT})")
    p.add_argument("--confidence", type=float_range(0.0, 1.0, lo_open=True, hi_open=True), default=0.95,
                   help="interval level, in (0, 1) (default 0.95)")
    p.add_argument("--top", type=NON_NEGATIVE_INT, default=30, metavar="K",
                   help="groups printed per block, best first (default 30; 0 = all; --json has all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=_compare)

    p = sub.add_parser("importance", help="which searched parameter mattered (Optuna PED-ANOVA / fANOVA)",
                       description="Importance of the searched parameters, seeds averaged per configuration; "
                                   "conditional parameters within the configurations where they are active; "
                                   "full-fidelity completed rows, and with --include-partial one extra section "
                                   "per fidelity level the early-stopped rows reached.")
    _where(p)
    p.add_argument("--search", metavar="NAME", help="only the rows of this search (its stored space gives the "
                                                    "distributions)")
    p.add_argument("--filter", help="row condition, as for `leaderboard show`")
    p.add_argument("--protocol", help="only rows of this protocol (reference, clean)")
    p.add_argument("--dataset", help="only rows of this dataset")
    p.add_argument("--include-partial", action="store_true",
                   help="also early-stopped rows, evaluated per fidelity level they reached")
    p.add_argument("--metric", help="metric, e.g. val/mAP07 (default val/mAP07 or test/mAP07)")
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.set_defaults(handler=_importance, with_paper=False)

    p = sub.add_parser("plot", help="PNG plots: " + ", ".join(PLOT_KINDS + OPTUNA_KINDS))
    p.add_argument("kind", choices=PLOT_KINDS + OPTUNA_KINDS)
    _selection(p)
    p.add_argument("--out", help="PNG file (default leaderboard-<kind>.png)")
    p.add_argument("--metric", help="metric, e.g. val/mAP07")
    p.add_argument("--param", help="ablation: the searched parameter (param.X or X)")
    p.add_argument("--group-by", nargs="+", metavar="COL", help="bars: grouping columns (default model)")
    p.add_argument("--top", type=POSITIVE_INT, default=5, help="pr: curves of the best K rows (default 5)")
    p.add_argument("--no-paper", action="store_true", help="ablation: do not overlay the paper's values")
    p.set_defaults(handler=_plot)

    p = sub.add_parser("export", help="paper-style md/html table, or rows as csv/parquet")
    _selection(p)
    p.add_argument("--format", default="md", choices=("md", "html", "csv", "parquet"))
    p.add_argument("--out", help="output file (md/html print to stdout without it)")
    p.add_argument("--metrics", "--metric", dest="metric", action="append", metavar="M[,M...]",
                   help="metric columns to show, comma-separated or repeated (default the paper's: "
                        "mAP07, mAP12, recall07 of the test split, else val)")
    p.add_argument("--group-by", nargs="+", metavar="COL", help="method columns (default model backbone)")
    p.set_defaults(handler=_export)

    p = sub.add_parser("merge", help="merge leaderboards; the newest version of each row wins")
    p.add_argument("sources", nargs="+", metavar="SRC")
    p.add_argument("--into", required=True, metavar="DST")
    p.set_defaults(handler=_merge)

    p = sub.add_parser("validate", help="schema check, duplicates, corrupt files (exit 1 if any problem)")
    _where(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_validate)

    p = sub.add_parser("compact", help="rewrite each search's many row files into one (faster reads)")
    _where(p)
    p.add_argument("--search", help="only this search")
    p.set_defaults(handler=_compact)


def _open(args: argparse.Namespace, must_exist: bool = True):
    from irstdlab.leaderboards import open as open_lb
    from irstdlab.leaderboards import storage_uri
    from irstdlab.leaderboards.errors import LeaderboardError

    if args.path:
        where = storage_uri.resolve(args.path)
    elif args.storage:
        where = storage_uri.resolve(args.storage).join("leaderboard")
    elif Path(DEFAULT_LEADERBOARD).is_dir():
        where = storage_uri.resolve(DEFAULT_LEADERBOARD)
    else:
        raise LeaderboardError("PATH", f"give a leaderboard directory or --storage DIR (or set IRSTDLAB_STORAGE); "
                                       f"{DEFAULT_LEADERBOARD} does not exist here")
    if not where.is_local:  # credentials, bucket and endpoint: one line within 30 s, not a hang
        storage_uri.check_reachable(where)
    lb = open_lb(where)
    if must_exist and not lb.partitions() and not getattr(args, "with_paper", False):
        raise LeaderboardError(lb.root, "no leaderboard here (no search=<name>/ folders)")
    return lb


def _frame(args: argparse.Namespace, require_rows: bool = True):
    import warnings

    from irstdlab.leaderboards import query
    from irstdlab.leaderboards.errors import LeaderboardError

    if any(not str(c).strip() for c in getattr(args, "group_by", None) or ()):
        raise LeaderboardError("--group-by", "a column name must not be empty")
    lb = _open(args)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = lb.read(include_partial=args.include_partial, with_paper=args.with_paper,
                     search=getattr(args, "search", None))
    for w in caught:
        print(f"irstdlab: warning: {w.message}", file=sys.stderr)
    df = query.select(df, filter=args.filter, include_partial=args.include_partial,
                      protocol=args.protocol, dataset=args.dataset) if len(df) else df
    if require_rows and not len(df):
        raise LeaderboardError(lb.root, f"no rows match the selection ({_describe_selection(args)})")
    return df


def _describe_selection(args: argparse.Namespace) -> str:
    """What chose the rows, in the words of the options, for "no rows match" messages."""
    parts = [f"--search {args.search}"] if getattr(args, "search", None) else []
    parts += [f"--filter {args.filter!r}"] if args.filter else []
    parts += [f"--{flag} {getattr(args, flag)}" for flag in ("protocol", "dataset") if getattr(args, flag)]
    if not args.include_partial:
        parts.append("completed full-fidelity rows only; --include-partial adds the others")
    return "; ".join(parts) or "every row"


def _metric(df: Any, name: str | None, option: str) -> str | None:
    """A metric option resolved to its column; it must hold numbers (``--by model`` is refused)."""
    import pandas as pd

    from irstdlab.leaderboards import query
    from irstdlab.leaderboards.errors import LeaderboardError

    if name is None or not len(df):
        return name
    if not name.strip():
        raise LeaderboardError(option, "must not be empty")
    column = query.resolve_metric(df, name)
    numeric = pd.api.types.is_numeric_dtype(df[column]) and not pd.api.types.is_bool_dtype(df[column])
    if not (column.startswith(("metric.", "best.")) or numeric):
        known = ", ".join(c.split(".", 1)[1] for c in query.metric_columns(df)) or "none"
        raise LeaderboardError(option, f"{name!r} is a column of labels, not a metric; metrics here: {known[:300]}")
    return column


def _show(args: argparse.Namespace) -> int:
    from irstdlab.leaderboards import query

    df = _frame(args)
    by = _metric(df, args.by, "--by") or query.resolve_metric(df, None)
    tables = []  # (protocol, dataset, kind, metric, rows): runs and paper rows ranked apart
    for (protocol, dataset), block in query.blocks(df):
        is_run = (block["source"] == "run").to_numpy() if "source" in block.columns else [True] * len(block)
        for kind, sub in (("runs", block[is_run]), ("paper", block[~is_run])):
            if len(sub):
                metric = query.ranking_metric(sub, by)
                ((_, ranked),) = query.top(sub, metric, args.top or None)
                tables.append((protocol, dataset, kind, metric, ranked, len(sub)))
    if args.json:
        out = [{"protocol": p, "dataset": d, "rows_of": kind, "by": metric, "total": total,
                "rows": json.loads(sub.to_json(orient="records", date_format="iso"))}
               for p, d, kind, metric, sub, total in tables]
        print(json.dumps(out, indent=1))
        return 0
    for protocol, dataset, kind, metric, sub, _ in tables:
        label = "  (the paper's rows)" if kind == "paper" else ""
        print(f"== protocol={protocol}  dataset={dataset}  ranked by {metric.split('.', 1)[-1]} "
              f"(top {len(sub)}){label} ==")
        print(query.format_table(sub, query.display_columns(sub, metric)))
        print()
    if not args.include_partial:
        print("(full-fidelity completed rows only; --include-partial shows early-stopped and failed ones)")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from irstdlab.leaderboards import compare

    df = _frame(args)
    blocks = compare.compare(df, _metric(df, args.metric, "--metric"), args.group_by, n_boot=args.n_boot,
                             confidence=args.confidence)
    if args.json:
        print(json.dumps(compare.to_dict(blocks), indent=1, default=str))
    else:
        print(compare.format_blocks(blocks, args.confidence, args.top or None))
    return 0


def _importance(args: argparse.Namespace) -> int:
    from irstdlab.harness.leaderboard_space import param_specs
    from irstdlab.leaderboards import importance

    if args.search is not None:
        validate_name(args.search, "--search")
    df = _frame(args)
    runs = df[(df["source"] == "run").to_numpy()]
    specs, by_space, where = param_specs(_open(args).location, runs)
    report = importance.evaluate(runs, _metric(runs, args.metric, "--metric"), specs, by_space, where)
    if args.json:
        print(json.dumps(report.to_dict(), default=str))
    else:
        print(importance.format_report(report))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from irstdlab.leaderboards import plots
    from irstdlab.leaderboards.errors import LeaderboardError

    out = _image_path(args.out or f"leaderboard-{args.kind}.png")
    df = _frame(args, require_rows=not (args.kind == "ablation" and not args.no_paper))
    metric = _metric(df, args.metric, "--metric")
    if args.kind in OPTUNA_KINDS:
        from irstdlab.harness.leaderboard_space import param_specs
        from irstdlab.leaderboards.optuna_plots import plot_study

        runs = df[(df["source"] == "run").to_numpy()]
        specs, by_space, _ = param_specs(_open(args).location, runs)
        plot_study(args.kind, runs, out, metric, specs, by_space)
    elif args.kind == "bars":
        plots.plot_bars(df, out, metric, args.group_by)
    elif args.kind == "pareto":
        plots.plot_pareto(df, out, metric)
    elif args.kind == "ablation":
        if not args.param:
            raise LeaderboardError("--param", "required for plot ablation")
        paper = None
        if not args.no_paper:
            from irstdlab.leaderboards.paper import paper_frame

            paper = paper_frame()
        runs = df[df["source"] == "run"] if len(df) else df
        plots.plot_ablation(runs, out, args.param, metric, paper)
    elif args.kind == "pr":
        plots.plot_pr(df, out, metric, args.top)
    else:
        plots.plot_history(df, out, metric)
    print(out)
    return 0


def _image_path(text: str) -> Path:
    """--out of a plot: a writable file whose suffix matplotlib can write."""
    from matplotlib.backend_bases import FigureCanvasBase

    from irstdlab.leaderboards.errors import LeaderboardError

    out = ensure_writable_file(text, "--out")
    kinds = FigureCanvasBase.get_supported_filetypes()
    if out.suffix and out.suffix[1:].lower() not in kinds:
        raise LeaderboardError("--out", f"{text}: matplotlib cannot write {out.suffix!r} images; use .png, .svg or .pdf")
    return out


def _export(args: argparse.Namespace) -> int:
    from irstdlab.leaderboards import export

    if args.out is not None:
        ensure_writable_file(args.out, "--out")
    df = _frame(args)
    names = [m.strip() for arg in args.metric or () for m in arg.split(",") if m.strip()]
    metrics = [_metric(df, m, "--metrics") for m in names] or None
    result = export.export(df, args.format, args.out, metrics, args.group_by)
    if args.out:
        print(args.out)
    else:
        print(result, end="")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from irstdlab.leaderboards import storage_uri
    from irstdlab.leaderboards.store import merge

    for text in [*args.sources, args.into]:
        if storage_uri.is_uri(text):
            storage_uri.check_reachable(storage_uri.resolve(text))
    if not storage_uri.is_uri(args.into):
        ensure_writable_dir(args.into, "--into")
    rep = merge(args.sources, args.into)
    for src, n in rep.rows_in.items():
        print(f"{src}: {n} rows")
    for path, reason in rep.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{rep.into}: wrote {rep.written} rows ({rep.duplicates} keys seen more than once; newest kept)")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from irstdlab.leaderboards.store import validate

    rep = validate(_open(args))
    if args.json:
        print(json.dumps({**asdict(rep), "ok": rep.ok}, indent=1))
        return 0 if rep.ok else 1
    print(f"{rep.root}: {rep.files} files, {rep.good_files} readable, {rep.rows} rows "
          f"({rep.superseded} superseded versions on disk)")
    for path, reason in rep.corrupt:
        print(f"  corrupt, skipped: {path}: {reason}")
    for col in rep.retyped:
        print(f"  column {col}: typed differently across files (read as strings)")
    for key, field_name, problem in rep.invalid[:50]:
        print(f"  invalid row {key}: {field_name}: {problem}")
    if rep.repeated_runs:
        print(f"  note: {rep.repeated_runs} rows share (search, config_hash, seed, protocol, dataset) "
              "with another row")
    if rep.stale_temp_files:
        print(f"  note: {rep.stale_temp_files} temporary files left by interrupted writers (safe to delete)")
    print("ok" if rep.ok else "problems found")
    return 0 if rep.ok else 1


def _compact(args: argparse.Namespace) -> int:
    if args.search is not None:
        validate_name(args.search, "--search")
    lb = _open(args)
    done = lb.compact(args.search)
    for search, n in done.items():
        print(f"search={search}: {n} files compacted into one")
    if not done:
        print("nothing to compact")
    return 0
