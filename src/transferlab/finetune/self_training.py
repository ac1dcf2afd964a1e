"""Self-training of the L-BFGS linear probe on cached features: `strategy=pseudo_label`.

Round 0 is the probe on the labelled features (linear_probe.py, its penalty chosen on validation).
Each later round labels the unlabelled features with the previous round's probe and keeps the
predictions whose softmax confidence is above the threshold. With `calibrate` that is the
confidence after temperature scaling on validation (finetune/temperature.py); otherwise the chosen
penalty alone would decide how many pass. A cap per class keeps the most confident, so that one
easy class cannot crowd out the others. The round then refits on labelled plus pseudo-labelled
features, the pseudo-labels weighted by `unlabeled_weight` in the loss and the
penalty chosen on validation again. Every round relabels the whole pool: a pseudo-label kept in one
round is not carried into the next.

The round kept is the one with the best validation accuracy, ties going to the earlier round, so
the result is never worse on validation than the plain probe.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from transferlab.finetune.linear_probe import ProbeResult, fit_linear_probe
from transferlab.finetune.temperature import fit_temperature

log = logging.getLogger(__name__)

# Wider than the run-level calibration's T_BOUNDS: the probe's temperature only ranks confidences
# against the threshold, and these bounds keep the rounds what they were before the bounds existed.
PROBE_T_BOUNDS = (1e-4, 1e4)


def select_pseudo_labels(probs: torch.Tensor, threshold: float, per_class_cap: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of the rows of `probs` [N, C] whose top probability is above `threshold`;
    with a cap, each class keeps its `per_class_cap` most confident. Indices ascending."""
    confidence, labels = probs.max(1)
    keep = confidence > threshold
    if per_class_cap is not None:
        for c in labels[keep].unique().tolist():
            members = (keep & (labels == c)).nonzero().flatten()
            if len(members) > per_class_cap:
                # Stable, so equal confidences fall to the earlier index: the same inputs keep the same rows.
                order = torch.sort(confidence[members], descending=True, stable=True).indices
                keep[members[order[per_class_cap:]]] = False
    idx = keep.nonzero().flatten()
    return idx, labels[idx]


def logits(probe: ProbeResult, x: torch.Tensor) -> torch.Tensor:
    """[N, C] logits of [N, D] features, or their mean over the views of [N, V, D] ones."""
    out = x.float() @ probe.weight.T + probe.bias
    return out.mean(1) if x.ndim == 3 else out


@dataclass
class SelfTrainingResult:
    probe: ProbeResult  # the kept round's, on raw features
    rounds: list[dict]  # per round: round, temperature, kept, kept_per_class, weight_decay, val_acc
    chosen_round: int
    unlabeled: int  # unlabelled examples the rounds labelled
    settings: dict = field(default_factory=dict)
    fit_s: float = 0.0

    @property
    def weight(self) -> torch.Tensor:
        return self.probe.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.probe.bias

    def summary(self) -> dict:
        return {
            **self.probe.summary(),
            "fit_s": round(self.fit_s, 2),
            "pseudo_label": {"unlabeled": self.unlabeled, "chosen_round": self.chosen_round, **self.settings, "rounds": self.rounds},
        }


def self_train(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    unlabeled_x: torch.Tensor,
    num_classes: int,
    *,
    rounds: int,
    threshold: float,
    per_class_cap: int | None = None,
    unlabeled_weight: float = 1.0,
    calibrate: bool = True,
    grid=None,
    max_iter: int = 1000,
) -> SelfTrainingResult:
    """Round 0 and `rounds` rounds of pseudo-labelling; the round best on validation is kept."""
    t0 = time.perf_counter()
    probe = fit_linear_probe(train_x, train_y, val_x, val_y, num_classes, grid=grid, max_iter=max_iter)
    rows = [_row(0, probe, torch.empty(0, dtype=torch.long), num_classes)]
    best, best_round = probe, 0
    for r in range(1, rounds + 1):
        temperature = fit_temperature(logits(probe, val_x), val_y, bounds=PROBE_T_BOUNDS) if calibrate else 1.0
        probs = torch.softmax(logits(probe, unlabeled_x) / temperature, dim=1)
        idx, pseudo = select_pseudo_labels(probs, threshold, per_class_cap)
        if len(idx) == 0:
            log.info("pseudo_label round %d: no unlabelled prediction above strategy.threshold=%g; stopping", r, threshold)
            rows.append({"round": r, "temperature": temperature, "kept": 0, "kept_per_class": [0] * num_classes,
                         "weight_decay": None, "val_acc": None})
            break
        x = torch.cat([train_x, unlabeled_x[idx]])
        y = torch.cat([train_y.long(), pseudo])
        weight = torch.cat([torch.ones(len(train_y)), torch.full((len(idx),), float(unlabeled_weight))])
        probe = fit_linear_probe(x, y, val_x, val_y, num_classes, grid=grid, max_iter=max_iter, sample_weight=weight)
        rows.append(_row(r, probe, pseudo, num_classes, temperature))
        log.info("pseudo_label round %d: %d pseudo-labels kept, val acc %.4f (weight_decay %g)", r, len(idx), probe.val_acc, probe.weight_decay)
        if probe.val_acc > best.val_acc:
            best, best_round = probe, r
    log.info("pseudo_label: round %d kept (val acc %.4f, round 0 %.4f)", best_round, best.val_acc, rows[0]["val_acc"])
    return SelfTrainingResult(best, rows, best_round, int(len(unlabeled_x)), fit_s=time.perf_counter() - t0)


def _row(r: int, probe: ProbeResult, pseudo: torch.Tensor, num_classes: int, temperature: float | None = None) -> dict:
    return {
        "round": r, "temperature": temperature, "kept": int(len(pseudo)), "kept_per_class": torch.bincount(pseudo, minlength=num_classes).tolist(),
        "weight_decay": probe.weight_decay, "val_acc": probe.val_acc,
    }
