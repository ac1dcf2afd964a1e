"""Checkpoints as input: reading one, checking that it fits the model and data at hand, and starting
a new run from one (`model.init_from`).

Lightning's own answer to a checkpoint that does not fit is a size-mismatch traceback from
`load_state_dict`; these checks run first and say which part differs and what to pass instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from transferlab.errors import CheckpointError, ConfigError
from transferlab.models.backbone import kind_name

log = logging.getLogger(__name__)

_SHOWN = 3  # how many differing tensors or class names a message names
# The layout of the `transferlab` entry of a checkpoint; raised when that layout changes, so an
# older transferlab names a newer checkpoint instead of misreading it.
CHECKPOINT_FORMAT = 1
# Marks a checkpoint of an encoder without a head (task=mlm): model.init_from takes it, with a new head;
# resume, eval, predict and export need a classifier and refuse it by name.
ENCODER_ONLY = "encoder_only"


def read_checkpoint(path: str | Path, need_head: bool = True) -> dict:
    """A checkpoint written by train.py, or a CheckpointError saying why this file is not one.
    `need_head`: refuse an encoder-only checkpoint (task=mlm), which classifies nothing."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: pass its checkpoints/last.ckpt or checkpoints/epoch_<n>.ckpt")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: pass <run dir>/checkpoints/<file>.ckpt of a train.py run")
    try:
        # Our own checkpoints hold the run's config (plain containers) next to the tensors.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}): "
            "is it complete, and a .ckpt written by train.py?"
        ) from e
    if not isinstance(ckpt, dict) or "transferlab" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{path} is not a transferlab checkpoint (no stored run config): use a .ckpt written by train.py "
            "(for plain backbone weights use model.weights=file:<path>)"
        )
    written = ckpt["transferlab"].get("format", 1)
    if not isinstance(written, int) or written > CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by a newer transferlab (checkpoint format {written}; this one reads up to "
            f"{CHECKPOINT_FORMAT}): upgrade transferlab, or use the version that trained it"
        )
    if need_head and ckpt["transferlab"].get(ENCODER_ONLY):
        raise CheckpointError(
            f"{path} is an encoder pre-trained by task=mlm, with no classification head: fine-tune from it with "
            f"model.init_from={path} (a new head), then resume, evaluate or export that run"
        )
    return ckpt


def _stored(ckpt: dict) -> dict:
    return ckpt.get("transferlab") or {}


def _names(classes: list) -> str:
    shown = ", ".join(str(c) for c in classes[:_SHOWN])
    return shown + (", ..." if len(classes) > _SHOWN else "")


def head_mismatch(ckpt: dict, path: str | Path, num_classes: int, classes: list | None) -> str | None:
    """Why the checkpoint's head cannot classify this data (another number of classes, or other
    classes under the same indices), or None."""
    stored = _stored(ckpt)
    theirs = stored.get("num_classes")
    if theirs is not None and int(theirs) != int(num_classes):
        return f"checkpoint {path} has a {theirs}-class head, this data has {num_classes} classes"
    their_classes = stored.get("classes")
    if their_classes and classes and list(their_classes) != list(classes):
        return (
            f"checkpoint {path} has a head for other classes ({_names(list(their_classes))}), "
            f"this data's are {_names(list(classes))}"
        )
    return None


