"""Classical baselines in the harness: a model fitted on the run's own splits with no network.

What a practitioner tries before transfer learning (TF-IDF + logistic regression for text,
logistic regression on pixels for images), run on exactly the training subset, validation set and
test split a strategy of the same config would see, so every report shows how far the pre-trained
backbone is above it. A baseline strategy returns a `ClassicalModel`; the engine scores val and
test with it, records it like any run, and pickles it as the run's checkpoint.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_confusion_matrix, multiclass_f1_score

from transferlab.data.arrays import ImageArrays, TokenArrays
from transferlab.utils.io import atomic_write
from transferlab.utils.probabilities import probability_scores, reliability_of


class ClassicalModel(Protocol):
    num_parameters: int
    summary: dict  # what was chosen (the penalty) and the fit's time, for the run record

    def log_proba(self, arrays: ImageArrays | TokenArrays) -> torch.Tensor:
        """Log-probabilities [N, num_classes] of a split."""


@dataclass
class Scores:
    metrics: dict
    confusion: list[list[int]]  # rows true, columns predicted
    reliability: list[dict]  # the confidence bins' table (utils/probabilities.py)


def scores(model: ClassicalModel, arrays, num_classes: int) -> Scores:
    """The metrics the module logs for a network (accuracy, top-5, macro-F1, loss, ECE, NLL,
    Brier), the confusion matrix and the reliability table, for a classical model."""
    logp = model.log_proba(arrays).float()
    y = arrays.labels
    bins = reliability_of(logp, y)
    metrics = {
        "acc": float(multiclass_accuracy(logp, y, num_classes, average="micro")),
        "acc_top5": float(multiclass_accuracy(logp, y, num_classes, top_k=min(5, num_classes), average="micro")),
        "f1_macro": float(multiclass_f1_score(logp, y, num_classes, average="macro")),
        "loss": float(F.nll_loss(logp, y)),
        **probability_scores(logp, y),
    }
    return Scores(metrics, multiclass_confusion_matrix(logp, y, num_classes).tolist(), bins["table"])


def save_model(model: ClassicalModel, path: Path) -> str:
    return str(atomic_write(path, lambda f: pickle.dump(model, f)))
