"""Detectors as plain ``nn.Module``s: ``build(cfg)`` and ``list_models()``.

Importing this package registers every detector module listed below; a listed module that
fails to import raises ``DetectorImportError`` naming it.
"""

from __future__ import annotations

from irstdlab.models.config import ModelConfig
from irstdlab.models.registry import build, describe, list_models, load_detectors, model_defaults, register

# Modules whose import registers detectors (each with its builder, description and defaults).
DETECTOR_MODULES = (
    "irstdlab.models.fcos",
    "irstdlab.models.bafenet",
    "irstdlab.models.oscar",
    "irstdlab.models.tv_detectors",
)

load_detectors(DETECTOR_MODULES)

__all__ = ["DETECTOR_MODULES", "ModelConfig", "build", "describe", "list_models", "model_defaults", "register"]
