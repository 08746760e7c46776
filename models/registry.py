"""Model registry, timm style: one dict from name to builder, and nothing more.

A builder is ``fn(cfg: ModelConfig) -> nn.Module``; detector modules register theirs at
import time with ``@register("name", "one-line description")``.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from irstdlab.models.config import ModelConfig

Builder = Callable[[ModelConfig], nn.Module]

_MODELS: dict[str, tuple[Builder, str]] = {}


def register(name: str, description: str = "") -> Callable[[Builder], Builder]:
    def decorator(fn: Builder) -> Builder:
        if name in _MODELS and _MODELS[name][0] is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = (fn, description)
        return fn

    return decorator


def list_models() -> list[str]:
    return sorted(_MODELS)


def describe(name: str) -> str:
    """The one-line description a model was registered with."""
    _check_name(name)
    return _MODELS[name][1]


def _check_name(name: str) -> None:
    if name not in _MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; registered: {', '.join(list_models())}")


def build(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Build the detector ``cfg.name`` from a ``ModelConfig`` or a plain dict of its fields."""
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig.from_dict(cfg)
    _check_name(cfg.name)
    return _MODELS[cfg.name][0](cfg)


__all__ = ["build", "describe", "list_models", "register"]
