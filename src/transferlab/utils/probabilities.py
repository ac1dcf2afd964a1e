"""Whether a classifier's probabilities mean anything: expected calibration error over equal-width
confidence bins, negative log-likelihood, the multiclass Brier score, the per-bin reliability table
and its diagram.

torchmetrics' MulticlassCalibrationError gives the same ECE, but it keeps every example's
confidence until compute() and returns only the scalar; `ReliabilityBins` keeps three sums per bin,
so its state is a few floats whatever the split's size, syncs over DDP ranks by summing, and the
table the diagram is drawn from comes from the very sums the ECE does (tests/test_calibration.py
checks the two agree). The bins are torchmetrics' too: [lower, upper), a confidence of exactly 1 in
the top bin.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torchmetrics import Metric

from transferlab.utils.io import atomic_write

N_BINS = 15  # Guo et al. 2017's choice, and what published ECE figures use
PICTURE_FILE = "reliability.png"
DPI = 110


def bin_edges(n_bins: int = N_BINS) -> torch.Tensor:
    return torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)


class ReliabilityBins(Metric):
    """Per equal-width confidence bin: how many examples, the sum of their top-class confidence and
    how many of them the top class got right. compute() gives {"ece", "table"}."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, n_bins: int = N_BINS, **kwargs):
        super().__init__(**kwargs)
        self.n_bins = n_bins
        for name in ("count", "confidence", "correct"):
            self.add_state(name, default=torch.zeros(n_bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        probs = logits.detach().double().softmax(-1)
        confidence, predicted = probs.max(-1)
        index = bin_index(confidence, self.n_bins)
        self.count.scatter_add_(0, index, torch.ones_like(confidence))
        self.confidence.scatter_add_(0, index, confidence)
        self.correct.scatter_add_(0, index, (predicted == labels).double())

    def compute(self) -> dict:
        return {"ece": ece_of_sums(self.count, self.confidence, self.correct),
                "table": reliability_table(self.count, self.confidence, self.correct)}


def bin_index(confidence: torch.Tensor, n_bins: int = N_BINS) -> torch.Tensor:
    edges = bin_edges(n_bins).to(confidence.device, confidence.dtype)
    return (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, n_bins - 1)


def ece_of_sums(count: torch.Tensor, confidence: torch.Tensor, correct: torch.Tensor) -> float:
    """Sum over bins of (bin share) x |mean confidence - accuracy|; 0 for no examples."""
    total = float(count.sum())
    return float((confidence - correct).abs().sum() / total) if total > 0 else 0.0


def reliability_table(count: torch.Tensor, confidence: torch.Tensor, correct: torch.Tensor) -> list[dict]:
    """One row per bin: lower, upper, count, mean confidence and accuracy (None in an empty bin)."""
    edges = bin_edges(len(count)).tolist()
    rows = []
    for b, n in enumerate(count.tolist()):
        rows.append({
            "lower": round(edges[b], 6), "upper": round(edges[b + 1], 6), "count": int(n),
            "confidence": float(confidence[b] / n) if n > 0 else None,
            "accuracy": float(correct[b] / n) if n > 0 else None,
        })
    return rows


def ece_of_table(table: list[dict]) -> float:
    """The ECE a reliability table holds (the same number compute() gave with it)."""
    total = sum(r["count"] for r in table)
    gaps = sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in table if r["count"] > 0)
    return float(gaps / total) if total > 0 else 0.0


def reliability_of(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = N_BINS) -> dict:
    """{"ece", "table"} of one set of logits, through the same metric the module streams."""
    bins = ReliabilityBins(n_bins)
    bins.update(logits, labels)
    return bins.compute()


def nll_per_example(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.double(), labels, reduction="none")


def brier_per_example(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum over classes of (p - onehot)^2: 0 for a sure right answer, 2 for a sure wrong one."""
    probs = logits.double().softmax(-1)
    return (probs - F.one_hot(labels, probs.shape[-1]).double()).pow(2).sum(-1)


def probability_scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """ECE, NLL and Brier of one set of logits, as the module logs them."""
    return {
        "ece": reliability_of(logits, labels)["ece"],
        "nll": float(nll_per_example(logits, labels).mean()),
        "brier": float(brier_per_example(logits, labels).mean()),
    }


def reliability_figure(table: list[dict], title: str = "") -> Figure:
    """Accuracy per confidence bin against the diagonal, the gap to it shaded, the bins' shares below."""
    fig = Figure(figsize=(5.0, 5.6))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [r for r in table if r["count"] > 0]
    lefts = [r["lower"] for r in filled]
    widths = [r["upper"] - r["lower"] for r in filled]
    accuracy = [r["accuracy"] for r in filled]
    confidence = [r["confidence"] for r in filled]
    top.bar(lefts, accuracy, widths, align="edge", color="tab:blue", edgecolor="black", linewidth=0.5, label="accuracy")
    top.bar(lefts, [c - a for c, a in zip(confidence, accuracy)], widths, bottom=accuracy, align="edge",
            color="tab:red", alpha=0.35, edgecolor="tab:red", hatch="//", linewidth=0.5, label="gap to confidence")
    top.plot([0, 1], [0, 1], "--", color="gray", linewidth=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    total = sum(r["count"] for r in table) or 1
    bottom.bar(lefts, [r["count"] / total for r in filled], widths, align="edge", color="gray", edgecolor="black", linewidth=0.5)
    bottom.set_xlabel("confidence (top-class probability)")
    bottom.set_ylabel("share")
    top.set_title(f"{title}\nECE {ece_of_table(table):.4f} ({len(table)} bins)".lstrip("\n"), fontsize=10)
    fig.tight_layout()
    return fig


def draw_reliability(table: list[dict], path: str | Path, title: str = "") -> Path:
    """The reliability diagram of `table` written to `path` (PNG), replaced whole or not at all."""
    fig = reliability_figure(table, title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
