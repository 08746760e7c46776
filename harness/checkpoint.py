"""Trial checkpoints: everything needed to continue a run, loadable with ``weights_only=True``.

A checkpoint is a folder holding ``checkpoint.pt``: the model (unwrapped from DDP), the
optimiser (DAdaptAdam's ``d``/``k`` and moments included), the LR scheduler, the AMP scaler, the
number of finished epochs, the RNG states of torch / numpy / random, the per-epoch history, the
best epoch so far (and its weights when they differ from the current ones), and the config as
canonical JSON. Nothing in it is a pickled Python object: RNG states become plain lists and
tensors, so ``torch.load(weights_only=True)`` reads it (no code runs at load time).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from irstdlab.harness.errors import UserError
from irstdlab.harness.reporting import CHECKPOINT_FILE

FORMAT_VERSION = 1


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under a DDP / DataParallel wrapper."""
    return getattr(model, "module", model)


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": int(version), "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_cpu(v) for v in state)
    return state


def save_checkpoint(
    folder: Path | str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    epoch: int,
    config_json: str,
    config_hash: str,
    history: list[dict[str, Any]],
    best_epoch: int,
    best_value: float,
    best_model: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``folder/checkpoint.pt`` (``epoch`` = epochs finished). Returns the file path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        "format": FORMAT_VERSION,
        "epoch": int(epoch),
        "model": _cpu(unwrap(model).state_dict()),
        "optimizer": _cpu(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "config_json": config_json,
        "config_hash": config_hash,
        "history": [{k: v for k, v in h.items() if isinstance(v, (int, float, str, bool))} for h in history],
        "best_epoch": int(best_epoch),
        "best_value": float(best_value),
    }
    if best_model is not None:
        state["best_model"] = _cpu(best_model)
    path = folder / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the final name
    return path


# what save_checkpoint writes (best_model is optional); a file without one of these is unusable
REQUIRED_KEYS = ("format", "epoch", "model", "optimizer", "scheduler", "scaler", "rng", "config_json",
                 "config_hash", "history", "best_epoch", "best_value")
_RETRAIN = "this checkpoint can be neither evaluated nor resumed: train again under a new --name"


def _file(path: Path | str) -> Path:
    """A checkpoint folder or file -> the checkpoint file (what error messages name)."""
    path = Path(path)
    return path / CHECKPOINT_FILE if path.is_dir() else path


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Read a checkpoint file or folder with ``weights_only=True``; one-line error if unusable.

    Besides loading, checks the format version, every key ``save_checkpoint`` writes and that
    the stored config parses, so a truncated or foreign file fails here, naming the file."""
    from irstdlab.harness.config import TrialConfig

    path = _file(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or one holding arbitrary pickled objects
        raise UserError(f"{path}: not a loadable irstdlab checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict) or "model" not in state or "config_json" not in state:
        raise UserError(f"{path}: not an irstdlab checkpoint (no model or config inside)")
    if state.get("format") != FORMAT_VERSION:
        raise UserError(f"{path}: checkpoint format {state.get('format')!r}, this irstdlab reads format "
                        f"{FORMAT_VERSION}; use the irstdlab version that wrote it")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise UserError(f"{path}: the checkpoint misses {missing[0]!r}; {_RETRAIN}")
    if not isinstance(state["config_json"], str):
        raise UserError(f"{path}: its stored config is not text; {_RETRAIN}")
    try:
        TrialConfig.from_json(state["config_json"])
    except ValueError as exc:  # JSONDecodeError (truncated) and ConfigError (a value this version refuses)
        reason = str(exc).splitlines()[0][:160]
        raise UserError(f"{path}: its stored config does not load ({reason}); {_RETRAIN} "
                        f"(or use the irstdlab version that wrote it)") from None
    for key in ("epoch", "best_epoch"):
        if isinstance(state[key], bool) or not isinstance(state[key], int) or state[key] < 0:
            raise UserError(f"{path}: {key} is {state[key]!r}, not an epoch count; {_RETRAIN}")
    kinds: dict[str, type | tuple[type, ...]] = {"config_hash": str, "history": list, "best_value": (int, float), "rng": dict}
    for key, kind in kinds.items():
        if isinstance(state[key], bool) or not isinstance(state[key], kind):
            raise UserError(f"{path}: {key} is not what irstdlab writes (got {type(state[key]).__name__}); {_RETRAIN}")
    return state


def load_weights(model: nn.Module, weights: Any, path: Path | str) -> None:
    """``model.load_state_dict(weights)``, or one line naming the first key that does not fit.

    A checkpoint whose weights were written by another model definition (an older irstdlab, a
    hand-made file) would otherwise fail with torch's multi-line report."""
    path = _file(path)
    expected = model.state_dict()
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise UserError(f"{path}: the stored weights are not a mapping of tensors; {_RETRAIN}")
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (first {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        problems.append(f"{len(reshaped)} of another shape (first {k}: {tuple(weights[k].shape)} "
                        f"!= {tuple(expected[k].shape)})")
    if problems:
        raise UserError(f"{path}: the stored weights do not match the model its config builds: "
                        f"{'; '.join(problems)}; use the irstdlab version that wrote it, or train again "
                        f"under a new --name")
    model.load_state_dict(weights)


def restore_training_state(state: dict[str, Any], path: Path | str, *, model: nn.Module,
                           optimizer: torch.optim.Optimizer, scheduler: Any, scaler: Any) -> None:
    """Load model, optimiser, scheduler, AMP scaler and RNG states for a resume (one line on failure)."""
    path = _file(path)
    load_weights(unwrap(model), state["model"], path)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError) as exc:
        raise UserError(f"{path}: its optimiser / scheduler / RNG state does not fit this run "
                        f"({type(exc).__name__}); resuming is impossible: train again under a new --name") from None


def selected_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of the selected (best) epoch stored in a checkpoint."""
    return state.get("best_model") or state["model"]


__all__ = ["REQUIRED_KEYS", "load_checkpoint", "load_weights", "restore_training_state", "rng_state", "save_checkpoint", "selected_weights", "set_rng_state", "unwrap"]
