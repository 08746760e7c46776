"""`irstdlab train PRESET --dry-run [--json]`: validate, print the resolved config, start nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import yaml
from irstdlab.harness.cli import main
from irstdlab.harness.config import TrialConfig, load_config


def test_json_is_the_resolved_config_and_nothing_starts(tmp_path):
    storage = tmp_path / "runs"
    # a fresh interpreter, so "Ray was never imported" is a fact about this command alone
    script = textwrap.dedent(f"""
        import sys
        from irstdlab.harness.cli import main
        rc = main(["train", "paper_bafenet_r18", "--dry-run", "--json", "--storage", {str(storage)!r},
                   "--set", "schedule.epochs=7", "--workers", "2"])
        assert "ray" not in sys.modules, "dry run imported Ray"
        sys.exit(rc)
    """)
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout.strip().splitlines()[-1])
    expected = load_config("paper_bafenet_r18", ["schedule.epochs=7"])
    assert plan["config"] == expected.to_dict() and plan["config"]["schedule"]["epochs"] == 7
    assert plan["config_hash"] == expected.config_hash
    assert TrialConfig.from_dict(plan["config"]).config_hash == plan["config_hash"]  # round-trips
    assert plan["run"]["workers"] == 2 and plan["run"]["ray"] is True
    assert "nothing was started" in done.stderr
    assert not storage.exists()  # no run folder


def test_text_output_is_yaml_of_the_config(tmp_path, capsys):
    rc = main(["train", "quickstart", "--dry-run", "--storage", str(tmp_path / "runs"), "--set", "model.name=bafenet"])
    captured = capsys.readouterr()
    assert rc == 0
    assert yaml.safe_load(captured.out) == load_config("quickstart", ["model.name=bafenet"]).to_dict()
    assert not (tmp_path / "runs").exists()


def test_invalid_configs_fail_in_one_line(tmp_path, capsys):
    storage = tmp_path / "runs"
    cases = [
        ["quickstart", "--set", "model.bogus=1"],
        ["quickstart", "--set", "schedule.epochs=0"],
        ["quickstart", "--workers", "0"],
        # only the detector's builder knows this one: the dry run builds the model on the meta device
        ["quickstart", "--set", "model.name=fcos_tv", "--set", "model.fpn_channels=48", "--set", "model.norm_groups=32"],
    ]
    for argv in cases:
        try:
            rc = main(["train", *argv, "--dry-run", "--json", "--storage", str(storage)])
        except SystemExit as exc:  # argparse's own range checks exit from the parser
            rc = exc.code
        captured = capsys.readouterr()
        assert rc == 2, argv
        assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, argv
    assert not storage.exists()