def shape_mismatch(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> str | None:
    """What keeps `source` from loading strictly into a model whose state dict is `target`, or None."""
    missing = [k for k in target if k not in source]
    unexpected = [k for k in source if k not in target]
    bad = [(k, tuple(source[k].shape), tuple(v.shape)) for k, v in target.items() if k in source and source[k].shape != v.shape]
    parts = []
    if bad:
        parts.append(f"{len(bad)} tensors differ in shape (" + "; ".join(f"{k}: checkpoint {a} vs model {b}" for k, a, b in bad[:_SHOWN]) + ")")
    if missing:
        parts.append(f"{len(missing)} model tensors are not in it ({', '.join(missing[:_SHOWN])})")
    if unexpected:
        parts.append(f"{len(unexpected)} of its tensors are not in the model ({', '.join(unexpected[:_SHOWN])})")
    return "; ".join(parts) or None


def _stored_model(ckpt: dict) -> str | None:
    config = _stored(ckpt).get("config") or {}
    return ((config.get("model") or {}).get("name")) if isinstance(config, dict) else None


def check_fits(
    ckpt: dict, path: str | Path, model: dict[str, torch.Tensor], num_classes: int, classes: list | None, fix: str,
    model_name: str | None = None,
) -> None:
    """Raise a CheckpointError naming what differs between the checkpoint and this model (its state
    dict `model`) and data. `fix`: what to do about it, which depends on what the checkpoint is for.
    """
    problem = head_mismatch(ckpt, path, num_classes, classes)
    if problem is None:
        theirs, ours = _stored_model(ckpt), model_name
        differs = shape_mismatch(ckpt["state_dict"], model)
        if differs is not None:
            built = f" (it holds a {theirs}, this run builds a {ours})" if theirs and ours and theirs != ours else ""
            problem = f"checkpoint {path} does not fit this model{built}: {differs}"
    if problem is not None:
        raise CheckpointError(f"{problem}: {fix}")


def _by_order(source: list[tuple[str, torch.Tensor]], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """`source`'s tensors under `target`'s names when the two line up in order and shape (a head
    with and without its Dropout numbers its Linear differently), else None."""
    if len(source) != len(target) or any(s.shape != t.shape for (_, s), t in zip(source, target.values())):
        return None
    return {name: tensor for name, (_, tensor) in zip(target, source)}


def read_init_checkpoint(path: str | Path, model_name: str) -> dict:
    """`model.init_from=<ckpt>`, read and checked against model.name before any data loads."""
    ckpt = read_checkpoint(path, need_head=False)
    theirs = _stored_model(ckpt)
    if theirs and theirs != model_name:
        config = _stored(ckpt).get("config") or {}
        kind = kind_name((config.get("model") or {}) if isinstance(config, dict) else None)
        what = "an MLM-pre-trained encoder of" if _stored(ckpt).get(ENCODER_ONLY) else "a"
        raise ConfigError(
            f"model.init_from={path} holds {what} {theirs} backbone, this run builds {model_name}: "
            f"set model={kind} model.name={theirs}, or init from a {model_name} checkpoint"
        )
    return ckpt


def init_backbone_from(model: nn.Module, ckpt: dict, path: str | Path, *, model_name: str) -> None:
    """`model.init_from=<ckpt>`: the backbone network's weights from an earlier run's checkpoint."""
    backbone = {k.removeprefix("backbone."): v for k, v in ckpt["state_dict"].items() if k.startswith("backbone.")}
    differs = shape_mismatch(backbone, model.state_dict())
    if differs is not None:
        raise CheckpointError(f"model.init_from={path}: its backbone does not fit {model_name}: {differs}")
    model.load_state_dict(backbone)


def init_head_from(head: nn.Module, ckpt: dict, path: str | Path, *, num_classes: int, classes: list | None, reset_head: bool) -> str:
    """`model.init_from=<ckpt>`: the head too, unless `reset_head` (then it stays freshly initialised).
    Returns a description of what was loaded, for logs and metrics.json."""
    if reset_head:
        log.info("model.init_from=%s: backbone loaded; the head is new (model.head.reset=true)", path)
        return f"init_from:{path} (backbone; new head)"
    if _stored(ckpt).get(ENCODER_ONLY):
        # An MLM encoder has no classifier to keep: a new head is the only choice, not a silent one.
        log.info("model.init_from=%s: an encoder pre-trained by task=mlm; backbone loaded, the head is new", path)
        return f"init_from:{path} (mlm encoder; new head)"
    reset = "pass model.head.reset=true to start a new head"
    problem = head_mismatch(ckpt, path, num_classes, classes)
    if problem is not None:
        raise CheckpointError(f"{problem}: {reset} (or use data that matches)")
    stored = [(k, v) for k, v in ckpt["state_dict"].items() if k.startswith("head.")]
    mapped = _by_order(stored, head.state_dict())
    if mapped is None:
        stored_head = ((_stored(ckpt).get("config") or {}).get("model") or {}).get("head") or {}
        raise CheckpointError(
            f"checkpoint {path} has a head of another shape (model.head.type={stored_head.get('type', '?')}, "
            f"hidden={stored_head.get('hidden', '?')}) than this run's: {reset} (or use the same model.head settings)"
        )
    head.load_state_dict(mapped)
    log.info("model.init_from=%s: backbone and head loaded", path)
    return f"init_from:{path} (backbone and head)"
