"""The LightningModule: a backbone, a new head, and the fine-tuning plan that says what trains."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from transferlab.data.batch import Batch, SemiBatch, concat
from transferlab.errors import DivergedError
from transferlab.finetune.class_imbalance import LossTerms, supervised_cross_entropy
from transferlab.finetune.optim import OptimConfig, build_optimizer, build_scheduler, param_groups
from transferlab.finetune.plan import FinetunePlan
from transferlab.models.backbone import Backbone, count_params
from transferlab.models.checkpoint import CHECKPOINT_FORMAT, check_fits
from transferlab.utils.probabilities import ReliabilityBins, brier_per_example, nll_per_example

EVAL_STAGES = ("val", "test")


def planned_steps(trainer: pl.Trainer, batches_per_epoch: int) -> int:
    """The optimizer steps of the whole fit: what trainer.estimated_stepping_batches says, without
    making the training iterator. Lightning makes it to count the batches, before a resumed fit has
    restored its epoch; a DataLoader with workers then draws its first batches right away, from
    epoch 0's order, and the first epoch after the resume replays them (tests/test_storage.py)."""
    steps = steps_per_epoch(trainer, batches_per_epoch) * max(trainer.max_epochs or 1, 1)
    return min(steps, trainer.max_steps) if trainer.max_steps != -1 else steps


def steps_per_epoch(trainer: pl.Trainer, batches_per_epoch: int) -> int:
    limit = trainer.limit_train_batches  # fast_dev_run and overfit_batches set it too
    batches = min(batches_per_epoch, int(limit)) if isinstance(limit, int) else int(batches_per_epoch * limit)
    return math.ceil(batches / trainer.accumulate_grad_batches)


