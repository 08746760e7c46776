"""`irstdlab data check|stats|preview|synth` end to end, in-process, on the real mini sets."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from irstdlab.harness.cli import main


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "dataset, fixture, images, targets, background, warned",
    [
        ("densesirst", "densesirst_root", 88, 1034, 0, 12),
        ("sirstv2", "sirstv2_root", 72, 62, 24, 1),
    ],
)
def test_check_json_is_clean(capsys, request, dataset, fixture, images, targets, background, warned):
    root = request.getfixturevalue(fixture)
    rc, out, err = run(capsys, ["data", "check", "--dataset", dataset, "--root", str(root), "--json"])
    assert rc == 0, out
    report = json.loads(out)  # exactly one JSON object
    assert report["errors"] == []
    assert (report["images"], report["targets"], report["background_images"]) == (images, targets, background)
    assert len(report["warnings"]) == warned
    assert report["box_mask_agreement"] > 0.98
    assert set(report["splits"]) >= {"train_" + ("v2" if dataset == "densesirst" else "full")}


@pytest.mark.shared_data
def test_check_readable_report(capsys, sirstv2_root):
    rc, out, _ = run(capsys, ["data", "check", "--dataset", "sirstv2", "--root", str(sirstv2_root),
                              "--split", "test_full", "--split", "val_full"])
    assert rc == 0
    assert "split test_full: 24 images, 17 targets, 8 background-only" in out
    assert "split val_full: 12 images, 10 targets, 4 background-only" in out
    assert "Misc_111.xml" in out and out.strip().endswith("OK")


@pytest.mark.shared_data
def test_stats_writes_plots_and_json(capsys, densesirst_root, tmp_path):
    out_dir = tmp_path / "stats"
    rc, out, _ = run(capsys, ["data", "stats", "--dataset", "densesirst", "--root", str(densesirst_root),
                              "--split", "val_v2", "--out", str(out_dir)])
    assert rc == 0 and str(out_dir / "stats.json") in out
    stats = json.loads((out_dir / "stats.json").read_text())
    assert stats["images"] == 16 and stats["targets"] == 214
    assert 0 < stats["sky_fraction"]["mean"] < 1
    assert stats["local_contrast"]["count"] == 214 and stats["local_contrast"]["min"] > 0
    assert 0 <= stats["brightness_rank"]["share_brightest_point"] < 1
    for name in ("target_size", "local_contrast", "brightness_rank", "sky_fraction"):
        png = out_dir / f"{name}.png"
        img = np.asarray(Image.open(png).convert("L"))
        assert img.shape[0] > 100 and img.std() > 5  # a real drawing, not a blank canvas


@pytest.mark.shared_data
def test_preview_draws_boxes_and_sky(capsys, densesirst_root, tmp_path):
    out = tmp_path / "misc100.png"
    rc, text, _ = run(capsys, ["data", "preview", "Misc_100", "--dataset", "densesirst",
                               "--root", str(densesirst_root), "--out", str(out)])
    assert rc == 0 and str(out) in text
    grey = np.asarray(Image.open(densesirst_root / "PNGImages" / "Misc_100.png").convert("L"))
    rgb = np.asarray(Image.open(out).convert("RGB"))
    assert rgb.shape[:2] == grey.shape
    red = (rgb[..., 0] > 200) & (rgb[..., 1] < 60) & (rgb[..., 2] < 60)
    assert red.sum() > 0  # box outlines
    sky = np.asarray(Image.open(densesirst_root / "SkySeg" / "PaletteMask" / "Misc_100.png")) == 1
    tinted = rgb[..., 2].astype(int) - rgb[..., 0].astype(int)  # blue minus red
    assert tinted[sky & ~red].mean() > tinted[~sky].mean() + 20


synthetic_missing = importlib.util.find_spec("irstdlab.datasets.synthetic") is None


@pytest.mark.skipif(synthetic_missing, reason="irstdlab.datasets.synthetic not in this checkout")
def test_synth_then_check_is_clean(capsys, tmp_path):
    root = tmp_path / "synth"
    rc, out, _ = run(capsys, ["data", "synth", "--out", str(root), "--images", "6", "--size", "128",
                              "--seed", "3", "--difficulty", "easy"])
    assert rc == 0
    summary = json.loads(out)
    assert summary["images"] == 6
    rc, out, _ = run(capsys, ["data", "check", "--dataset", "synthetic", "--root", str(root), "--json"])
    assert rc == 0, out
    report = json.loads(out)
    assert report["errors"] == [] and report["images"] == 6
    assert report["targets"] == summary["targets"] > 0
    assert report["box_mask_agreement"] is not None
