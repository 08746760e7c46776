"""Decoding of the files the published IRSTD layouts are made of: images, masks, VOC XML boxes, split lists.

Every failure becomes a one-line :class:`DatasetError` naming the file and the problem.

Grey conversion rule (the ONE rule of the project, used for every image):
    decode with Pillow, then ``Image.convert("L")``. For RGB that is ITU-R BT.601 luma,
    ``L = (19595 R + 38470 G + 7471 B + 2**15) >> 16`` (i.e. round(0.299 R + 0.587 G + 0.114 B));
    RGBA and LA drop the alpha channel first (both data sets only carry alpha = 255);
    palette (P) images are expanded through their palette to RGB, then take the same luma;
    grey (L) images are returned unchanged; 1-bit images become 0/255.
    16-bit and float images are rejected: no published IRSTD layout uses them, and a silent
    rescale would change the contrast statistics.
The released reference code instead reads BGR with OpenCV and replicates grey into three channels;
for grey files (the vast majority) both give the same pixels.

Truncated PNGs: Pillow raises on ``load()`` unless ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set
(some libraries set it globally); in that case we also run ``verify()`` so truncation is never
accepted silently.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from irstdlab.datasets.errors import DatasetError

_GREY_CONVERTIBLE = {"L", "RGB", "RGBA", "P", "PA", "LA", "1", "CMYK", "YCbCr"}


def _open_decoded(path: Path) -> Image.Image:
    """Open and fully decode an image file; any decode failure becomes a DatasetError."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        with warnings.catch_warnings():
            # Pillow warns above MAX_IMAGE_PIXELS and raises above twice that; no IRSTD frame is
            # anywhere near either, so both mean a forged or broken header: refuse before decoding.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if ImageFile.LOAD_TRUNCATED_IMAGES:
                # Someone relaxed Pillow globally; verify() still walks every chunk and its CRC.
                with Image.open(path) as probe:
                    probe.verify()
            img = Image.open(path)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(path, f"image header claims too many pixels to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise DatasetError(path, "not a decodable image (corrupt or not an image file)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(path, f"corrupt or truncated image ({exc})") from None
    return img


def to_grey(img: Image.Image, path: str | Path = "<image>") -> np.ndarray:
    """Apply the module's grey conversion rule to a decoded Pillow image -> uint8 H x W."""
    if img.mode not in _GREY_CONVERTIBLE:
        raise DatasetError(path, f"unsupported image mode {img.mode!r} (expected 8-bit grey, RGB, RGBA or palette)")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGB" if img.mode != "LA" else "L")  # drop alpha before the luma
    grey = img if img.mode == "L" else img.convert("L")
    return np.asarray(grey, dtype=np.uint8).copy()


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as grey uint8 H x W (see the module docstring for the rule)."""
    path = Path(path)
    return to_grey(_open_decoded(path), path)


def read_binary_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a 0/255 (or 0/1) mask as uint8 0/1: any non-zero value is foreground.

    ``size`` = expected (H, W); a mismatch is an error naming both sizes.
    """
    path = Path(path)
    img = _open_decoded(path)
    if img.mode == "P":  # a palette mask: its indices are the labels
        arr = np.asarray(img)
    else:
        arr = to_grey(img, path)
    _check_size(path, arr, size)
    return (arr > 0).astype(np.uint8)


def read_palette_labels(path: str | Path, size: tuple[int, int] | None = None, num_labels: int = 2) -> np.ndarray:
    """Read a palette PNG's INDICES (not its colours), e.g. DenseSIRST sky maps: 0 non-sky, 1 sky."""
    path = Path(path)
    img = _open_decoded(path)
    if img.mode not in ("P", "L"):
        raise DatasetError(path, f"expected a palette (P) or grey label image, got mode {img.mode!r}")
    arr = np.asarray(img, dtype=np.uint8).copy()
    _check_size(path, arr, size)
    if arr.size and int(arr.max()) >= num_labels:
        raise DatasetError(path, f"label value {int(arr.max())} outside 0..{num_labels - 1}")
    return arr


def _check_size(path: Path, arr: np.ndarray, size: tuple[int, int] | None) -> None:
    if size is not None and tuple(arr.shape[:2]) != tuple(size):
        raise DatasetError(
            path,
            f"mask size {arr.shape[1]}x{arr.shape[0]} (WxH) differs from the image's {size[1]}x{size[0]}",
        )


@dataclass
class VocBoxes:
    """The boxes of one VOC-like XML file, as written (no offset applied)."""

    boxes: np.ndarray  # float32 N x 4, xmin ymin xmax ymax as in the file
    size: tuple[int, int] | None  # (H, W) from <size>, None when absent


_COORDS = ("xmin", "ymin", "xmax", "ymax")


def read_voc_boxes(path: str | Path) -> VocBoxes:
    """Parse ``<object><bndbox>`` boxes. An ``<object>`` without ``<bndbox>`` means "no target"
    (SIRST-V2 background images) and is skipped. Boxes are numbered from 1 in messages."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(path, f"malformed XML ({exc})") from None
    boxes: list[list[float]] = []
    numbered = 0
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            continue
        numbered += 1
        row = []
        for key in _COORDS:
            node = bndbox.find(key)
            text = None if node is None else (node.text or "").strip()
            if not text:
                raise DatasetError(path, f"box {numbered} has no {key}")
            try:
                value = float(text)
            except ValueError:
                raise DatasetError(path, f"box {numbered} {key} {text!r} is not a number") from None
            if not np.isfinite(value):
                raise DatasetError(path, f"box {numbered} {key} {text!r} is not finite")
            row.append(value)
        boxes.append(row)
    return VocBoxes(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), _voc_size(root, path))


def _voc_size(root: ET.Element, path: Path) -> tuple[int, int] | None:
    size = root.find("size")
    if size is None or size.find("width") is None or size.find("height") is None:
        return None
    try:
        return int(float(size.findtext("height") or "")), int(float(size.findtext("width") or ""))
    except (TypeError, ValueError):
        raise DatasetError(path, "<size> width/height is not a number") from None


def check_boxes(boxes: np.ndarray, size: tuple[int, int], path: str | Path) -> None:
    """Raise on the first degenerate or out-of-image box (pixel-edge xyxy, image (H, W))."""
    height, width = size
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist(), start=1):
        if x1 <= x0:
            raise DatasetError(path, f"box {i} xmax ({x1:g}) <= xmin ({x0:g})")
        if y1 <= y0:
            raise DatasetError(path, f"box {i} ymax ({y1:g}) <= ymin ({y0:g})")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise DatasetError(
                path, f"box {i} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] lies outside the {width}x{height} image"
            )


def read_split(path: str | Path) -> list[str]:
    """One id per line; trailing newline optional, blank lines and surrounding spaces ignored."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "split file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not part of the first id
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"split file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                                 f"{exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise DatasetError(path, f"unreadable split file ({exc.strerror or exc})") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise DatasetError(path, "split file is empty")
    seen: set[str] = set()
    for ident in ids:
        if ident in seen:
            raise DatasetError(path, f"id {ident!r} is listed twice")
        seen.add(ident)
    return ids
