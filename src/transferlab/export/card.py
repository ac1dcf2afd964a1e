"""The README.md model card of an export: what the model is, where its weights and data came from,
how it was trained and tested, and how to load it."""

from __future__ import annotations

import shlex

from transferlab.models.backbone import kind_name


def _temperature_cell(temperature: float | None) -> str:
    if not temperature:
        return "none (the logits as trained)"
    return f"{temperature:.4g}, fitted on validation and folded into the head: softmax(logits) is calibrated"


def _pct(value) -> str:
    return f"{100 * float(value):.2f} %" if isinstance(value, (int, float)) else "n/a"


def model_card(trained, payload: dict, output) -> str:
    cfg = trained.config
    source = payload["source"]
    test = source.get("test") or {}
    sizes = source.get("data_sizes") or {}
    spec = payload["input"]
    overrides = source.get("overrides") or []
    command = "python train.py" + ("".join(f" {shlex.quote(str(o))}" for o in overrides) if overrides else "")
    classes = payload["classes"]
    lines = [
        f"# {cfg.model.name}, fine-tuned on {cfg.data.source} ({trained.strategy})",
        "",
        f"A {len(classes)}-class image classifier exported by transferlab as **{payload['export_format']}**.",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | `{cfg.model.name}` ({kind_name(cfg.model)}) |",
        f"| pre-trained weights | {source.get('weights') or trained.module.encoder.weights} |",
        f"| data | `{cfg.data.source}`: train {sizes.get('train', '?')}, val {sizes.get('val', '?')}, "
        f"test {sizes.get('test', '?')} images |",
        f"| strategy | `{trained.strategy}` |",
        f"| test accuracy | {_pct(test.get('acc'))} (top-5 {_pct(test.get('acc_top5'))}) |",
        f"| classes | {', '.join(f'`{c}`' for c in classes[:20])}{' ...' if len(classes) > 20 else ''} |",
        f"| input | RGB, resize shorter side to {spec['resize_to']} ({spec['interpolation']}), centre crop "
        f"{spec['crop_size']}, mean {spec['mean']}, std {spec['std']} |",
        f"| trained by | `{command}` |",
        f"| transferlab commit | `{source.get('commit') or 'unknown'}` |",
        f"| checkpoint | `{source['checkpoint']}` |",
        f"| temperature | {_temperature_cell(trained.temperature)} |",
        "",
        "## Use",
        "",
        output.usage,
        "",
    ]
    if output.notes:
        lines += ["## Notes", "", *[f"- {n}" for n in output.notes], ""]
    v = output.verification or {}
    if v:
        lines += [
            "## Checked at export",
            "",
            f"Against the trained model on {v.get('inputs')}, batch sizes {v.get('batch_sizes')}: max |logit "
            f"difference| {v.get('max_abs_diff', float('nan')):.2e} (tolerance {v.get('tolerance')}), argmax "
            f"{'identical' if v.get('argmax_equal') else 'different'}.",
            "",
        ]
    return "\n".join(lines)
