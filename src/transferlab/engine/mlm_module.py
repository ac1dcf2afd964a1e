"""The LightningModule of masked-language-model pre-training: the HF model's own loss, AdamW, linear
warm-up then linear decay (the schedule BERT and Gururangan et al.'s DAPT/TAPT use)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn


class MaskedLMModule(pl.LightningModule):
    def __init__(self, model: nn.Module, lr: float, weight_decay: float, warmup_steps: int, total_steps: int):
        super().__init__()
        self.model = model
        # from_pretrained hands out an eval-mode model and Lightning keeps each submodule's mode: without
        # this, dropout would be off while pre-training.
        self.model.train()
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.warmup_steps, self.total_steps = int(warmup_steps), max(1, int(total_steps))
        self.losses: list[float] = []  # every step's, for the record's first and last losses

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss
        self.losses.append(float(loss.detach()))
        self.log("mlm/train_loss", loss, prog_bar=True, batch_size=int(batch["input_ids"].shape[0]))
        return loss

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        # Biases and norms are not decayed (BERT's recipe; the classifier's optimizer does the same).
        decay, plain = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (plain if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay}, {"params": plain, "weight_decay": 0.0}],
                                      lr=self.lr)
        schedule = get_linear_schedule_with_warmup(optimizer, self.warmup_steps, self.total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


@torch.no_grad()
def masked_loss(model: nn.Module, batches: list[dict], device: torch.device) -> float | None:
    """Mean cross-entropy over every masked token of `batches` (not a mean of batch means)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"] != -100).sum())
            if n:
                total += float(model(**batch).loss) * n
                count += n
    finally:
        model.train(was_training)
    return total / count if count else None
