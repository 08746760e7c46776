"""A worker's own error, as Ray wraps it (its formatted traceback inside another exception's text),
is read back the same way for ``irstdlab train`` and the search's train backend."""

from __future__ import annotations

import traceback

import pytest

pytest.importorskip("ray")

from irstdlab.datasets.errors import DatasetError  # noqa: E402
from irstdlab.harness.errors import ConfigError, UserError  # noqa: E402
from irstdlab.harness.ray_runtime import worker_failure  # noqa: E402
from irstdlab.harness.trial import TrialDiverged  # noqa: E402


def wrapped(error: BaseException) -> RuntimeError:
    """What the driver sees: the worker's traceback text inside Ray's own error."""
    try:
        raise error
    except BaseException as exc:  # noqa: BLE001 - formatting whatever the worker raised
        text = "".join(traceback.format_exception(exc))
    return RuntimeError(f"Training failed due to worker error:\n{text}")


def test_divergence_is_final_and_reads_as_one_line():
    failure = worker_failure(wrapped(TrialDiverged("diverged at epoch 1, iteration 1 (loss term loss_cls = nan)")))
    assert failure is not None and failure.diverged
    assert str(failure.as_user_error()) == "trial failed: diverged at epoch 1, iteration 1 (loss term loss_cls = nan)"


@pytest.mark.parametrize("error", [ConfigError("data.root: /x not found"), DatasetError("/x/a.txt", "line 3: bad")])
def test_input_errors_are_user_errors_and_not_divergence(error):
    failure = worker_failure(wrapped(error))
    assert failure is not None and not failure.diverged
    assert isinstance(failure.as_user_error(), UserError) and str(failure.as_user_error()) == str(error)


def test_other_failures_are_not_mapped():
    assert worker_failure(wrapped(RuntimeError("NCCL timeout"))) is None
