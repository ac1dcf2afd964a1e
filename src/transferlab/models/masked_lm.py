"""A text encoder with its masked-language-model head, for continued pre-training (task=mlm).

The model is `transformers`' `AutoModelForMaskedLM` from the same weights source as the encoder
backbone (`model.weights`). Its encoder (`base_model_prefix`: `bert`, `roberta`, `distilbert`,
`deberta`) has the very state-dict keys of the `AutoModel` the hf backbone builds (both without a
pooler), so the tuned encoder is saved under `backbone.*` and a classification run loads it as it
loads any earlier run's backbone.

Sentence encoders (all-MiniLM-L6-v2 is a sentence-transformers `BertModel`) ship no MLM head. Its
transform layers then start fresh and its decoder is the input embedding matrix (tied), as BERT's
own head is: the head learns to read the encoder, and the encoder's vocabulary stays its own.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from torch import nn

from transferlab.errors import ConfigError
from transferlab.models.hf_backbone import model_source
from transferlab.models.weights import WeightsError, WeightsSource, hub_error, hub_offline

log = logging.getLogger(__name__)


def check_mask_token(tokenizer, name: str) -> None:
    if getattr(tokenizer, "mask_token_id", None) is None:
        raise ConfigError(f"the tokenizer of {name} has no mask token, so task=mlm cannot mask its texts: use an encoder "
                          "whose tokenizer has one (BERT's [MASK], RoBERTa's <mask>), or task=classify")


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder inside a masked-LM model: what the hf backbone calls its model."""
    return getattr(model, model.base_model_prefix)


def head_names(model: nn.Module) -> list[str]:
    prefix = model.base_model_prefix + "."
    return [n for n, _ in model.named_parameters() if not n.startswith(prefix)]


def load_masked_lm(name: str, weights: str, files: str | None = None) -> tuple[nn.Module, str, bool]:
    """(the masked-LM model, where its weights came from, whether its head was initialised fresh).
    `files`: the source of the config when `weights` is none (random init of the same architecture)."""
    from transformers import AutoConfig, AutoModelForMaskedLM
    from transformers.utils import logging as hf_logging

    source = WeightsSource.parse(weights)
    where, description = model_source(name, WeightsSource.parse(files or weights) if source.kind == "none" else source)
    local = Path(where).is_dir()
    if not local and hub_offline():
        raise hub_error(name, RuntimeError("HF_HUB_OFFLINE is set"))
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the head's keys; the one line below says it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if source.kind == "none":
                model = AutoModelForMaskedLM.from_config(AutoConfig.from_pretrained(where, local_files_only=local))
                missing, description = set(head_names(model)), "none (random init)"
            else:
                model, info = AutoModelForMaskedLM.from_pretrained(where, local_files_only=local, output_loading_info=True)
                missing = set(info.get("missing_keys") or ())
    except ValueError as e:  # a model type without a masked-LM class
        raise ConfigError(f"{name} has no masked-language-model architecture in transformers ({str(e).splitlines()[0][:160]}): "
                          "task=mlm needs a BERT-style encoder (BERT, RoBERTa, DistilBERT, DeBERTa, MiniLM)") from e
    except OSError as e:
        if local:
            raise WeightsError(f"cannot load a Hugging Face model from {where} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
        raise hub_error(name, e) from e
    finally:
        hf_logging.set_verbosity(verbosity)
    prefix = model.base_model_prefix + "."
    lost = sorted(k for k in missing if k.startswith(prefix) and "pooler" not in k)
    if lost and source.kind != "none":
        raise WeightsError(f"{where} lacks {len(lost)} encoder tensors for {type(model).__name__} ({', '.join(lost[:3])}): "
                           "is it the encoder model.name names?")
    fresh = any(not k.startswith(prefix) for k in missing)
    if fresh:
        tie(model)
        log.info("%s has no masked-LM head weights (a bare encoder, e.g. a sentence-transformers model): the MLM head is "
                 "initialised fresh, its decoder tied to the input embeddings", description)
    return model, description, fresh


def tie(model: nn.Module) -> None:
    """The decoder is the input embedding matrix, whatever the config's tie_word_embeddings says: a
    random decoder over the whole vocabulary would teach the encoder nothing but noise at first."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is not None and inp is not None and out.weight is not inp.weight:
        out.weight = inp.weight
