"""Detection post-processing in float32, whatever autocast does around it.

Under bf16 autocast a head's outputs come out in bf16. Decoding boxes from them in bf16 puts a
coordinate near 400 px on a 2 px grid (enough to decide IoU >= 0.5 for a 3 px target), and
bf16 sigmoid scores take only about 255 distinct values in (0, 1), which ties most of an AP
ranking and of NMS. So every detector casts its head outputs to float32 and runs sigmoid,
score products, box decoding and NMS with autocast switched off:

* ``float32_postprocess`` decorates a post-processing method (our FCOS, BAFE-Net and OSCAR
  heads, torchvision's ``postprocess_detections``);
* ``float32_outputs`` hooks a module whose outputs are decoded before any post-processing
  method runs (torchvision's RPN head and Fast R-CNN box predictor).

The network itself still runs under autocast; only what follows the last conv is float32.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar
from collections.abc import Callable

import torch
from torch import Tensor, nn

F = TypeVar("F", bound=Callable[..., Any])


def to_float32(value: Any) -> Any:
    """``value`` with every floating-point tensor in it (dicts, lists, tuples) as float32."""
    if isinstance(value, Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return type(value)((k, to_float32(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(to_float32(v) for v in value)
    return value


def _device_type(value: Any) -> str | None:
    """The device type of the first tensor found in ``value`` (None when there is none)."""
    if isinstance(value, Tensor):
        return value.device.type
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    for item in items:
        found = _device_type(item)
        if found is not None:
            return found
    return None


def float32_postprocess(fn: F) -> F:
    """Run method ``fn`` on float32 copies of its tensor arguments with autocast disabled."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = to_float32(args), to_float32(kwargs)
        device_type = _device_type((args, kwargs))
        if device_type is None:
            return fn(self, *args, **kwargs)
        with torch.autocast(device_type, enabled=False):
            return fn(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _cast_output_hook(module: nn.Module, inputs: Any, output: Any) -> Any:
    return to_float32(output)  # a module-level function, so the hooked module still pickles


def float32_outputs(module: nn.Module) -> nn.Module:
    """Make ``module`` return float32 outputs (a forward hook; the state dict is unchanged)."""
    module.register_forward_hook(_cast_output_hook)
    return module


__all__ = ["float32_outputs", "float32_postprocess", "to_float32"]