class TransferModule(pl.LightningModule):
    def __init__(
        self,
        backbone: Backbone,
        head: nn.Module,
        plan: FinetunePlan,
        optim: OptimConfig,
        num_classes: int,
        label_smoothing: float = 0.0,
        extra_checkpoint_state: dict | None = None,
        tta_hflip: bool = False,
        loss_terms: LossTerms | None = None,
    ):
        super().__init__()
        # The Backbone knows how to turn a batch into features; its network is registered here as
        # `backbone`, so checkpoints hold it under backbone.* whatever kind of backbone it is.
        self.encoder = backbone
        self.backbone = backbone.model
        self.head = head
        self.plan = plan
        self.strategy = plan.strategy
        state = self.strategy.state_module()
        if state is not None:
            self.strategy_state = state  # tensors the strategy keeps in checkpoints (L2-SP's starting point)
        self.optim_cfg = optim
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        # Class weights and logit adjustment of the training loss (optim.*); plain tensors, not
        # buffers, so checkpoints keep their keys: a resumed run computes them again from its data.
        self.loss_terms = loss_terms
        # Evaluate on the image and its mirror and average the logits (val and test alike, so the
        # checkpoint chosen on val is judged the way it is tested).
        self.tta_hflip = tta_hflip
        # Saved into every checkpoint so eval.py can rebuild the run (config, class names).
        self.extra_checkpoint_state = extra_checkpoint_state or {}
        self.metrics = nn.ModuleDict(
            {
                **{
                    f"{stage}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                    for stage in EVAL_STAGES
                    for name, k in (("acc", 1), ("acc_top5", min(5, num_classes)))
                },
                # Accuracy hides a classifier that ignores a small class; macro-F1 weighs each class alike.
                **{f"{stage}_f1_macro": MulticlassF1Score(num_classes, average="macro") for stage in EVAL_STAGES},
                # Whether the probabilities mean anything, not only the argmax: per-example means
                # and the confidence bins the ECE and reliability diagram come from.
                **{f"{stage}_{name}": MeanMetric() for stage in EVAL_STAGES for name in ("nll", "brier")},
                **{f"{stage}_reliability": ReliabilityBins() for stage in EVAL_STAGES},
                # Counts, rows the true class: the record's matrix, per-class scores and picture (recording.py).
                **{f"{stage}_confusion": MulticlassConfusionMatrix(num_classes) for stage in EVAL_STAGES},
            }
        )
        # Per stage, the last epoch's confusion matrix and reliability table, synced over DDP ranks
        # like the metrics above; absent before that stage ran.
        self.confusions: dict[str, list[list[int]]] = {}
        self.reliability: dict[str, list[dict]] = {}
        # Post-hoc temperature scaling (engine/calibration.py): the scored logits are divided by it.
        self.temperature: float | None = None
        # While set, each eval step's scored logits and labels are kept here (calibration reads them).
        self.keep_logits = False
        self.kept: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.total_steps: int | None = None  # optimizer steps of the whole fit, set with the optimizer
        # Train mode throughout, as a new module is: Lightning keeps each submodule's mode as it finds
        # it, and some libraries hand out pre-trained networks in eval mode (transformers'
        # from_pretrained), which would turn dropout off in training and differ from a resumed run.
        self.train()

    def train(self, mode: bool = True):
        super().train(mode)
        # Module.train() flips every submodule; frozen groups' norm layers must go back to eval.
        if hasattr(self, "plan"):
            self.plan.apply(self.backbone, training=mode)
        return self

    def trainable_params(self) -> int:
        return count_params(self, trainable_only=True)

    # --- forward and steps ---------------------------------------------------------------------
    def forward(self, batch: Batch) -> torch.Tensor:
        if batch.features is not None:
            return self.head_logits(batch.features)
        return self.head(self.encoder.features(batch))

    def head_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head on pooled features ([B, D], or [B, V, D]: the mean of the views' logits)."""
        if x.ndim == 2:
            return self.head(x)
        b, v, d = x.shape  # several views of each image (the image and its mirror): mean of their logits
        return self.head(x.reshape(b * v, d)).view(b, v, -1).mean(1)

    def _training_features(self, batch: Batch | SemiBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The labelled batch's features and the unlabelled views' (none without a SemiBatch)."""
        if not isinstance(batch, SemiBatch):
            return (batch.features if batch.features is not None else self.encoder.features(batch)), []
        # One forward over all of them: BatchNorm normalises labelled and unlabelled images together.
        parts = [batch.labeled, *batch.views()]
        features, *views = self.encoder.features(concat(parts)).split([len(p.inputs) for p in parts])
        return features, views

    def training_step(self, batch: Batch | SemiBatch, batch_idx):
        features, views = self._training_features(batch)
        labeled = batch.labeled if isinstance(batch, SemiBatch) else batch
        head_input = features.detach() if self.strategy.head_on_detached_features else features
        logits = self.head_logits(head_input)
        y = labeled.labels
        loss = supervised_cross_entropy(logits, y, self.label_smoothing, self.loss_terms)
        if not torch.isfinite(loss):
            raise DivergedError(self._divergence(loss.item(), labeled.inputs))
        acc = (logits.argmax(-1) == y).float().mean()
        self.log_dict({"train/loss": loss, "train/acc": acc}, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y))
        extras = (
            ("feature_loss", self.strategy.feature_loss(features, y)),
            ("extra_loss", self.strategy.extra_loss(self)),
            ("unlabeled_loss", self.strategy.unlabeled_loss(self, features, views) if views else None),
        )
        for name, extra in extras:
            if extra is None:
                continue
            self.log(f"train/{name}", extra, on_step=True, on_epoch=True, batch_size=len(y))
            loss = loss + extra
            if not torch.isfinite(loss):
                raise DivergedError(self._divergence(loss.item(), labeled.inputs))
        return loss

    def _divergence(self, loss: float, x: torch.Tensor) -> str:
        where = f"loss became {loss} at step {self.global_step} (epoch {self.current_epoch})"
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            return f"{where}: the batch itself holds NaN or inf values: check the data"
        lrs = {g.get("name", str(i)): float(g["lr"]) for i, g in enumerate(self.optimizers().param_groups)}
        head = lrs.get("head", max(lrs.values()))
        return (
            f"{where} with lr {head:.3g} (head; {len(lrs)} groups, largest {max(lrs.values()):.3g}): "
            f"lower strategy.lr (now {self.plan.config.lr:g}), or check the data"
        )

    def scored_logits(self, batch: Batch) -> torch.Tensor:
        """The logits val and test score: mirror-averaged under tta_hflip, divided by the fitted
        temperature where there is one. Every eval metric reads these."""
        logits = self(batch)
        if self.tta_hflip and batch.images is not None:
            logits = (logits + self(batch.with_inputs(images=batch.images.flip(-1)))) / 2
        return logits / self.temperature if self.temperature else logits

    def _eval_step(self, stage: str, batch: Batch) -> None:
        logits = self.scored_logits(batch)
        y = batch.labels
        loss = F.cross_entropy(logits, y)
        for name in ("acc", "acc_top5", "f1_macro"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(logits, y)
            self.log(f"{stage}/{name}", metric, on_epoch=True, prog_bar=name == "acc", batch_size=len(y))
        for name, per_example in (("nll", nll_per_example), ("brier", brier_per_example)):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(per_example(logits.detach(), y).float())
            self.log(f"{stage}/{name}", metric, on_epoch=True, batch_size=len(y))
        self.metrics[f"{stage}_reliability"].update(logits, y)
        self.metrics[f"{stage}_confusion"].update(logits, y)
        if self.keep_logits:
            self.kept.setdefault(stage, []).append((logits.detach().cpu(), y.detach().cpu()))
        # Averaged over DDP ranks like the accuracies (torchmetrics sync on compute); no-op on 1 process.
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(y), sync_dist=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch)

    def _reset_counts(self, stage: str) -> None:
        for name in ("reliability", "confusion"):
            self.metrics[f"{stage}_{name}"].reset()

    def _start_eval_epoch(self, stage: str) -> None:
        self._reset_counts(stage)
        self.kept.pop(stage, None)

    def _end_eval_epoch(self, stage: str) -> None:
        # compute() gathers every rank's sums and counts, so each rank holds the whole split's.
        bins = self.metrics[f"{stage}_reliability"].compute()
        self.log(f"{stage}/ece", bins["ece"], on_epoch=True)
        self.reliability[stage] = bins["table"]
        self.confusions[stage] = self.metrics[f"{stage}_confusion"].compute().cpu().tolist()
        self._reset_counts(stage)

    def on_validation_epoch_start(self) -> None:
        self._start_eval_epoch("val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval_epoch("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval_epoch("test")

    def on_test_epoch_end(self) -> None:
        self._end_eval_epoch("test")

    @property
    def test_confusion(self) -> list[list[int]] | None:
        """The last test's confusion matrix; None before a test."""
        return self.confusions.get("test")

    # Under spawned DDP ranks (utils/ddp.py) the test ran on a copy of this module: rank 0 sends the
    # matrices and tables back to the job's process, which writes the record.
    def rank_zero_state(self, trainer) -> dict:
        return {"confusions": self.confusions, "reliability": self.reliability}

    def load_rank_zero_state(self, trainer, state: dict) -> None:
        self.confusions = dict(state.get("confusions") or {})
        self.reliability = dict(state.get("reliability") or {})

    def predict_step(self, batch, batch_idx):
        logits = self(batch)
        return (logits / self.temperature if self.temperature else logits).softmax(-1)

    # --- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        groups, units = param_groups(self.plan, self.backbone, self.head, self.plan.config.lr, self.optim_cfg.weight_decay)
        optimizer = build_optimizer(self.optim_cfg, groups)
        dm = self.trainer.datamodule
        epochs = max(1, self.trainer.max_epochs or 1)
        if dm is not None:
            batches = len(dm.train_dataloader())
            per_epoch, total = steps_per_epoch(self.trainer, batches), planned_steps(self.trainer, batches)
        else:  # loaders passed to fit() directly (benchmarks) have no DataModule to ask: Lightning counts them
            total = int(self.trainer.estimated_stepping_batches)
            per_epoch = total // epochs
        self.total_steps = total  # the run's progress for schedules outside the optimizer (DANN's reversal weight)
        # Per epoch as the loader has it, not total / max_epochs: a step budget (trainer.max_steps)
        # cuts the run short of max_epochs, and warm-up is counted in epochs.
        clock = self.optim_cfg.clock(steps_per_epoch=max(1, per_epoch), total_steps=total)
        scheduler = build_scheduler(optimizer, self.plan, units, clock)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Resume (fit's ckpt_path) and test's best checkpoint: name a mismatch before Lightning's
        # strict load_state_dict reports it as a size-mismatch traceback.
        self.check_checkpoint(checkpoint, getattr(self._trainer, "ckpt_path", None) or "(the checkpoint)")

    def check_checkpoint(self, checkpoint: dict, path) -> None:
        """A CheckpointError naming what differs when `checkpoint` does not fit this model and data."""
        if "transferlab" not in checkpoint:
            return
        config = self.extra_checkpoint_state.get("config") or {}
        check_fits(
            checkpoint, path, self.state_dict(), self.num_classes, self.extra_checkpoint_state.get("classes"),
            fix=f"use it with the model and data it was trained on, or start a new run from it: model.init_from={path} "
            "model.head.reset=true",
            model_name=(config.get("model") or {}).get("name"),
        )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["transferlab"] = {**self.extra_checkpoint_state, "num_classes": self.num_classes, "format": CHECKPOINT_FORMAT}
        # So that a resumed run keeps logging into the same W&B run (train.py, resume.py).
        wandb_id = next((lg.version for lg in self.loggers if type(lg).__name__ == "WandbLogger"), None)
        if wandb_id:
            checkpoint["transferlab"]["wandb_id"] = wandb_id
