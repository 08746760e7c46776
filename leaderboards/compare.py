"""Comparing groups over seeds: mean, spread, a bootstrap confidence interval of the
mean, a paired difference of every group to the best over matching seeds, and a flag
when intervals overlap. Blocks (protocol x dataset) are compared separately.

A staged search (``stages:`` in its space) ranks its detectors on its stage-2 rows: its
stage-1 (``stage == "tune"``) rows ran at a reduced budget with tuned-away configurations,
so ``compare`` leaves them out and says so in each block's notes.

The bootstrap is vectorised: for all groups of the same size ``n`` one matrix of
resampling weights is shared and every group's bootstrap means come from one matrix
product. For n <= 6 (the usual number of seeds) the weights are *every* distinct
resample with its multinomial probability, so the interval is the exact bootstrap
interval, with no resampling noise and cheap for 20,000 groups; larger groups draw
``n_boot`` resamples. Above ``normal_above`` rows a group's bootstrap distribution of
the mean is normal to well within display precision, so the interval is
mean +- z * sd / sqrt(n) there (``ci_method`` says which was used).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd

from irstdlab.leaderboards import query
from irstdlab.leaderboards.errors import LeaderboardError


@dataclass
class GroupStat:
    group: str
    n: int                  # rows (trials) with a value
    seeds: int              # distinct seeds among them
    mean: float
    std: float              # sample standard deviation (ddof=1); NaN for n == 1
    ci_low: float
    ci_high: float
    ci_method: str          # "bootstrap-exact", "bootstrap", "normal" or "n=1"
    flag: str = ""          # "best", "distinguishable", or "not distinguishable with N seeds"


@dataclass
class Paired:
    a: str
    b: str
    n_pairs: int            # seeds present in both groups
    mean_diff: float        # a - b, per-seed means paired by seed
    ci_low: float
    ci_high: float
    distinguishable: bool   # the interval excludes 0


@dataclass
class CompareBlock:
    protocol: str
    dataset: str
    metric: str
    higher_is_better: bool
    groups: list[GroupStat]
    paired: Paired | None = None  # the best minus the second
    notes: list[str] = field(default_factory=list)
    # the best minus every other group, paired by seed (None where fewer than 2 seeds match)
    paired_to_best: list[Paired | None] = field(default_factory=list)

    def indistinguishable_from_best(self) -> list[str]:
        """Groups whose paired difference to the best has an interval containing 0."""
        return [p.b for p in self.paired_to_best if p is not None and not p.distinguishable]


EXACT_MAX = 6  # up to 6 values the bootstrap distribution is enumerated exactly (462 resample patterns)


@functools.cache
def _patterns(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct bootstrap resample of n values as weights (K x n) and its probability."""
    combos = np.array(list(itertools.combinations_with_replacement(range(n), n)))
    counts = np.stack([np.bincount(c, minlength=n) for c in combos]).astype(float)
    logp = math.lgamma(n + 1) - np.sum([[math.lgamma(c + 1) for c in row] for row in counts], axis=1) \
        - n * math.log(n)
    return counts / n, np.exp(logp)


