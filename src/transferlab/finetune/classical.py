"""Classical baselines in the harness: a model fitted on the run's own splits with no network.

What a practitioner tries before transfer learning (TF-IDF + logistic regression for text,
logistic regression on pixels for images), run on exactly the training subset, validation set and
test split a strategy of the same config would see, so every report shows how far the pre-trained
backbone is above it. A baseline strategy returns a `ClassicalModel`; the engine scores val and
test with it, records it like any run, and pickles it as the run's checkpoint.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix, multiclass_f1_score

from transferlab.data.arrays import ImageArrays, TokenArrays
from transferlab.utils.io import atomic_write


class ClassicalModel(Protocol):
    num_parameters: int
    summary: dict  # what was chosen (the penalty) and the fit's time, for the run record

    def log_proba(self, arrays: ImageArrays | TokenArrays) -> torch.Tensor:
        """Log-probabilities [N, num_classes] of a split."""


def scores(model: ClassicalModel, arrays, num_classes: int) -> tuple[dict, list[list[int]]]:
    """The metrics the module logs for a network (accuracy, top-5, macro-F1, loss) and the
    confusion matrix (rows true, columns predicted), for a classical model."""
    logp = model.log_proba(arrays).float()
    y = arrays.labels
    metrics = {
        "acc": float(multiclass_accuracy(logp, y, num_classes, average="micro")),
        "acc_top5": float(multiclass_accuracy(logp, y, num_classes, top_k=min(5, num_classes), average="micro")),
        "f1_macro": float(multiclass_f1_score(logp, y, num_classes, average="macro")),
        "loss": float(F.nll_loss(logp, y)),
    }
    return metrics, multiclass_confusion_matrix(logp, y, num_classes).tolist()


def save_model(model: ClassicalModel, path: Path) -> str:
    return str(atomic_write(path, lambda f: pickle.dump(model, f)))
