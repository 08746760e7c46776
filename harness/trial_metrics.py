"""The numeric metric names a trial reports, so a search objective can be checked before it runs.

``harness.trial`` reports every epoch: ``epoch``, ``epochs``, ``workers``, ``lr``, ``images_per_s``, ``train/*``
(the model's loss terms, their sum ``train/loss``, ``train/iterations``, ``train/time_s`` and its part spent
waiting for batches ``train/time_data_s`` and stepping ``train/time_step_s``), ``loader_workers``, on
evaluation epochs ``val/*`` (``harness.evaluate.score``: mAP07, mAP12, recall, counts; mNoCoAP
and NoCoAPxx when NoCo is on), ``best_epoch`` and ``best/val/<select_metric>``; after the last
epoch ``test/*``; a search trial adds ``gmacs`` and ``params_m`` (``search_trainable.model_cost``).
Every report also carries the trial's fixed costs so far, ``time/*`` (``harness.trial.run_trial``: data
and model build, first iteration, evaluation, checkpoint writes, report hand-over; a search trial adds
its imports, set-up and ``time/warm_actor``); rows leave them out.
An objective outside these names would never be reported, and Tune would rank nothing.
"""

from __future__ import annotations

import re

_EVAL = r"(mAP07|mAP12|mAP75|recall|num_images|num_gts|num_dets|mNoCoAP|NoCoAP\d\d)"
_PATTERNS = (
    re.compile(rf"(val|test)/{_EVAL}"),
    re.compile(r"best/val/(mAP07|mAP12|mAP75|recall|mNoCoAP)"),
    re.compile(r"train/(loss|iterations|time_s|time_data_s|time_step_s|loss_[A-Za-z0-9_]+)"),
    re.compile(r"epoch|epochs|workers|loader_workers|lr|images_per_s|dadapt_d|best_epoch|gmacs|params_m"),
    re.compile(r"time/(data_build_s|model_build_s|first_iter_s|eval_s|checkpoint_s|report_s|imports_s|trial_setup_s"
               r"|warm_actor)"),
)
EXAMPLES = ("val/mAP07", "val/mAP12", "val/recall", "val/mNoCoAP", "best/val/mAP07", "test/mAP07",
            "train/loss", "gmacs", "params_m")


def is_reported(name: str) -> bool:
    """True when a trial reports a number under ``name`` (on some epoch)."""
    return any(p.fullmatch(name) for p in _PATTERNS)


def needs_noco(name: str) -> bool:
    """True for the NoCo metrics, reported only with ``eval.mnocoap`` or ``select_metric: mNoCoAP``."""
    return "NoCoAP" in name


__all__ = ["EXAMPLES", "is_reported", "needs_noco"]
