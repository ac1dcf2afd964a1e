"""One way to open what predict.py and eval.py score with: a checkpoint (`ckpt_path`, rebuilt in
torch) or an exported ONNX file (`model_path`, run by onnxruntime), each with its classes and the
preprocessing its run was evaluated with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from transferlab.errors import ConfigError
from transferlab.inference.scoring import Scorer, onnx_scorer, torch_scorer
from transferlab.inference.sidecar import preprocess_of, read_sidecar


@dataclass
class ScoringModel:
    scorer: Scorer
    classes: list[str]
    preprocess: dict  # BatchPreprocess arguments of the run's eval path
    storage_size: int  # the side images are decoded to before the eval crop
    modality: str
    config: DictConfig  # the run's config (its data rebuilds the test split)
    description: str


def open_model(ckpt_path: str | None, model_path: str | None, log_dir: str | Path) -> ScoringModel:
    if bool(ckpt_path) == bool(model_path):
        raise ConfigError("pass one of ckpt_path=<.ckpt | run dir | last> or model_path=<exported model.onnx>"
                          + (", not both" if ckpt_path else ""))
    if ckpt_path:
        from transferlab.inference.trained import load_trained  # torch-side: the model is rebuilt

        trained = load_trained(ckpt_path, log_dir)
        return ScoringModel(
            torch_scorer(trained.network()), trained.classes, trained.preprocess, trained.storage_size,
            trained.modality, trained.config, f"checkpoint {trained.checkpoint}",
        )
    if Path(model_path).suffix.lower() != ".onnx":
        raise ConfigError(f"model_path={model_path}: predict.py and eval.py run exported ONNX files (.onnx); for a "
                          "checkpoint pass ckpt_path=")
    payload = read_sidecar(model_path)
    return ScoringModel(
        onnx_scorer(model_path), list(payload["classes"]), preprocess_of(payload), int(payload["input"]["resize_to"]),
        str(payload.get("modality", "image")), OmegaConf.create(payload.get("run_config") or {}), f"ONNX {model_path}",
    )
