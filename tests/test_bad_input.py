"""A generated bad-input corpus: real files copied into tmp_path, then broken one way each.

Every failure must be a DatasetError naming the exact file and the problem, and through the CLI one
line on stderr with exit 2 (no traceback).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from irstdlab.datasets import DatasetError, DenseSIRST, SirstV2, open_dataset
from irstdlab.datasets.checks import check_dataset
from irstdlab.harness.cli import main

pytestmark = pytest.mark.shared_data

IDS = ("Misc_100", "iraytek-130")  # a small and a large DenseSIRST image


def dense_files(ident: str) -> list[str]:
    return [f"PNGImages/{ident}.png", f"SIRST/BBox/{ident}.xml", f"SIRST/BinaryMask/{ident}_pixels0.png",
            f"SkySeg/PaletteMask/{ident}.png", f"SkySeg/BinaryMask/{ident}_pixels0.png"]


@pytest.fixture
def corpus(densesirst_root, tmp_path) -> Path:
    """A two-image DenseSIRST copy with split ``s``; each test breaks it one way."""
    root = tmp_path / "SIRSTdevkit"
    for ident in IDS:
        for rel in dense_files(ident):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(densesirst_root / rel, root / rel)
    (root / "Splits").mkdir()
    (root / "Splits" / "s.txt").write_text("\n".join(IDS))  # no trailing newline, like the originals
    return root


def load_all(root: Path, split: str = "s") -> None:
    for _ in DenseSIRST(root, split):
        pass


def set_box(root: Path, ident: str, **coords: str) -> Path:
    path = root / "SIRST" / "BBox" / f"{ident}.xml"
    text = path.read_text()
    for key, value in coords.items():  # replace the FIRST box's coordinate
        text = re.sub(rf"<{key}>[^<]*</{key}>", f"<{key}>{value}</{key}>", text, count=1)
    path.write_text(text)
    return path


def expect(fn, file: Path, *words: str) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        fn()
    err = info.value
    message = str(err)
    assert "\n" not in message
    assert err.file == str(file), message
    assert message.startswith(f"{file}: ")
    for word in words:
        assert word in err.problem, message
    return err


def test_the_untouched_corpus_loads(corpus):
    samples = list(DenseSIRST(corpus, "s"))
    assert [s.id for s in samples] == list(IDS) and all(s.num_targets > 0 for s in samples)


def test_garbage_png(corpus):
    path = corpus / "PNGImages" / "Misc_100.png"
    path.write_bytes(b"this is not a png at all")
    expect(lambda: load_all(corpus), path, "not a decodable image")


@pytest.mark.parametrize("relaxed", [False, True])
def test_truncated_png(corpus, monkeypatch, relaxed):
    # Some libraries relax Pillow globally; truncation must still be caught.
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", relaxed)
    path = corpus / "PNGImages" / "iraytek-130.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    expect(lambda: load_all(corpus), path, "truncated")


def test_truncated_mask(corpus):
    path = corpus / "SIRST" / "BinaryMask" / "Misc_100_pixels0.png"
    path.write_bytes(path.read_bytes()[:200])
    expect(lambda: load_all(corpus), path, "truncated")


def test_malformed_xml(corpus):
    path = corpus / "SIRST" / "BBox" / "Misc_100.xml"
    path.write_text("<annotation><object><bndbox><xmin>3</xmin></object>")
    expect(lambda: load_all(corpus), path, "malformed XML")


def test_box_outside_image(corpus):
    path = set_box(corpus, "Misc_100", xmax="10000")
    expect(lambda: load_all(corpus), path, "box 1", "outside")


def test_xmax_not_above_xmin(corpus):
    path = set_box(corpus, "Misc_100", xmin="31", xmax="30")
    err = expect(lambda: load_all(corpus), path)
    assert err.problem == "box 1 xmax (30) <= xmin (31)"


def test_ymax_not_above_ymin(corpus):
    path = set_box(corpus, "Misc_100", ymin="40", ymax="40")
    expect(lambda: load_all(corpus), path, "box 1 ymax (40) <= ymin (40)")


def test_non_numeric_coordinate(corpus):
    path = set_box(corpus, "Misc_100", ymin="twelve")
    expect(lambda: load_all(corpus), path, "box 1 ymin 'twelve' is not a number")


def test_missing_target_mask(corpus):
    path = corpus / "SIRST" / "BinaryMask" / "iraytek-130_pixels0.png"
    path.unlink()
    expect(lambda: load_all(corpus), path, "not found")


def test_mask_of_another_size(corpus):
    path = corpus / "SIRST" / "BinaryMask" / "Misc_100_pixels0.png"
    mask = Image.open(path)
    mask.resize((mask.width + 3, mask.height)).save(path)
    expect(lambda: load_all(corpus), path, "mask size", "differs from the image")


def test_sky_map_of_another_size(corpus):
    path = corpus / "SkySeg" / "PaletteMask" / "Misc_100.png"
    sky = Image.open(path)
    sky.crop((0, 0, sky.width, sky.height - 1)).save(path)
    expect(lambda: load_all(corpus), path, "differs from the image")


def test_missing_sky_map(corpus):
    palette = corpus / "SkySeg" / "PaletteMask" / "Misc_100.png"
    palette.unlink()
    (corpus / "SkySeg" / "BinaryMask" / "Misc_100_pixels0.png").unlink()
    expect(lambda: load_all(corpus), palette, "sky map not found")


def test_empty_split(corpus):
    path = corpus / "Splits" / "s.txt"
    path.write_text("\n  \n")
    expect(lambda: DenseSIRST(corpus, "s"), path, "split file is empty")


def test_missing_split(corpus):
    err = expect(lambda: DenseSIRST(corpus, "train_v2"), corpus / "Splits" / "train_v2.txt", "split file not found")
    assert "available splits: s" in err.problem


def test_id_without_image(corpus):
    (corpus / "Splits" / "s.txt").write_text("Misc_100\nghost_7\n")
    expect(lambda: DenseSIRST(corpus, "s"), corpus / "PNGImages" / "ghost_7.png", "'ghost_7'", "Splits/s.txt")


def test_unknown_dataset_name(corpus):
    with pytest.raises(DatasetError, match=r"unknown dataset 'nudt' \(expected one of densesirst, sirstv2"):
        open_dataset("nudt", corpus)


def test_missing_root(tmp_path):
    expect(lambda: open_dataset("densesirst", tmp_path / "nowhere"), tmp_path / "nowhere", "root not found")
    expect(lambda: SirstV2(tmp_path), tmp_path, "no mixed/ folder")


def test_sirstv2_zero_coordinate_is_outside_after_minus_one(sirstv2_root, tmp_path):
    ident = "Misc_119"
    for rel in (f"mixed/{ident}.png", f"annotations/bboxes/{ident}.xml", f"annotations/masks/{ident}_pixels0.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(sirstv2_root / rel, tmp_path / rel)
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "one.txt").write_text(ident)
    assert SirstV2(tmp_path, "one")[0].num_targets >= 1
    xml = tmp_path / "annotations" / "bboxes" / f"{ident}.xml"
    xml.write_text(re.sub(r"<xmin>[^<]*</xmin>", "<xmin>0</xmin>", xml.read_text(), count=1))
    expect(lambda: SirstV2(tmp_path, "one")[0], xml, "box 1 [-1,", "outside")


def test_check_collects_every_error(corpus):
    (corpus / "PNGImages" / "Misc_100.png").write_bytes(b"garbage")
    set_box(corpus, "iraytek-130", xmin="50", xmax="20")
    (corpus / "SIRST" / "BinaryMask" / "iraytek-130_pixels0.png").unlink()
    (corpus / "Splits" / "s.txt").write_text("Misc_100\niraytek-130\nghost\n")
    (corpus / "Splits" / "empty.txt").write_text("")
    report = check_dataset("densesirst", corpus)
    assert not report.ok
    found = [(Path(e["file"]).name, e["problem"]) for e in report.errors]
    expected = {
        ("empty.txt", "split file is empty"),
        ("Misc_100.png", "not a decodable image"),
        ("iraytek-130.xml", "box 1 xmax (20) <= xmin (50)"),
        ("iraytek-130_pixels0.png", "file not found"),
        ("ghost.png", "image not found for id 'ghost' listed in Splits/s.txt"),
    }
    assert len(found) == len(expected)
    for name, prefix in expected:
        assert sum(f == name and p.startswith(prefix) for f, p in found) == 1, (name, found)
    assert report.splits == {"s": 3}


# ---------------------------------------------------------------------------------------- CLI
def _one_line_error(capsys, argv: list[str], *words: str) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("irstdlab: error: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0]
    return lines[0]


def test_cli_truncated_image_is_one_line(corpus, capsys, tmp_path):
    path = corpus / "PNGImages" / "iraytek-130.png"
    path.write_bytes(path.read_bytes()[:3000])
    _one_line_error(capsys, ["data", "stats", "--dataset", "densesirst", "--root", str(corpus),
                             "--split", "s", "--out", str(tmp_path / "st")], str(path), "truncated")
    _one_line_error(capsys, ["data", "preview", "iraytek-130", "--dataset", "densesirst", "--root", str(corpus),
                             "--out", str(tmp_path / "p.png")], str(path))


def test_cli_missing_root_and_split(corpus, capsys, tmp_path):
    _one_line_error(capsys, ["data", "check", "--dataset", "sirstv2", "--root", str(tmp_path / "no")], "root not found")
    _one_line_error(capsys, ["data", "stats", "--dataset", "densesirst", "--root", str(corpus), "--split", "test_v2",
                             "--out", str(tmp_path / "st")], "test_v2.txt: split file not found")


def test_cli_check_reports_errors_with_exit_2(corpus, capsys):
    set_box(corpus, "Misc_100", xmax="-5")
    rc = main(["data", "check", "--dataset", "densesirst", "--root", str(corpus), "--json"])
    out, err = capsys.readouterr()
    assert rc == 2 and err == ""
    report = json.loads(out)
    assert [Path(e["file"]).name for e in report["errors"]] == ["Misc_100.xml"]
    assert report["images"] == 2


def test_console_script_subprocess_one_line(corpus, tmp_path):
    (corpus / "SIRST" / "BBox" / "Misc_100.xml").write_text("<annotation><object>")
    script = Path(sys.executable).parent / "irstdlab"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "irstdlab.harness.cli"]
    proc = subprocess.run(
        cmd + ["data", "preview", "Misc_100", "--dataset", "densesirst", "--root", str(corpus),
               "--out", str(tmp_path / "p.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"irstdlab: error: {corpus / 'SIRST' / 'BBox' / 'Misc_100.xml'}: malformed XML "
                     f"(no element found: line 1, column 20)"]
    assert "Traceback" not in proc.stderr and not (tmp_path / "p.png").exists()


def test_xml_size_disagrees_with_image(corpus):
    path = corpus / "SIRST" / "BBox" / "Misc_100.xml"
    path.write_text(re.sub(r"<width>\d+</width>", "<width>999</width>", path.read_text(), count=1))
    expect(lambda: load_all(corpus), path, "<size> 999x", "differs from the image's")


def test_sixteen_bit_image_is_refused(corpus):
    import numpy as np

    path = corpus / "PNGImages" / "Misc_100.png"
    width, height = Image.open(path).size
    Image.fromarray(np.full((height, width), 40000, dtype=np.uint16)).save(path)
    expect(lambda: load_all(corpus), path, "unsupported image mode")
