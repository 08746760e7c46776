"""Issue 17 part B, data class, through the real CLI: decompression bombs, too-small synthetic sets,
stale files after ``--overwrite``, BOMs and non-UTF-8 bytes in split files."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

FOLDERS = ("PNGImages", "SIRST/BBox", "SIRST/BinaryMask", "SkySeg/BinaryMask", "SkySeg/PaletteMask")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", *args], cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)


def synth(root: Path, images: int, *extra: str) -> subprocess.CompletedProcess:
    return cli("data", "synth", "--out", str(root), "--images", str(images), *extra, cwd=root.parent)


def check(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("data", "check", "--dataset", "synthetic", "--root", str(root), *extra, cwd=root.parent)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height grey pixels; the data is a few bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def five(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "five"
    assert synth(root, 5).returncode == 0
    return root


@pytest.mark.parametrize("images, extra, words", [
    (1, (), ("--images", "at least 3")),
    (2, (), ("--images", "at least 3")),
    (3, ("--seed", "-1"), ("--seed", "got -1")),  # argparse's range check, before anything is written
    (3, ("--size", "100"), ("--size", "got 100")),
])
def test_synth_refuses_bad_arguments_and_writes_nothing(tmp_path, images, extra, words):
    result = synth(tmp_path / "few", images, *extra)
    err = result.stderr.strip()
    assert result.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err
    assert not (tmp_path / "few").exists()


def test_three_images_give_every_split_one_and_check_passes(tmp_path):
    root = tmp_path / "three"
    assert synth(root, 3).returncode == 0
    for split in ("train", "val", "test"):
        assert len((root / "Splits" / f"{split}_v2.txt").read_text().split()) == 1
    result = check(root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "errors: 0" in result.stdout


def test_overwrite_removes_stale_synthetic_files_but_keeps_foreign_ones(tmp_path):
    root = tmp_path / "set"
    assert synth(root, 12).returncode == 0
    (root / "PNGImages" / "notes.txt").write_text("mine")
    (root / "PNGImages" / "Misc_1.png").write_bytes(b"not ours")
    assert synth(root, 5, "--overwrite").returncode == 0
    listed = set((root / "Splits" / "trainval_v2.txt").read_text().split()) | set(
        (root / "Splits" / "test_v2.txt").read_text().split())
    assert len(listed) == 5
    for folder in FOLDERS:
        synthetic = {p.name.split(".")[0].removesuffix("_pixels0") for p in (root / folder).glob("synth_*")}
        assert synthetic == listed, folder
    assert (root / "PNGImages" / "notes.txt").read_text() == "mine"
    assert (root / "PNGImages" / "Misc_1.png").read_bytes() == b"not ours"
    assert check(root).returncode == 0


@pytest.mark.parametrize("width, height", [(30000, 30000), (12000, 12000)])
def test_decompression_bomb_is_a_bad_file_and_the_check_goes_on(five, tmp_path, width, height):
    import shutil

    root = tmp_path / "bomb"
    shutil.copytree(five, root)
    victim = root / "PNGImages" / "synth_train_00000.png"
    victim.write_bytes(png_header_only(width, height))
    result = check(root)
    assert result.returncode == 2 and "Traceback" not in result.stdout + result.stderr
    errors = [line.strip() for line in result.stdout.splitlines() if str(victim) in line]
    assert len(errors) == 1 and "too many pixels" in errors[0], result.stdout
    assert "errors: 1" in result.stdout
    assert "split test_v2: 1 images" in result.stdout  # the other splits were still checked
    # elsewhere the same file is one line on stderr
    shown = cli("data", "preview", "synth_train_00000", "--dataset", "synthetic", "--root", str(root),
                "--out", str(tmp_path / "preview.png"), cwd=tmp_path)
    err = shown.stderr.strip()
    assert shown.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(victim) in err and "too many pixels" in err
    assert not (tmp_path / "preview.png").exists()


def test_split_file_with_a_bom_reads_its_first_id(five, tmp_path):
    import shutil

    root = tmp_path / "bom"
    shutil.copytree(five, root)
    split = root / "Splits" / "test_v2.txt"
    split.write_bytes(b"\xef\xbb\xbf" + split.read_bytes())
    result = check(root, "--split", "test_v2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "split test_v2: 1 images" in result.stdout


def test_split_file_not_utf8_is_named(five, tmp_path):
    import shutil

    root = tmp_path / "latin"
    shutil.copytree(five, root)
    split = root / "Splits" / "test_v2.txt"
    split.write_bytes(split.read_bytes() + "caf\xe9\n".encode("latin-1"))
    result = check(root, "--split", "test_v2")
    out = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in out
    assert f"{split}: split file is not UTF-8 text (byte 0xe9" in out
