"""Continued pre-training of a text encoder by masked language modelling (DAPT/TAPT).

- `task=mlm`: one run that pre-trains and writes `checkpoints/mlm_encoder.ckpt` and metrics.json.
- `task=tapt`: the same phase inside a classification run, before the head is built; its encoder is
  cached under `paths.cache_dir/mlm`, keyed by everything that decides it (the starting weights,
  tokenizer, the texts' ids, the knobs, the seed), so the strategies of one seed share one phase.

Either way the encoder is stored as a transferlab checkpoint with `backbone.*` tensors and no head
(`ENCODER_ONLY`): `model.init_from=` starts a classifier from it with a new head. The MLM reads
only the training split's and the unlabelled pool's token ids (data/text/mlm_texts.py), never a label;
the validation texts give the MLM loss before and after; the test split is dropped unread.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.config.checks import check_dataclass, rule
from transferlab.data.caches.cache_files import CacheFileError, JsonKey, load_blob, read_or_build, safe_name, save_blob
from transferlab.data.caches.feature_cache import state_dict_digest
from transferlab.data.text.mlm_texts import masked_batches, masking_collator, mlm_texts, texts_digest, train_loader
from transferlab.engine.builders import debug_run, make_backbone, make_datamodule, plain
from transferlab.engine.mlm_module import MaskedLMModule, masked_loss
from transferlab.engine.tasks import MLM, TAPT
from transferlab.engine.trainer import instantiate_trainer
from transferlab.errors import ConfigError
from transferlab.models.backbone import find_kind, kind_name
from transferlab.models.checkpoint import CHECKPOINT_FORMAT, ENCODER_ONLY, init_backbone_from, read_init_checkpoint
from transferlab.models.hf_backbone import tokenizer_digest
from transferlab.models.masked_lm import check_mask_token, encoder_of, load_masked_lm
from transferlab.utils.io import atomic_write

log = logging.getLogger(__name__)

ENCODER_FILE = "mlm_encoder.ckpt"
CACHE_FORMAT = 1
_PROB = dict(low=0.0, high=1.0)
# Trainer keys that change what the phase trains, so they are part of the cached encoder's key.
_TRAINER_KEYS = ("precision", "limit_train_batches", "gradient_clip_val", "accumulate_grad_batches", "deterministic")


@dataclass
class MLMConfig:
    """task.mlm.* (configs/base/mlm.yaml, with the same defaults)."""

    mlm_probability: float = field(default=0.15, metadata=rule("float", low=0.0, high=1.0, low_open=True, high_open=True,
                                                               hint="the share of tokens masked; BERT's is 0.15"))
    mask_replace_prob: float = field(default=0.8, metadata=rule("float", **_PROB))
    random_replace_prob: float = field(default=0.1, metadata=rule("float", **_PROB))
    epochs: int = field(default=1, metadata=rule("int", low=1))
    max_steps: int | None = field(default=None, metadata=rule("int", low=1, nullable=True, hint="null: epochs x batches per epoch"))
    lr: float = field(default=5e-5, metadata=rule("float", low=0.0, low_open=True))
    weight_decay: float = field(default=0.01, metadata=rule("float", low=0.0))
    warmup_ratio: float = field(default=0.06, metadata=rule("float", low=0.0, high=1.0, high_open=True))
    batch_size: int = field(default=16, metadata=rule("int", low=1))
    eval_batch_size: int = field(default=64, metadata=rule("int", low=1))
    seed: int | None = field(default=None, metadata=rule("int", low=0, nullable=True, hint="null: the run's seed"))


def mlm_config(cfg: DictConfig) -> MLMConfig:
    values = plain((cfg.get("task") or {}).get("mlm"))
    known = {f.name for f in fields(MLMConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"task.mlm has no knob {unknown[0]}: its knobs are {', '.join(sorted(known))}")
    config = MLMConfig(**values)
    check_dataclass(config, "task.mlm")
    if config.mask_replace_prob + config.random_replace_prob > 1.0:
        raise ConfigError(f"task.mlm.mask_replace_prob={config.mask_replace_prob} + random_replace_prob={config.random_replace_prob} "
                          "is above 1: they split the masked tokens, so their sum must be <= 1")
    return config


def check_text_model(cfg: DictConfig, task: str) -> None:
    kind = find_kind(kind_name(cfg.model))
    if kind is None or not kind.supports_mlm:
        raise ConfigError(f"task={task} pre-trains a text encoder by masked language modelling, and model.name={cfg.model.get('name')} "
                          "is an image backbone: use a text model (model=minilm, or model=hf model.name=<HF id or folder>) or task=classify")


@dataclass
class Prepared:
    """Everything the phase trains with, before it trains: the key of its cached result is made of these."""

    config: MLMConfig
    seed: int
    model: torch.nn.Module
    tokenizer: object
    weights: str
    fresh_head: bool
    train_texts: list
    val_texts: list
    data_sizes: dict
    truncated: dict | None
    max_length: int


def prepare(cfg: DictConfig, task: str) -> Prepared:
    check_text_model(cfg, task)
    config = mlm_config(cfg)
    name = str(cfg.model.name)
    init_path = cfg.model.get("init_from")
    init_ckpt = read_init_checkpoint(init_path, name) if init_path else None  # before any data loads
    seed = int(cfg.seed if config.seed is None else config.seed)
    # The tokenizer, max_length checks and the token cache's identity; its random tensors are not used.
    backbone = make_backbone(cfg, "none")
    check_mask_token(backbone.tokenizer, name)
    datamodule = make_datamodule(cfg, backbone)
    datamodule.setup()
    datamodule.splits.pop("test", None)  # never read by pre-training: dropped before anything could
    train_texts, val_texts = mlm_texts(datamodule.splits)
    if not train_texts:
        raise ConfigError("task.mlm has no texts to train on: the training split is empty")
    sizes = {k: len(v) for k, v in datamodule.splits.items()}
    truncated = datamodule.truncated
    tokenizer = backbone.tokenizer
    del datamodule, backbone
    pl.seed_everything(seed, workers=True, verbose=False)  # the fresh head's init
    model, weights, fresh = load_masked_lm(name, "none" if init_ckpt is not None else str(cfg.model.weights), files=str(cfg.model.weights))
    if init_ckpt is not None:
        init_backbone_from(encoder_of(model), init_ckpt, init_path, model_name=name)
        weights = f"init_from:{init_path}"
    log.info("MLM on %d texts (%s), validation MLM loss on %d; masking %.0f %% of tokens", len(train_texts),
             " + ".join(k for k in ("train", "unlabeled") if k in sizes), len(val_texts), 100 * config.mlm_probability)
    return Prepared(config, seed, model, tokenizer, weights, fresh, train_texts, val_texts, sizes, truncated,
                    int(cfg.data.get("max_length") or 0))


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def fit(cfg: DictConfig, prep: Prepared, logger: bool) -> dict:
    """Train the prepared model; returns the phase's summary (losses, steps, times)."""
    c = prep.config
    collator = masking_collator(prep.tokenizer, c.mlm_probability, c.mask_replace_prob, c.random_replace_prob)
    val_collator = masking_collator(prep.tokenizer, c.mlm_probability, c.mask_replace_prob, c.random_replace_prob, seed=prep.seed)
    val_batches = masked_batches(prep.val_texts, val_collator, c.eval_batch_size)
    loader = train_loader(prep.train_texts, collator, c.batch_size, prep.seed)
    total = int(c.max_steps or c.epochs * len(loader))
    module = MaskedLMModule(prep.model, c.lr, c.weight_decay, round(c.warmup_ratio * total), total)
    loggers = [hydra.utils.instantiate(v) for v in (cfg.get("logger") or {}).values() if v] if logger else False
    trainer = instantiate_trainer(cfg, callbacks=[], logger=loggers, max_steps=total, max_epochs=-1, enable_checkpointing=False,
                                  limit_val_batches=0, num_sanity_val_steps=0)
    if trainer.world_size > 1:
        raise ConfigError(f"task.mlm trains on one device, and this trainer uses {trainer.world_size} processes: use trainer=default "
                          "(or trainer=gpu) for the MLM run, then fine-tune under DDP from its checkpoint")
    device = trainer.strategy.root_device
    prep.model.to(device)
    before = masked_loss(prep.model, val_batches, device)
    pl.seed_everything(prep.seed, workers=True, verbose=False)  # masking draws from the global generator
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, train_dataloaders=loader)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = masked_loss(prep.model, val_batches, device)
    prep.model.to("cpu")
    steps = int(trainer.global_step)
    log.info("MLM: %d steps in %.0f s; validation MLM loss %s -> %s", steps, wall, _fmt(before), _fmt(after))
    return {
        "texts": len(prep.train_texts), "val_texts": len(prep.val_texts), "texts_digest": texts_digest(prep.train_texts),
        "steps": steps, "planned_steps": total, "steps_per_epoch": len(loader), "knobs": {**asdict(c), "seed": prep.seed},
        "head": "fresh (decoder tied to the input embeddings)" if prep.fresh_head else "pre-trained", "weights": prep.weights,
        "val_loss_before": before, "val_loss_after": after,
        "train_loss_first": _mean(module.losses[:10]), "train_loss_last": _mean(module.losses[-10:]),
        "fit_s": round(wall, 2), "cpu_s": round(cpu, 2), "texts_per_s": round(steps * c.batch_size / wall, 1) if wall else None,
        "global_zero": bool(trainer.is_global_zero),
    }


