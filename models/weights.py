"""Reading backbone weights, with one-line errors naming the file: the only file access in models/.

* A local state-dict file (ResNet and LSKNet backbones): ``torch.load(weights_only=True)``
  (never unpickles code), an optional top-level ``state_dict`` key.
* ``model.pretrained: imagenet`` (ResNets): torchvision's own weights API
  (``ResNet50_Weights.IMAGENET1K_V1`` ...), which downloads into torch's hub cache
  (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``) with a progress bar
  and reads the cached file afterwards. The cache is looked at first; only a missing file is
  downloaded, after a DNS probe bounded in time and under a short socket timeout, so an offline
  machine fails within seconds with the file name and where to put it.
* ``load_matching``: a non-strict load whose missing and unexpected keys are reported unless
  the caller says a key may be missing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

IMAGENET = "imagenet"  # the model.pretrained value that means torchvision's ImageNet weights
# torchvision's ImageNet-1k weights for every ResNet depth we build (V1: the ones mmdet's
# ``torchvision://resnetXX`` names, i.e. what the BAFE-Net reference fine-tunes)
IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet34": "ResNet34_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
}
DNS_TIMEOUT_S = 5.0  # a resolver that does not answer within this is "offline"
SOCKET_TIMEOUT_S = 10.0  # connect / per-read timeout of the download


def imagenet_weights(backbone: str) -> Any:
    """torchvision's ``IMAGENET1K_V1`` weights entry for ``backbone``; ValueError for the others."""
    if backbone not in IMAGENET_WEIGHTS:
        raise ValueError(f"model.pretrained: imagenet: torchvision has no ImageNet weights for {backbone}; "
                         f"set model.pretrained=/path/to/state_dict.pth")
    return getattr(torchvision.models, IMAGENET_WEIGHTS[backbone]).IMAGENET1K_V1


def imagenet_cache_file(backbone: str) -> Path:
    """Where torch's hub cache keeps ``backbone``'s ImageNet weights (read at call time: TORCH_HOME)."""
    url = imagenet_weights(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def read_imagenet_state_dict(backbone: str) -> tuple[Path, dict[str, Any]]:
    """(cache file, state dict) of ``backbone``'s ImageNet weights, downloading them if not cached."""
    weights = imagenet_weights(backbone)
    file = imagenet_cache_file(backbone)
    load = dict(progress=True, map_location="cpu", weights_only=True)
    if file.is_file():
        try:
            return file, weights.get_state_dict(**load)
        except Exception as exc:  # a truncated or foreign file: say which one
            raise ValueError(f"model.pretrained: imagenet: {file}: not a loadable state dict "
                             f"({type(exc).__name__}: {exc})".splitlines()[0]) from None

    def unavailable(reason: str) -> ValueError:
        return ValueError(f"model.pretrained: imagenet: {file.name} is not in {file.parent} and cannot be "
                          f"downloaded ({reason}); put it there or set model.pretrained=/path/to/state_dict.pth")

    host = _connect_host(weights.url)
    if not _resolves(host, DNS_TIMEOUT_S):
        raise unavailable(f"{host} does not resolve")
    try:
        with _socket_timeout(SOCKET_TIMEOUT_S):
            state = weights.get_state_dict(**load)
    except (urllib.error.URLError, OSError) as exc:  # HTTP errors, refused connections, timeouts
        raise unavailable(" ".join(str(getattr(exc, "reason", exc)).split())[:120]) from None
    return file, state


def _connect_host(url: str) -> str:
    """The host a download of ``url`` connects to: the proxy urllib would use, else the URL's host."""
    parts = urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        return urlparse(proxy if "://" in proxy else f"http://{proxy}").hostname or ""
    return parts.hostname or ""


def _resolves(host: str, timeout_s: float) -> bool:
    """Whether ``host`` resolves within ``timeout_s`` (getaddrinfo ignores socket timeouts, so a
    daemon thread bounds it: a resolver that retries for a minute does not hold the trial)."""
    answer: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, name="irstdlab-dns-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(answer and answer[0])


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


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


__all__ = ["IMAGENET", "IMAGENET_WEIGHTS", "imagenet_cache_file", "imagenet_weights", "load_matching",
           "read_imagenet_state_dict", "read_state_dict"]
