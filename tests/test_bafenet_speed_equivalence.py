"""BAFE-Net's speed work changed no number: losses, gradients, head outputs and detections of the
released head (paper_bafenet_r18 geometry, LSK module on) and of the quickstart variant match what
the code computed before the optimisation (tests/data/bafenet_speed_reference.pt).

The reference file holds fingerprints, not whole tensors (it must stay small): per tensor its
float64 sum, sum of absolute values and sum of squares, plus a fixed strided sample of elements.
Comparisons are tight (relative 1e-5 of the tensor's scale) rather than bitwise because the
LSK attention now runs channels-last (depth-wise convs, the dilated one over its phase grids, 1x1
convs as matrix products) and adds the same products in another order; measured, the largest
deviation is 5e-6 of a tensor's rms (the LSK module's gradients), losses and detections agree; the
channel
selection (a discrete top-K) must pick exactly the same channels, which the sampled
values would expose at once (a swapped channel moves values by their whole size).

Regenerate only from code whose outputs are known right (e.g. the commit before a speed change):

    python tests/test_bafenet_speed_equivalence.py --write
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from irstdlab.harness.config import load_config
from irstdlab.models import build

REFERENCE = Path(__file__).resolve().parent / "data" / "bafenet_speed_reference.pt"
SAMPLES = 12  # sampled elements per tensor
# score_thr 0 so that an untrained head still returns detections to compare
EVAL_OVERRIDES = {"score_thr": 0.0, "max_per_img": 20}
VARIANTS: dict[str, dict[str, Any]] = {
    # the released head at the paper's geometry, a smaller image to keep the test fast
    "released": {"preset": "paper_bafenet_r18", "size": 128, "model": {"pretrained": None}},
    # the quickstart preset's detector with model.name=bafenet (no LSK module, 64 wide, one P2 level)
    "quickstart": {"preset": "quickstart", "size": 128, "model": {"name": "bafenet"}},
}


def _model_config(variant: str) -> dict[str, Any]:
    spec = VARIANTS[variant]
    fields = dict(load_config(spec["preset"]).model.__dict__)
    fields.update(spec["model"], **EVAL_OVERRIDES)
    return fields


def _batch(size: int) -> tuple[Tensor, list[dict[str, Tensor]]]:
    g = torch.Generator().manual_seed(7)
    images = (40 + 30 * torch.rand(2, 1, size, size, generator=g)).round()
    boxes = [torch.tensor([[10.0, 12.0, 15.0, 16.0], [60.0, 70.0, 66.0, 75.0], [90.0, 20.0, 120.0, 44.0]]),
             torch.tensor([[33.0, 90.0, 37.0, 93.0]])]
    targets = []
    for b, bx in enumerate(boxes):
        for x0, y0, x1, y1 in bx.int().tolist():
            images[b, 0, y0:y1, x0:x1] = 220
        sky = torch.zeros(size, size, dtype=torch.uint8)
        sky[: size // 2] = 1
        sky[size - size // 8:] = 255
        targets.append({"boxes": bx, "sky": sky})
    return images, targets


def fingerprint(t: Tensor) -> Tensor:
    """[numel, sum, sum |x|, sum x^2, SAMPLES evenly strided elements] in float64."""
    flat = t.detach().reshape(-1).double()
    idx = torch.linspace(0, flat.numel() - 1, min(SAMPLES, flat.numel())).round().long()
    stats = torch.stack([torch.tensor(float(flat.numel()), dtype=torch.float64), flat.sum(), flat.abs().sum(),
                         flat.square().sum()])
    return torch.cat([stats, flat[idx]])


def compute(variant: str) -> dict[str, Tensor]:
    """One train-mode forward + backward and one eval-mode forward, fingerprinted."""
    torch.manual_seed(0)
    model = build(_model_config(variant))
    images, targets = _batch(VARIANTS[variant]["size"])
    out: dict[str, Tensor] = {}
    model.train()
    losses = model(images, targets)
    for name, value in losses.items():
        out[f"loss/{name}"] = value.detach().double().reshape(1)
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            out[f"grad/{name}"] = fingerprint(p.grad)
    model.eval()
    with torch.no_grad():
        raw = model.forward_raw(images)
        for key, maps in raw.items():
            for level, m in enumerate(maps):
                out[f"eval/{key}/{level}"] = fingerprint(m)
        for b, det in enumerate(model(images)):
            out[f"det/{b}"] = torch.cat([det["boxes"], det["scores"][:, None]], dim=1).double()
    return out


def pack(values: dict[str, Tensor]) -> dict[str, Any]:
    """One flat tensor per variant: a zip entry per small tensor would triple the file."""
    names = sorted(values)
    return {"names": names, "shapes": [list(values[n].shape) for n in names],
            "flat": torch.cat([values[n].reshape(-1) for n in names])}


def unpack(packed: dict[str, Any]) -> dict[str, Tensor]:
    out, start = {}, 0
    for name, shape in zip(packed["names"], packed["shapes"]):
        n = int(torch.tensor(shape).prod())
        out[name] = packed["flat"][start:start + n].reshape(shape)
        start += n
    return out


def _assert_matches(name: str, got: Tensor, ref: Tensor) -> None:
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    if name.startswith(("loss/", "det/")):
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
        return
    assert got[0] == ref[0], f"{name}: {int(got[0])} elements, reference {int(ref[0])}"
    torch.testing.assert_close(got[2:4], ref[2:4], rtol=1e-5, atol=0.0, msg=lambda m: f"{name} (norms): {m}")
    # a sum can cancel to ~0, so its tolerance scales with the sum of |x|; samples with the rms
    assert abs(float(got[1] - ref[1])) <= 1e-5 * float(ref[2]), f"{name}: sum {float(got[1])} != {float(ref[1])}"
    rms = (float(ref[3]) / float(ref[0])) ** 0.5
    torch.testing.assert_close(got[4:], ref[4:], rtol=1e-5, atol=1e-5 * rms, msg=lambda m: f"{name} (samples): {m}")


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_outputs_match_the_reference(variant):
    if not REFERENCE.is_file():
        pytest.fail(f"{REFERENCE} missing: generate it from known-good code with --write")
    reference = unpack(torch.load(REFERENCE, weights_only=True)[variant])
    got = compute(variant)
    assert set(got) == set(reference), sorted(set(got) ^ set(reference))
    assert any(k.startswith("grad/head.exchange") for k in got), "the exchange gets gradients"
    assert all(reference[f"det/{b}"].shape[0] > 0 for b in (0, 1)), "detections to compare"
    for name in sorted(reference):
        _assert_matches(name, got[name], reference[name])


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    torch.save({v: pack(compute(v)) for v in VARIANTS}, REFERENCE)
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")