def _fmt(loss: float | None) -> str:
    return "n/a" if loss is None else f"{loss:.4f}"


def encoder_checkpoint(cfg: DictConfig, prep: Prepared, summary: dict) -> dict:
    """A transferlab checkpoint of the encoder alone: its tensors as a classifier stores them (backbone.*)."""
    encoder = encoder_of(prep.model)
    return {
        "state_dict": {f"backbone.{k}": v.detach().cpu().clone() for k, v in encoder.state_dict().items()},
        "transferlab": {"format": CHECKPOINT_FORMAT, ENCODER_ONLY: True, "config": OmegaConf.to_container(cfg, resolve=False),
                        "weights": f"mlm over {prep.weights}", "mlm": {k: v for k, v in summary.items() if k != "global_zero"}},
    }


# --- task=mlm: one run -----------------------------------------------------------------------------
@dataclass
class MLMRun:
    """What a task=mlm run did, for its record (engine/recording.py, mlm_record)."""

    prep: Prepared
    summary: dict  # fit()'s, less global_zero
    checkpoint: Path  # the encoder, written by the first process


def train_mlm(cfg: DictConfig) -> MLMRun:
    if cfg.get("ckpt_path") or cfg.get("auto_resume"):
        raise ConfigError("task=mlm does not resume (its runs are short and write only the final encoder): "
                          "drop ckpt_path / auto_resume and start it again")
    prep = prepare(cfg, MLM)
    summary = fit(cfg, prep, logger=True)
    path = Path(cfg.paths.output_dir) / "checkpoints" / ENCODER_FILE
    if summary["global_zero"]:
        ckpt = encoder_checkpoint(cfg, prep, summary)
        atomic_write(path, lambda f: torch.save(ckpt, f))
        log.info("MLM encoder: %s (fine-tune it with model.init_from=%s)", path, path)
    summary.pop("global_zero")
    return MLMRun(prep, summary, path)


