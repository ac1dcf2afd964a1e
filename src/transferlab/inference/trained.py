"""A trained model from `<checkpoint | run dir | last>`, rebuilt without its training data.

predict.py and `transferlab export` both start here. The model is built from the config stored in
the checkpoint (architecture, adapters, head), its tensors come from the checkpoint, and the
preprocessing is the run's eval path, so what they compute is what eval.py computed.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from transferlab.engine.assemble import make_model
from transferlab.engine.calibration import stored_temperature
from transferlab.engine.module import TransferModule
from transferlab.engine.resume import LAST, checkpoint_in
from transferlab.errors import CheckpointError, TransferlabError
from transferlab.models.checkpoint import check_fits, read_checkpoint
from transferlab.models.heads import scaled_head
from transferlab.record import RunRecord, read_record
from transferlab.run_dirs import task_run_dirs

log = logging.getLogger(__name__)


def resolve_checkpoint(ref: str | Path, log_dir: str | Path = "logs") -> tuple[Path, Path | None]:
    """(checkpoint, run dir). A run dir gives its calibrated.ckpt where the run fitted a
    temperature (the tested weights with it), else the checkpoint its run tested (metrics.json's
    best_checkpoint), else its last.ckpt; `last` is the newest run under log_dir, of any task, that
    left a last.ckpt."""
    if str(ref) == "last":
        newest = next((d for d in task_run_dirs(log_dir) if (d / LAST).is_file()), None)
        if newest is None:
            raise CheckpointError(f"ckpt_path=last: no run under {log_dir} has a {LAST}: pass ckpt_path=<run dir or .ckpt file>")
        return _in_run_dir(newest), newest
    path = Path(ref).expanduser()
    if path.is_dir():
        return _in_run_dir(path), path
    return checkpoint_in(path)


def _in_run_dir(run_dir: Path) -> Path:
    record = read_record(run_dir)
    named = [(record.calibration or {}).get("checkpoint"), record.best_checkpoint] if record else []
    for ref in filter(None, named):
        tested = Path(ref) if Path(ref).is_absolute() else run_dir / ref
        for candidate in (tested, run_dir / "checkpoints" / tested.name):  # the second: a run dir that was moved
            if candidate.is_file():
                return candidate
    if (run_dir / LAST).is_file():
        return run_dir / LAST
    found = sorted(run_dir.glob("checkpoints/*.ckpt"))
    if len(found) == 1:
        return found[0]
    raise CheckpointError(
        f"run directory {run_dir} has no checkpoint to use ({LAST} is missing"
        + (f" and {len(found)} others are there" if found else "") + "): pass ckpt_path=<one .ckpt file>"
    )


@dataclass
class Trained:
    module: TransferModule  # in eval mode, on the CPU
    config: DictConfig  # the run's config, as stored in its checkpoint
    classes: list[str]
    checkpoint: Path
    run_dir: Path | None
    record: RunRecord | None
    temperature: float | None = None  # eval.calibrate=temperature's, from calibrated.ckpt

    @property
    def preprocess(self) -> dict:
        return self.module.encoder.input_spec()

    @property
    def storage_size(self) -> int:
        return int(self.module.encoder.storage_size)

    @property
    def modality(self) -> str:
        return self.module.encoder.modality

    @property
    def tta_hflip(self) -> bool:
        return bool(self.module.tta_hflip)

    @property
    def strategy(self) -> str:
        return self.module.strategy.name

    def network(self) -> "InferenceNetwork":
        """The model as one plain network (adapters merged) on normalised inputs: what export traces.
        A fitted temperature is folded into the head, so every format's logits are the calibrated ones."""
        backbone = self.module.strategy.deployable(copy.deepcopy(self.module.backbone)).eval()
        head = scaled_head(self.module.head, 1 / self.temperature) if self.temperature else copy.deepcopy(self.module.head)
        return InferenceNetwork(backbone, head.eval(), tta_hflip=self.tta_hflip)


class InferenceNetwork(nn.Module):
    """backbone -> head on a normalised image batch, averaging the logits of the image and its
    mirror when the run was evaluated that way (data.eval_hflip), so an export scores as eval.py did."""

    def __init__(self, backbone: nn.Module, head: nn.Module, tta_hflip: bool):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tta_hflip = tta_hflip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.backbone(images))
        if self.tta_hflip:
            logits = (logits + self.head(self.backbone(images.flip(-1)))) / 2
        return logits


def load_trained(ref: str | Path, log_dir: str | Path = "logs") -> Trained:
    ckpt_path, run_dir = resolve_checkpoint(ref, log_dir)
    ckpt = read_checkpoint(ckpt_path)
    stored = ckpt["transferlab"]
    classes = [str(c) for c in (stored.get("classes") or [])]
    if not classes:
        raise CheckpointError(f"checkpoint {ckpt_path} stores no class names: it predates predict and export; "
                              "train it again with this transferlab")
    config = OmegaConf.create(stored["config"])
    with open_dict(config):
        if "init_from" in config.model:
            config.model.init_from = None  # every tensor comes from this checkpoint
    try:
        module = make_model(config, classes)
    except TransferlabError:
        raise
    except Exception as e:  # the stored config names keys or choices this version does not build
        raise CheckpointError(
            f"checkpoint {ckpt_path} does not build with this transferlab ({type(e).__name__}: {str(e).splitlines()[0][:160]}): "
            "use the transferlab version that trained it (its commit is in the run's metrics.json)"
        ) from e
    check_fits(
        ckpt, ckpt_path, module.state_dict(), len(classes), classes,
        fix="the checkpoint is damaged or from another transferlab version: use the checkpoint its run wrote, "
        "with the transferlab version that trained it",
        model_name=str(config.model.name),
    )
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    temperature = stored_temperature(ckpt)
    module.temperature = temperature  # the module's own val/test scoring divides by it too
    log.info("loaded %s (%s, strategy %s, %d classes%s)", ckpt_path, config.model.name, module.strategy.name, len(classes),
             f", temperature {temperature:.4g}" if temperature else "")
    return Trained(module, config, classes, ckpt_path, run_dir, read_record(run_dir) if run_dir else None, temperature)
