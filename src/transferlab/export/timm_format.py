"""A folder timm loads by itself: `timm.create_model("local-dir:<folder>", pretrained=True)` rebuilds the trained
classifier, with the run's preprocessing in its pretrained_cfg and the class names as label_names.

timm's classifier is one linear layer, so a linear head maps onto it exactly; an MLP head has no
timm equivalent and is refused. timm models have no mirror average: the card says how to add it.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from transferlab.export.formats import FormatOutput, register_format
from transferlab.export.verify import ExportError, compare
from transferlab.inference.scoring import torch_scorer

WEIGHTS = "model.safetensors"


def _linear_of(head: nn.Module) -> nn.Linear | None:
    layers = [m for m in head.modules() if not isinstance(m, (nn.Sequential, nn.Dropout, nn.Identity))]
    return layers[0] if len(layers) == 1 and isinstance(layers[0], nn.Linear) else None


def timm_classifier(trained, network) -> nn.Module:
    """The full timm model: the trained backbone's tensors, and the head as its classifier."""
    linear = _linear_of(network.head)
    if linear is None:
        raise ExportError("--format timm needs a linear head (timm's classifier is one linear layer), and this run's "
                          f"is {trained.config.model.head.type}: use --format onnx or torchscript")
    name = str(trained.config.model.name)
    model = timm.create_model(name, pretrained=False, num_classes=len(trained.classes))
    classifier = model.pretrained_cfg.get("classifier", "classifier")
    state = {k: v for k, v in network.backbone.state_dict().items()}
    state[f"{classifier}.weight"] = linear.weight.detach().clone()
    state[f"{classifier}.bias"] = linear.bias.detach().clone()
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(f"the trained {name} does not map onto timm's own {name} ({len(missing)} tensors missing, e.g. "
                          f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}): use --format onnx")
    spec = trained.preprocess
    size = (int(spec["in_chans"]), int(spec["image_size"]), int(spec["image_size"]))
    cfg = dict(model.pretrained_cfg)
    for key in ("test_input_size", "test_crop_pct", "hf_hub_id", "url", "file", "tag"):
        cfg.pop(key, None)
    cfg.update(
        input_size=size, mean=tuple(spec["mean"]), std=tuple(spec["std"]), interpolation=spec["interpolation"],
        crop_pct=float(spec["crop_pct"]), crop_mode="center", num_classes=len(trained.classes),
        label_names=list(trained.classes),
    )
    model.pretrained_cfg = cfg
    return model.eval()


@register_format("timm", writes="a folder timm loads")
def export_timm(trained, network, out_dir: Path, samples) -> FormatOutput:
    from timm.models import save_for_hf

    model = timm_classifier(trained, network)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_for_hf(model, str(out_dir), model_config={"label_names": list(trained.classes)}, safe_serialization=True)
    loaded = timm.create_model(f"local-dir:{out_dir}", pretrained=True).eval()
    single = copy.deepcopy(network)
    single.tta_hflip = False  # a timm classifier scores the image alone

    @torch.inference_mode()
    def score(x: torch.Tensor) -> np.ndarray:
        return loaded(x).float().numpy()

    report = compare(torch_scorer(single), score, samples.images, 0, "timm", samples.source)
    name = str(trained.config.model.name)
    usage = (
        f'`timm.create_model("local-dir:<this folder>", pretrained=True)`, or `timm.create_model("{name}", pretrained=True, '
        f'pretrained_cfg_overlay=dict(file="<this folder>/{WEIGHTS}", num_classes={len(trained.classes)}), '
        f'num_classes={len(trained.classes)})`; '
        "`timm.data.resolve_data_config(model=model)` gives its preprocessing."
    )
    notes = []
    if trained.tta_hflip:
        notes.append("The run was tested with the mirror average (data.eval_hflip); a timm model scores the image "
                     "alone. For the same predictions average `model(x)` and `model(x.flip(-1))`.")
    return FormatOutput({"model": WEIGHTS, "config": "config.json"}, report, usage, notes)