def _exact(values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of the exact bootstrap distribution of the mean, per row of values (G x n)."""
    weights, prob = _patterns(values.shape[1])
    means = values @ weights.T                                   # G x K
    order = np.argsort(means, axis=1, kind="stable")
    cum = np.cumsum(prob[order], axis=1)
    sorted_means = np.take_along_axis(means, order, axis=1)
    lo = np.argmax(cum >= alpha - 1e-12, axis=1)
    hi = np.argmax(cum >= 1.0 - alpha - 1e-12, axis=1)
    rows = np.arange(len(values))
    return sorted_means[rows, lo], sorted_means[rows, hi]


def bootstrap_ci(groups: list[np.ndarray], n_boot: int = 2000, confidence: float = 0.95,
                 seed: int = 0, normal_above: int = 500) -> list[tuple[float, float, str]]:
    """Percentile bootstrap interval of the mean for every value vector in ``groups``.

    n <= EXACT_MAX: the bootstrap distribution enumerated exactly ("bootstrap-exact",
    no resampling noise); up to ``normal_above``: ``n_boot`` resamples ("bootstrap");
    above: its normal limit ("normal"); n == 1: no interval.
    """
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2.0
    z = NormalDist().inv_cdf(1.0 - alpha)
    out: list[tuple[float, float, str]] = [(math.nan, math.nan, "n=1")] * len(groups)
    by_size: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        n = len(g)
        if n > normal_above:
            half = z * float(np.std(g, ddof=1)) / math.sqrt(n)
            out[i] = (float(np.mean(g)) - half, float(np.mean(g)) + half, "normal")
        elif n >= 2:
            by_size.setdefault(n, []).append(i)
    for n, members in sorted(by_size.items()):
        if n <= EXACT_MAX:
            chunk = max(1, 4_000_000 // len(_patterns(n)[1]))
            for s in range(0, len(members), chunk):
                part = members[s:s + chunk]
                lo, hi = _exact(np.stack([groups[i] for i in part]), alpha)
                for j, i in enumerate(part):
                    out[i] = (float(lo[j]), float(hi[j]), "bootstrap-exact")
            continue
        idx = rng.integers(0, n, size=(n_boot, n))
        flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
        weights = np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n) / n  # B x n
        chunk = max(1, 4_000_000 // n_boot)
        for s in range(0, len(members), chunk):
            part = members[s:s + chunk]
            values = np.stack([groups[i] for i in part])            # G x n
            means = values @ weights.T                                # G x B
            lo, hi = np.quantile(means, [alpha, 1.0 - alpha], axis=1)
            for j, i in enumerate(part):
                out[i] = (float(lo[j]), float(hi[j]), "bootstrap")
    return out


def _label(key: object, names: list[str]) -> str:
    vals = key if isinstance(key, tuple) else (key,)
    if len(names) == 1:
        return str(vals[0])
    return ", ".join(f"{n.split('.', 1)[-1]}={v}" for n, v in zip(names, vals))


def _overlap(a: GroupStat, b: GroupStat) -> bool:
    return a.ci_high >= b.ci_low and a.ci_low <= b.ci_high


def check_arguments(n_boot: int, confidence: float) -> None:
    """The bootstrap's knobs: at least one resample, a level strictly between 0 and 1."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise LeaderboardError("--n-boot", f"must be an integer >= 1, got {n_boot!r}")
    if not (isinstance(confidence, (int, float)) and math.isfinite(confidence) and 0.0 < confidence < 1.0):
        raise LeaderboardError("--confidence", f"must be a number in (0, 1), got {confidence!r}")


def confirm_rows(df: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """Leave out the stage-1 (``tune``) rows of staged searches; returns the rows and a note."""
    if "stage" not in df.columns or not len(df):
        return df, None
    tune = (df["stage"] == "tune").fillna(False).to_numpy(dtype=bool)
    if not tune.any():
        return df, None
    searches = ", ".join(sorted(str(s) for s in df.loc[tune, "search"].unique())) if "search" in df else "?"
    note = (f"ranked on stage-2 (confirm) rows only: {int(tune.sum())} stage-1 (tune) row(s) of {searches} "
            f"left out (reduced budget; see `leaderboard show --filter \"stage == 'tune'\"`)")
    kept = df[~tune]
    if not len(kept):
        raise LeaderboardError("stage", f"only stage-1 (tune) rows here ({searches}): the confirm stage has no "
                                        f"finished row yet (resume the search to run it)")
    return kept, note


def compare(df: pd.DataFrame, metric: str | None = None, group_by: list[str] | None = None,
            n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> list[CompareBlock]:
    """Per (protocol, dataset) block, statistics of ``metric`` per group (default: model)."""
    check_arguments(n_boot, confidence)
    if not len(df):
        raise LeaderboardError("compare", "no rows to compare (check the filter, or --include-partial)")
    df, stage_note = confirm_rows(df)
    metric = query.resolve_metric(df, metric)
    names = [query.resolve_column(df, g) for g in (group_by or ["model"])]
    hib = query.higher_is_better(metric)
    out = []
    for (protocol, dataset), sub in query.blocks(df):
        values = pd.to_numeric(sub[metric], errors="coerce")
        sub = sub.assign(_v=values)[values.notna().to_numpy()]
        if not len(sub):
            continue
        keys = sub[names].astype(object).where(sub[names].notna(), "-")
        gb = sub.groupby([keys[c] for c in names], sort=True)
        codes = gb.ngroup().to_numpy()
        agg = gb["_v"].agg(["size", "mean", "std"])  # vectorised; std is ddof=1
        seeds = gb["seed"].nunique().to_numpy() if "seed" in sub else np.zeros(len(agg), int)
        order = np.argsort(codes, kind="stable")
        vals = sub["_v"].to_numpy(dtype=float)[order]
        sizes = agg["size"].to_numpy()
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        vecs = [vals[a:a + n] for a, n in zip(starts, sizes)]
        cis = bootstrap_ci(vecs, n_boot=n_boot, confidence=confidence, seed=seed)
        labels = [_label(k, names) for k in agg.index]
        stats = [GroupStat(lab, int(n), int(sd), float(m), float(st) if n > 1 else math.nan, lo, hi, how)
                 for lab, n, sd, m, st, (lo, hi, how) in zip(labels, sizes, seeds, agg["mean"], agg["std"], cis)]
        rows_of = {lab: vecs[i] for i, lab in enumerate(labels)}
        seeds_of = {}
        if "seed" in sub:
            seed_sorted = sub["seed"].to_numpy()[order]
            seeds_of = {lab: seed_sorted[a:a + n] for lab, a, n in zip(labels, starts, sizes)}
        stats.sort(key=lambda s: s.mean, reverse=hib)
        block = CompareBlock(protocol, dataset, metric, hib, stats)
        best = stats[0]
        best.flag = "best"
        for s in stats[1:]:
            if math.isnan(s.ci_low) or math.isnan(best.ci_low):
                s.flag = "no interval (1 seed)"
            elif _overlap(s, best):
                s.flag = f"not distinguishable from best with {min(s.seeds or s.n, best.seeds or best.n)} seeds"
            else:
                s.flag = "distinguishable"
        block.paired_to_best = [_paired(rows_of, seeds_of, best.group, s.group, n_boot, confidence, seed)
                                for s in stats[1:]]
        if len(stats) >= 2:
            block.paired = block.paired_to_best[0]
            if block.paired is None:
                block.notes.append(f"no paired difference: {stats[0].group} and {stats[1].group} "
                                   "share fewer than 2 seeds")
        if stage_note:
            block.notes.append(stage_note)
        out.append(block)
    return out


def _paired(values: dict[str, np.ndarray], seeds: dict[str, np.ndarray], a: str, b: str, n_boot: int,
            confidence: float, seed: int) -> Paired | None:
    """a - b over the seeds both groups have (per-seed means when a seed repeats)."""
    if a not in seeds or b not in seeds:
        return None
    per_seed = {g: pd.Series(values[g]).groupby(pd.Series(seeds[g])).mean() for g in (a, b)}
    common = per_seed[a].index.intersection(per_seed[b].index)
    if len(common) < 2:
        return None
    d = (per_seed[a].loc[common] - per_seed[b].loc[common]).to_numpy(dtype=float)
    (lo, hi, _), = bootstrap_ci([d], n_boot=n_boot, confidence=confidence, seed=seed)
    return Paired(a, b, len(common), float(d.mean()), lo, hi, bool(lo > 0 or hi < 0))


def to_frame(blocks: list[CompareBlock]) -> pd.DataFrame:
    rows = [{"protocol": b.protocol, "dataset": b.dataset, "metric": b.metric, **asdict(s)}
            for b in blocks for s in b.groups]
    return pd.DataFrame(rows)


def to_dict(blocks: list[CompareBlock]) -> list[dict]:
    return [{**asdict(b), "indistinguishable_from_best": b.indistinguishable_from_best()} for b in blocks]


def format_blocks(blocks: list[CompareBlock], confidence: float = 0.95, top: int | None = None) -> str:
    """Text tables; ``top`` limits the printed groups per block (statistics cover all)."""
    pct = f"{confidence * 100:g}%"
    lines: list[str] = []
    for b in blocks:
        arrow = "higher is better" if b.higher_is_better else "lower is better"
        lines.append(f"== protocol={b.protocol}  dataset={b.dataset}  {b.metric} ({arrow}) ==")
        frame = pd.DataFrame([{"group": s.group, "n": s.n, "seeds": s.seeds, "mean": s.mean, "std": s.std,
                               f"{pct} CI": f"[{s.ci_low:.4f}, {s.ci_high:.4f}]" if not math.isnan(s.ci_low)
                               else "-", "flag": s.flag} for s in b.groups[:top]])
        lines.append(query.format_table(frame, list(frame.columns), width=64))
        if top is not None and len(b.groups) > top:
            lines.append(f"... {len(b.groups) - top} more groups (--top 0 prints all)")
        for p in b.paired_to_best or ([b.paired] if b.paired else []):
            if p is None:
                continue
            verdict = "distinguishable" if p.distinguishable else f"not distinguishable with {p.n_pairs} seeds"
            lines.append(f"paired {p.a} - {p.b} over {p.n_pairs} matching seeds: {p.mean_diff:+.4f} "
                         f"{pct} CI [{p.ci_low:+.4f}, {p.ci_high:+.4f}] -> {verdict}")
        if b.paired_to_best:
            same = b.indistinguishable_from_best()
            lines.append(f"statistically indistinguishable from the best ({b.groups[0].group}, paired by seed): "
                         + (", ".join(same) if same else "none"))
        lines += b.notes
        lines.append("")
    return "\n".join(lines).rstrip()
