"""The L-BFGS linear probe's validation accuracy (finetune/linear_probe.py, the fit `strategy=extract
strategy.solver=lbfgs` runs): the slowest score, and the one closest to what fine-tuning measures."""

from __future__ import annotations

import torch

from transferlab.finetune.linear_probe import DEFAULT_GRID, fit_linear_probe


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                   num_classes: int, grid: tuple[float, ...] = DEFAULT_GRID, max_iter: int = 1000) -> float:
    return fit_linear_probe(train_x, train_y, val_x, val_y, num_classes, grid=grid, max_iter=max_iter).val_acc