# --- task=tapt: the phase before a classification run, cached ------------------------------------------
@dataclass(frozen=True)
class MLMKey(JsonKey):
    model: str
    weights: str
    weights_digest: str
    tokenizer: str
    max_length: int
    texts: str
    n_texts: int
    knobs: str
    trainer: str
    transformers: str


def _key(cfg: DictConfig, prep: Prepared) -> MLMKey:
    import transformers

    trainer = {k: plain(cfg.trainer).get(k) for k in _TRAINER_KEYS}
    return MLMKey(
        model=str(cfg.model.name), weights=prep.weights, weights_digest=state_dict_digest(prep.model),
        tokenizer=tokenizer_digest(prep.tokenizer), max_length=prep.max_length, texts=texts_digest(prep.train_texts),
        n_texts=len(prep.train_texts), knobs=json.dumps({**asdict(prep.config), "seed": prep.seed}, sort_keys=True),
        trainer=json.dumps(trainer, sort_keys=True, default=str), transformers=transformers.__version__,
    )


def tapt_encoder(cfg: DictConfig) -> tuple[str, dict]:
    """(the checkpoint the classifier starts from, the phase's summary for the record): the cached
    encoder of this model, texts and knobs, else one trained now and cached. A debug run's phase is
    never cached: it would stand in for a real one."""
    start = time.perf_counter()
    if cfg.model.get("init_from"):
        raise ConfigError(f"task=tapt pre-trains from model.weights, and model.init_from={cfg.model.init_from} would replace them: "
                          "drop one (to pre-train from an earlier run: task=mlm model.init_from=<it>, then fine-tune from its checkpoint)")
    prep = prepare(cfg, TAPT)
    if debug_run(cfg):
        summary = fit(cfg, prep, logger=False)
        path = Path(cfg.paths.output_dir) / "checkpoints" / ENCODER_FILE
        ckpt = encoder_checkpoint(cfg, prep, summary)
        atomic_write(path, lambda f: torch.save(ckpt, f))
        return str(path), {**ckpt["transferlab"]["mlm"], "cached": False, "checkpoint": str(path)}
    key = _key(cfg, prep)
    path = Path(cfg.paths.cache_dir) / "mlm" / safe_name(str(cfg.model.name)) / f"{key.digest()[:40]}.ckpt"

    def read(p: Path) -> dict:
        blob = load_blob(p, CACHE_FORMAT, key, "model, texts or task.mlm")
        if not isinstance(blob.get("transferlab"), dict) or "state_dict" not in blob:
            raise CacheFileError("not an encoder checkpoint")
        return blob

    def build() -> dict:
        return encoder_checkpoint(cfg, prep, fit(cfg, prep, logger=False))

    log.info("MLM cache: %s", path)
    cached = read_or_build(path, read, build, lambda p, v: save_blob(p, CACHE_FORMAT, key, v), log, "MLM encoder")
    summary = {**cached.value["transferlab"]["mlm"], "cached": cached.hit, "checkpoint": str(path),
               "phase_s": round(time.perf_counter() - start, 2)}
    if cached.hit:
        log.info("MLM encoder found in the cache (trained in %.0f s by an earlier job): %s", summary.get("fit_s") or 0.0, path)
    return str(path), summary

