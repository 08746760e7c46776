"""`irstdlab models list|info`, run in-process through the real CLI entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from irstdlab.harness.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse refuses an option value before any handler runs
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_list_names_each_model_with_a_description(capsys):
    rc, out, _ = run(capsys, ["models", "list"])
    assert rc == 0
    rows = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert "fcos" in rows and "FCOS" in rows["fcos"]


def test_info_prints_params_and_gmacs(capsys):
    rc, out, _ = run(capsys, ["models", "info", "fcos", "--size", "256", "--backbone", "resnet18", "--set", "num_levels=3"])
    assert rc == 0
    assert "params     " in out and "GMACs" in out and "strides [8, 16, 32]" in out
    from irstdlab.harness.complexity import profile
    from irstdlab.models import build

    report = profile(build({"backbone": "resnet18", "num_levels": 3}), (256, 256))
    assert f"{report.params:,}" in out and f"{report.gmacs:.3f} GMACs" in out


def test_info_json(capsys):
    rc, out, _ = run(capsys, ["models", "info", "fcos", "--size", "128", "--backbone", "resnet18", "--set", "model.p2=true", "--json"])
    assert rc == 0
    info = json.loads(out)
    assert info["level_strides"] == [4, 8, 16, 32, 64, 128] and info["regress_ranges"][-1] == [512.0, "inf"]
    assert info["params"] > info["trainable_params"] > 0 and info["gmacs"] > 0


def test_info_oscar_reports_its_own_pyramid(capsys):
    rc, out, _ = run(capsys, ["models", "info", "oscar", "--size", "512", "--json"])
    info = json.loads(out)
    assert rc == 0 and info["level_strides"] == [4, 8] and "regress_ranges" not in info
    assert info["params"] == 17_656_815 and round(info["gmacs"], 1) == 68.2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["models", "info", "nope"], "model.name: unknown model 'nope'"),
        (["models", "info", "fcos", "--set", "p=2"], "model.p: must be in (0, 1]"),
        (["models", "info", "fcos", "--set", "colour=red"], "model.colour: unknown key; valid keys are"),
        (["models", "info", "fcos", "--backbone", "vgg16"], "model.backbone: 'vgg16' is not one of"),
        (["models", "info", "fcos", "--set", "noequals"], "expected key.path=value"),
        (["models", "info", "fcos", "--set", "pretrained=/no/such.pth", "--backbone", "resnet18"], "model.pretrained: /no/such.pth: no such file"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    rc, _, err = run(capsys, argv)
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("irstdlab: error: ") and message in err, err


def test_an_out_of_range_size_is_refused_by_the_parser_in_one_line(capsys):
    rc, _, err = run(capsys, ["models", "info", "fcos", "--size", "0"])
    assert rc == 2
    assert err.count("\n") == 1 and "--size: must be an integer >= 32 and <= 4096, got 0" in err, err


def test_registering_the_group_does_not_import_torch():
    code = (
        "import argparse, sys; from irstdlab.harness import cli_models; "
        "cli_models.register(argparse.ArgumentParser().add_subparsers()); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
