"""Readers of the two published on-disk layouts, DenseSIRST and SIRST-V2, without converting any file.

Both return :class:`Sample` objects with boxes in exact pixel-edge geometry ``[x0, y0, x1 + 1, y1 + 1]``:
* DenseSIRST XML (``SIRST/BBox``) already stores that form (0-based, exclusive max).
* SIRST-V2 XML (``annotations/bboxes``) is 1-based: all four numbers are reduced by 1.

``protocol="reference"`` reproduces a quirk of the released BAFE-Net loader (``minus_one=True``): it
subtracts 1 from DenseSIRST boxes too, so every box sits one pixel up-left of the target. Use it only to
compare with the paper's numbers; ``"clean"`` is the true geometry. Boxes are validated on the clean
geometry before that shift (a target in column 0 legitimately gets xmin -1 under "reference").

Decoding is lazy: the constructor reads the split list and checks that every listed image exists;
pixels, boxes and masks are read on ``__getitem__``.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from irstdlab.datasets import io
from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.sample import Sample

PROTOCOLS = ("clean", "reference")


class VocLayoutReader:
    """Shared logic of the VOC-like IRSTD layouts; subclasses only name their folders."""

    name: ClassVar[str]
    image_dir: ClassVar[str]
    box_dir: ClassVar[str]
    target_mask_dir: ClassVar[str]
    split_dir: ClassVar[str]
    default_split: ClassVar[str]
    box_offset: ClassVar[float]  # added to the XML numbers to get clean pixel-edge boxes
    reference_extra_offset: ClassVar[float] = 0.0  # the released code's additional shift, "reference" only
    # Mask connectivity under which boxes equal the mask's connected components (measured on the mini sets).
    connectivity: ClassVar[int]
    has_sky: ClassVar[bool] = False

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        protocol: str = "clean",
        load_masks: bool = True,
        *,
        verify_ids: bool = True,
        ids: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split or self.default_split
        if protocol not in PROTOCOLS:
            raise DatasetError(None, f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
        self.protocol = protocol
        self.load_masks = load_masks
        self.check_root(self.root)
        self.split_file = self.root / self.split_dir / f"{self.split}.txt"
        if ids is not None:  # explicit ids (e.g. `data preview ID`): no split file involved
            self.split = split or "custom"
            self.ids = list(ids)
            where = "requested"
        else:
            if not self.split_file.is_file():
                available = ", ".join(self.available_splits(self.root)) or "none"
                raise DatasetError(self.split_file, f"split file not found (available splits: {available})")
            self.ids = io.read_split(self.split_file)
            where = f"listed in {self.split_dir}/{self.split}.txt"
        # verify_ids=False lets checks.py list every missing image instead of stopping at the first.
        for ident in self.ids if verify_ids else ():
            if not self.image_path(ident).is_file():
                raise DatasetError(self.image_path(ident), f"image not found for id {ident!r} {where}")
        self._index = {ident: i for i, ident in enumerate(self.ids)}

    # -- layout ---------------------------------------------------------------------------------
    @classmethod
    def check_root(cls, root: Path) -> None:
        if not root.is_dir():
            raise DatasetError(root, f"{cls.name} root not found")
        if not (root / cls.image_dir).is_dir():
            raise DatasetError(root, f"not a {cls.name} root: no {cls.image_dir}/ folder inside")

    @classmethod
    def available_splits(cls, root: str | Path) -> list[str]:
        return sorted(p.stem for p in (Path(root) / cls.split_dir).glob("*.txt"))

    def image_path(self, ident: str) -> Path:
        return self.root / self.image_dir / f"{ident}.png"

    def box_path(self, ident: str) -> Path:
        return self.root / self.box_dir / f"{ident}.xml"

    def target_mask_path(self, ident: str) -> Path:
        return self.root / self.target_mask_dir / f"{ident}_pixels0.png"

    # -- per-file reads (checks.py calls them one by one to collect every error) ----------------
    def read_image(self, ident: str) -> np.ndarray:
        return io.read_image(self.image_path(ident))

    def read_boxes(self, ident: str, size: tuple[int, int]) -> np.ndarray:
        """Clean pixel-edge boxes, validated against the image size; then the protocol's shift."""
        path = self.box_path(ident)
        voc = io.read_voc_boxes(path)
        if voc.size is not None and voc.size != tuple(size):
            raise DatasetError(
                path, f"<size> {voc.size[1]}x{voc.size[0]} (WxH) differs from the image's {size[1]}x{size[0]}"
            )
        boxes = voc.boxes + np.float32(self.box_offset)
        io.check_boxes(boxes, size, path)
        if self.protocol == "reference":
            boxes = boxes + np.float32(self.reference_extra_offset)
        return boxes.astype(np.float32)

    def read_target_mask(self, ident: str, size: tuple[int, int]) -> np.ndarray:
        return io.read_binary_mask(self.target_mask_path(ident), size)

    def read_sky(self, ident: str, size: tuple[int, int]) -> np.ndarray | None:
        return None

    # -- dataset protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self.ids) <= index < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} samples")
        return self.sample(self.ids[index])

    def __iter__(self):
        return (self.sample(ident) for ident in self.ids)

    def sample(self, ident: str) -> Sample:
        """Any id with an image in this root (it need not be in the current split)."""
        image = self.read_image(ident)
        size = (int(image.shape[0]), int(image.shape[1]))
        return Sample(
            id=ident,
            image=image,
            boxes=self.read_boxes(ident, size),
            sky=self.read_sky(ident, size),
            target_mask=self.read_target_mask(ident, size) if self.load_masks else None,
            orig_size=size,
            meta={"dataset": self.name, "split": self.split, "protocol": self.protocol},
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)}, protocol={self.protocol!r})"


