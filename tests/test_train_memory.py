"""``irstdlab models info --memory``: peak training memory at a batch size (a labelled estimate on the CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from irstdlab.harness.cli import main
from irstdlab.harness.train_memory import training_memory
from irstdlab.models import ModelConfig, build

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_models_info_memory_on_cpu_is_a_labelled_estimate(capsys):
    rc = main(["models", "info", "fcos", "--backbone", "resnet18", "--size", "64", "--memory", "--batch-size", "1",
               "--json"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    memory = info["train_memory"]
    if torch.cuda.is_available():
        pytest.skip("a CUDA device measures instead of estimating")
    assert memory["method"].startswith("estimated") and memory["device"] == "cpu" and memory["batch_size"] == 1
    # float32 parameters, gradients and momentum of the trainable ones, the saved activations, the input
    assert memory["params_bytes"] == 4 * info["params"]
    assert memory["saved_activation_bytes"] > 64 * 64 * 4 * 16  # at least a few feature maps of the input's size
    assert memory["peak_bytes"] == (memory["params_bytes"] + 2 * 4 * info["trainable_params"]
                                    + memory["saved_activation_bytes"] + 64 * 64 * 4)


def test_saved_activations_grow_with_the_batch():
    torch.manual_seed(0)
    model = build(ModelConfig.from_dict({"name": "fcos", "backbone": "resnet18"}))
    one = training_memory(model, 1, 64, torch.device("cpu"), amp=False)
    four = training_memory(model, 4, 64, torch.device("cpu"), amp=False)
    assert one.params_bytes == four.params_bytes
    assert 3.0 < four.saved_activation_bytes / one.saved_activation_bytes < 4.5  # activations scale with the batch


def test_models_info_memory_refuses_a_bad_batch(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["models", "info", "fcos", "--memory", "--batch-size", "0"])
    assert exc.value.code == 2
    assert "--batch-size" in capsys.readouterr().err
