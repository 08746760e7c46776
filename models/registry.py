"""Model registry, timm style: one dict from name to builder, description, defaults and recipe.

A builder is ``fn(cfg: ModelConfig) -> nn.Module``; detector modules register theirs at
import time with ``@register("name", "one-line description", defaults={...}, recipe={...})``.
``defaults`` are the detector's own values for ``ModelConfig`` fields a config leaves out;
``recipe`` is its training recipe for the other sections, as dotted keys (``"optim.lr"``,
``"schedule.warmup_iters"``, ...). Both are applied by ``with_detector_recipe`` to the keys a
config leaves out, so a detector's settings live beside its builder. Precedence, highest first:
an explicit ``--set`` / searched value > the config file's value > the detector's defaults and
recipe > the dataclasses' global defaults. The recipe's ``optim.*`` values belong to its
optimiser: a config that names another ``optim.name`` gets none of them.

``load_detectors`` imports the modules that register detectors; one that fails to import is
an error naming it, never a silent skip.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from irstdlab.models.config import ModelConfig

Builder = Callable[[ModelConfig], nn.Module]


# Sections a recipe may fill (the model section is ``defaults``). Their dataclasses live in the
# harness, which models must not import: here the keys' shape is checked, and the harness checks
# every registered recipe's values against its dataclasses (``harness/config.py``).
RECIPE_SECTIONS = ("optim", "schedule")
RECIPE_SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class ModelEntry:
    builder: Builder
    description: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    recipe: Mapping[str, Any] = field(default_factory=dict)


_MODELS: dict[str, ModelEntry] = {}


class DetectorImportError(ImportError):
    """A module listed as registering detectors could not be imported."""


def register(name: str, description: str = "", defaults: Mapping[str, Any] | None = None,
             recipe: Mapping[str, Any] | None = None) -> Callable[[Builder], Builder]:
    """Register ``fn`` as the builder of ``name``.

    ``defaults`` override ModelConfig's for this detector; ``recipe`` ({"optim.lr": ..., ...})
    overrides the optim/schedule global defaults for it (see the module docstring).
    """
    chosen = dict(defaults or {})
    training = _check_recipe(name, dict(recipe or {}))
    # A typo here would silently fall back to the FCOS default, so check the names and values
    # once at import: every key must be a ModelConfig field and the set must validate.
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(chosen) - fields)
    if unknown:
        raise ValueError(f"register({name!r}): defaults name unknown ModelConfig fields {unknown}")
    ModelConfig(**{**chosen, "name": name})

    def decorator(fn: Builder) -> Builder:
        if name in _MODELS and _MODELS[name].builder is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelEntry(fn, description, chosen, training)
        return fn

    return decorator


def _check_recipe(name: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """Keys are "section.field" in RECIPE_SECTIONS with plain values; optim values name their optimiser."""
    for key, value in recipe.items():
        section, _, leaf = str(key).partition(".")
        if section not in RECIPE_SECTIONS or not leaf.isidentifier():
            raise ValueError(f"register({name!r}): recipe key {key!r} must be one of "
                             f"{', '.join(s + '.<field>' for s in RECIPE_SECTIONS)} (model values go in defaults)")
        if not isinstance(value, RECIPE_SCALARS):
            raise ValueError(f"register({name!r}): recipe {key}: expected a number, string, bool or None, got {value!r}")
    if any(k.startswith("optim.") for k in recipe) and "optim.name" not in recipe:
        # a learning rate means nothing without its optimiser (AdamW 1e-3 is not DAdaptAdam 1e-3)
        raise ValueError(f"register({name!r}): a recipe with optim values must name its optimiser (optim.name)")
    return recipe


def load_detectors(modules: Iterable[str]) -> None:
    """Import each module (registering its detectors); a failure names the module."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise DetectorImportError(f"irstdlab.models: detector module {module} failed to import: {exc!r}") from exc


def list_models() -> list[str]:
    return sorted(_MODELS)


def describe(name: str) -> str:
    """The one-line description a model was registered with."""
    _check_name(name)
    return _MODELS[name].description


def model_defaults(name: str) -> dict[str, Any]:
    """The detector's registered defaults; empty for a name nobody registered."""
    entry = _MODELS.get(name)
    return dict(entry.defaults) if entry else {}


def detector_recipe(name: str) -> dict[str, Any]:
    """The detector's registered training recipe (dotted keys); empty for a name nobody registered."""
    entry = _MODELS.get(name)
    return dict(entry.recipe) if entry else {}


def _check_name(name: str) -> None:
    if name not in _MODELS:
        raise ValueError(f"model.name: unknown model {name!r}; registered: {', '.join(list_models())}")


def build(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Build the detector ``cfg.name`` from a ``ModelConfig`` or a plain dict of its fields."""
    if not isinstance(cfg, ModelConfig):
        cfg = ModelConfig.from_dict(cfg)
    _check_name(cfg.name)
    return _MODELS[cfg.name].builder(cfg)


__all__ = [
    "DetectorImportError", "ModelEntry", "RECIPE_SECTIONS", "build", "describe", "detector_recipe", "list_models",
    "load_detectors", "model_defaults", "register",
]