class DenseSIRST(VocLayoutReader):
    """``SIRSTdevkit/``: PNGImages, SIRST/BBox (0-based, exclusive max), SIRST/BinaryMask, SkySeg, Splits."""

    name = "DenseSIRST"
    image_dir = "PNGImages"
    box_dir = "SIRST/BBox"
    target_mask_dir = "SIRST/BinaryMask"
    split_dir = "Splits"
    default_split = "train_v2"
    box_offset = 0.0
    reference_extra_offset = -1.0  # BAFE's minus_one=True on already 0-based boxes
    connectivity = 4
    has_sky = True

    def sky_paths(self, ident: str) -> tuple[Path, Path]:
        """(palette map with indices 0/1, binary map with 255 = sky) - the first that exists is used."""
        return (
            self.root / "SkySeg" / "PaletteMask" / f"{ident}.png",
            self.root / "SkySeg" / "BinaryMask" / f"{ident}_pixels0.png",
        )

    def read_sky(self, ident: str, size: tuple[int, int]) -> np.ndarray:
        palette, binary = self.sky_paths(ident)
        if palette.is_file():
            return io.read_palette_labels(palette, size)
        if binary.is_file():
            return io.read_binary_mask(binary, size)
        raise DatasetError(palette, f"sky map not found (nor {binary.relative_to(self.root)})")


class SirstV2(VocLayoutReader):
    """``open-sirst-v2/``: mixed, annotations/bboxes (1-based), annotations/masks, splits. No sky map."""

    name = "SIRST-V2"
    image_dir = "mixed"
    box_dir = "annotations/bboxes"
    target_mask_dir = "annotations/masks"
    split_dir = "splits"
    default_split = "train_full"
    box_offset = -1.0  # 1-based VOC numbers -> 0-based pixel edges
    reference_extra_offset = 0.0  # the released code's -1 is exactly our box_offset here
    connectivity = 8


READERS: dict[str, type[VocLayoutReader]] = {
    "densesirst": DenseSIRST,
    "sirstv2": SirstV2,
    # what `irstdlab data synth` writes: the DenseSIRST layout
    "synthetic": DenseSIRST,
}


def reader_class(name: str) -> type[VocLayoutReader]:
    try:
        return READERS[name.lower()]
    except KeyError:
        raise DatasetError(None, f"unknown dataset {name!r} (expected one of {', '.join(READERS)})") from None


def open_dataset(
    name: str,
    root: str | Path,
    split: str | None = None,
    protocol: str = "clean",
    load_masks: bool = True,
) -> VocLayoutReader:
    """Open a published layout by name: ``"densesirst"`` (default split train_v2), ``"sirstv2"``
    (train_full) or ``"synthetic"`` (a set written by ``irstdlab data synth``, DenseSIRST layout)."""
    return reader_class(name)(root, split=split, protocol=protocol, load_masks=load_masks)
