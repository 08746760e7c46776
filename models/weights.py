"""Reading a local state-dict file into a backbone, with one-line errors naming the file.

Shared by the ResNet and LSKNet backbones: ``torch.load(weights_only=True)`` (never unpickles
code), an optional top-level ``state_dict`` key, and a non-strict load whose missing and
unexpected keys are reported unless the caller says a key may be missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn


def read_state_dict(path: str) -> tuple[Path, dict[str, Any]]:
    """(resolved file, state dict) of a local weights file; ValueError("model.pretrained: ...")."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"model.pretrained: {file}: no such file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ValueError(f"model.pretrained: {file}: not a loadable state dict ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"model.pretrained: {file}: expected a state dict, got {type(state).__name__}")
    return file, state


def load_matching(net: nn.Module, state: dict[str, Any], file: Path, label: str,
                  may_miss: Callable[[str], bool] = lambda key: False) -> None:
    """Load ``state`` into ``net`` (non-strict) and refuse any missing key ``may_miss`` does not allow
    and any unexpected key; ``label`` names the network in the error."""
    try:
        result = net.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError, AttributeError) as exc:  # shape mismatches, non-tensor values
        detail = " ".join(str(exc).split())[:200]
        raise ValueError(f"model.pretrained: {file}: does not match {label} ({detail})") from None
    missing = [k for k in result.missing_keys if not may_miss(k)]
    if missing or result.unexpected_keys:
        bad = (missing or result.unexpected_keys)[:3]
        raise ValueError(
            f"model.pretrained: {file}: does not match {label} "
            f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected keys, e.g. {', '.join(bad)})"
        )


__all__ = ["load_matching", "read_state_dict"]
