"""Detectors as plain ``nn.Module``s: ``build(cfg)`` and ``list_models()``.

Importing this package registers every detector module present in the checkout.
"""

from __future__ import annotations

import importlib

from irstdlab.models.config import ModelConfig
from irstdlab.models.registry import build, describe, list_models, register

# Modules whose import registers detectors; a missing optional one is skipped.
_DETECTOR_MODULES = (
    "irstdlab.models.fcos",
    "irstdlab.models.bafenet",
    "irstdlab.models.oscar",
    "irstdlab.models.tv_detectors",
)

for _name in _DETECTOR_MODULES:
    try:
        importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:
            raise

__all__ = ["ModelConfig", "build", "describe", "list_models", "register"]
