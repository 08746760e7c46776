"""The Markdown report a staged search ends with, built from the leaderboard's own compare, export
and plot functions: the ranking with confidence intervals and paired differences, the paper-style
table, the Pareto plot (metric vs GMACs, one point per group), the bars with intervals, each group's
tuned recipe, and its learning curves (per-epoch values from Tune's ``result.json`` of each confirm
trial; when no trial folder holds them the report says so)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from irstdlab.leaderboards import compare, export, plots, query
from irstdlab.leaderboards.errors import LeaderboardError
from irstdlab.harness.search_space import SearchSpace

REPORT_FILE = "report.md"


def group_column(space: SearchSpace) -> str:
    """The leaderboard column that names a group: ``model`` for detectors, else ``param.<group_by>``."""
    assert space.stages is not None
    by = space.stages.tune.group_by
    return "model" if by == "model.name" else f"param.{by}"


def learning_curves(rows: pd.DataFrame, trials_dir: Path, metric: str, group: str
                    ) -> dict[str, list[tuple[list[float], list[float]]]]:
    """Per group, each confirm trial's (epochs, values) read from ``<trials_dir>/trial_<id>/result.json``
    (one JSON report per line, as Tune writes it); trials without the file are left out."""
    curves: dict[str, list[tuple[list[float], list[float]]]] = {}
    for _, row in rows.iterrows():
        path = trials_dir / f"trial_{row['trial_id']}" / "result.json"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        points: dict[float, float] = {}
        for line in lines:
            try:
                report = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill
            epoch, value = report.get("epoch"), report.get(metric)
            if isinstance(epoch, (int, float)) and isinstance(value, (int, float)):
                points[float(epoch)] = float(value)  # a resumed trial repeats epochs: the last wins
        if points:
            xs = sorted(points)
            curves.setdefault(str(row[group]), []).append((xs, [points[x] for x in xs]))
    return curves


def _recipes(space: SearchSpace, progress: dict[str, Any], rows: pd.DataFrame) -> list[str]:
    assert space.stages is not None
    metric = f"metric.{space.metric}"
    tune_rows = rows[rows["stage"] == "tune"]
    lines = [f"| {space.stages.tune.group_by} | tuned parameters | stage-1 {space.metric} (best of) | stage-1 trials |",
             "|:--|:--|--:|--:|"]
    by = space.stages.tune.group_by
    for point in progress.get("points") or []:
        group = point.get(by)
        mine = tune_rows[tune_rows.get(f"param.{by}", pd.Series(dtype=object)) == group] if len(tune_rows) else tune_rows
        done = mine[mine["status"] == "completed"]
        best = pd.to_numeric(done[metric], errors="coerce").max() if metric in done and len(done) else float("nan")
        knobs = ", ".join(f"`{k}` = {v:.4g}" if isinstance(v, float) else f"`{k}` = {v}"
                          for k, v in point.items() if k != by) or "(none searched)"
        lines.append(f"| {group} | {knobs} | {best:.4f} | {len(mine)} ({len(done)} completed) |")
    for note in progress.get("dropped") or []:
        lines.append(f"\nNot confirmed: {note}")
    return lines


def write_report(rows: pd.DataFrame, space: SearchSpace, progress: dict[str, Any], out_dir: Path,
                 trials_dir: Path | None = None) -> tuple[str, Path]:
    """Write ``out_dir/report.md`` (and its PNGs); returns (the ranking as text, the report's path)."""
    assert space.stages is not None
    out_dir.mkdir(parents=True, exist_ok=True)
    trials_dir = trials_dir or out_dir.parent / "confirm"
    group = group_column(space)
    confirmed = query.select(rows[rows["stage"] == "confirm"])  # completed, full fidelity
    if not len(confirmed):
        raise LeaderboardError("stage", "no completed stage-2 (confirm) row to rank")
    metric = query.resolve_metric(confirmed, space.metric)
    blocks = compare.compare(confirmed, metric, [group])
    ranking = compare.format_blocks(blocks)
    confirm = space.stages.confirm
    md = [f"# Staged search `{rows['search'].iloc[0] if 'search' in rows else space.name}`", "",
          f"Space `{space.source}` ({space.space_hash}). Stage 1 tuned each {space.stages.tune.group_by} on its own "
          f"(up to {space.stages.tune.budget.max_epochs} epochs); stage 2 trained each one's best stage-1 "
          f"configuration with {confirm.seeds} seed(s) for {confirm.max_epochs} epochs. Everything below is "
          f"stage-2 rows only.", "",
          f"## Ranking by {space.metric} (mean, 95% bootstrap CI over seeds; paired differences to the best)", "",
          "```text", ranking, "```", "",
          "## Table", "",
          # one configuration per group in stage 2: its seeds share a config_hash and are averaged
          export.to_markdown(confirmed, [metric], [group]), ""]
    for name, title, draw in (
            ("pareto.png", f"{space.metric} against cost (one point per group, its mean over seeds)",
             lambda p: plots.plot_pareto(confirmed, p, metric, [group])),
            ("ranking.png", "Means with 95% intervals", lambda p: plots.plot_bars(confirmed, p, metric, [group]))):
        try:
            draw(out_dir / name)
            md += [f"## {title}", "", f"![{title}]({name})", ""]
        except LeaderboardError as exc:
            md += [f"## {title}", "", f"Not drawn: {exc}", ""]
    md += ["## Tuned recipes (stage 1's choice, confirmed in stage 2)", "", *_recipes(space, progress, rows), ""]
    curves = learning_curves(confirmed, trials_dir, space.metric, group)
    md += ["## Learning curves", ""]
    if curves:
        plots.plot_learning_curves(curves, out_dir / "curves.png", space.metric)
        md += [f"Per-epoch {space.metric} of every stage-2 trial (from Tune's result.json in {trials_dir}).", "",
               "![learning curves](curves.png)", ""]
    else:
        md += [f"Not available: no stage-2 trial folder under {trials_dir} holds per-epoch results; "
               f"only the final values above are shown.", ""]
    path = out_dir / REPORT_FILE
    path.write_text("\n".join(md), encoding="utf-8")
    return ranking, path


__all__ = ["REPORT_FILE", "group_column", "learning_curves", "write_report"]
