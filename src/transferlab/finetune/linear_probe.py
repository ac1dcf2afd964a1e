"""Linear probe by full-batch L-BFGS: `strategy=extract strategy.solver=lbfgs`.

Multinomial logistic regression on cached backbone features with an L2 penalty, the penalty
chosen on validation from a log grid (the protocol of Kornblith et al. 2019, "Do Better ImageNet
Models Transfer Better?", and of CLIP's linear probes). The features are standardised with the
training split's mean and scale before fitting (L-BFGS converges in far fewer steps), and the fit
is folded back into one nn.Linear on the raw features, so the model's head serves it unchanged.

Objective for a penalty lam:  mean cross-entropy(x W^T + b, y) + lam / 2 * ||W||^2  (b is not penalised).
With sample weights the mean is weighted (sum w_i ce_i / sum w_i), so the penalty keeps its scale.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.errors import ConfigError

log = logging.getLogger(__name__)

# 10^-6 .. 10^1: from barely regularised to a strong pull towards the class prior.
DEFAULT_GRID = tuple(float(f"1e{k}") for k in range(-6, 2))


@dataclass
class ProbeResult:
    weight: torch.Tensor  # [C, D], on raw (unstandardised) features
    bias: torch.Tensor  # [C]
    weight_decay: float  # the chosen lam
    val_acc: float
    grid: list[dict] = field(default_factory=list)  # per lam: weight_decay, val_acc, val_loss, train_loss, iterations
    fit_s: float = 0.0

    def summary(self) -> dict:
        return {
            "solver": "lbfgs",
            "weight_decay": self.weight_decay,
            "val_acc": self.val_acc,
            "grid": self.grid,
            "fit_s": round(self.fit_s, 2),
        }


def _logits(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Logits of [N, D] features, or the mean over views of [N, V, D] ones (test-time mirroring)."""
    out = x @ w.T + b
    return out.mean(1) if x.ndim == 3 else out


def fit_logistic_regression(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    weight_decay: float,
    max_iter: int = 1000,
    tol: float = 1e-7,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
    sample_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float, int]:
    """Minimise the penalised (weighted) mean cross-entropy on (x, y) with full-batch L-BFGS (strong Wolfe).

    Returns weight [C, D], bias [C], the final training loss and the number of iterations.
    """
    sw = None if sample_weight is None else sample_weight.to(x.dtype)

    def data_loss(logits: torch.Tensor) -> torch.Tensor:
        if sw is None:  # the unweighted mean exactly, so unweighted probes fit as they always did
            return F.cross_entropy(logits, y)
        return (F.cross_entropy(logits, y, reduction="none") * sw).sum() / sw.sum()

    d = x.shape[1]
    w = torch.zeros(num_classes, d, dtype=x.dtype) if init is None else init[0].clone()
    b = torch.zeros(num_classes, dtype=x.dtype) if init is None else init[1].clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = data_loss(x @ w.T + b) + 0.5 * weight_decay * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        loss = float(data_loss(x @ w.T + b) + 0.5 * weight_decay * (w * w).sum())
    iterations = int(opt.state[opt._params[0]].get("n_iter", 0))
    return w.detach(), b.detach(), loss, iterations


def fit_linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    num_classes: int,
    grid: tuple[float, ...] | list[float] | None = None,
    max_iter: int = 1000,
    sample_weight: torch.Tensor | None = None,
) -> ProbeResult:
    """Fit one probe per lam in `grid` on train, keep the one with the best val accuracy (ties: the
    lower val loss, then the larger lam). `val_x` may be [N, V, D]: logits are averaged over views.
    `sample_weight` [N] weighs the training examples' losses (pseudo-labels against real ones)."""
    grid = sorted(float(g) for g in (grid or DEFAULT_GRID))
    if not grid or any(g < 0 for g in grid):
        raise ConfigError(f"strategy.probe_weight_decays={grid}: give one or more penalties >= 0, e.g. [1e-4, 1e-3, 1e-2]")
    t0 = time.perf_counter()
    x = train_x.double()
    mean = x.mean(0)
    scale = x.std(0).clamp_min(1e-6)
    xs = (x - mean) / scale
    vs = (val_x.double() - mean) / scale
    y, vy = train_y.long(), val_y.long()

    rows, best, init = [], None, None
    # Strongest penalty first: each solution warm-starts the next, weaker one.
    for lam in reversed(grid):
        w, b, train_loss, iters = fit_logistic_regression(xs, y, num_classes, lam, max_iter=max_iter, init=init,
                                                          sample_weight=sample_weight)
        init = (w, b)
        with torch.no_grad():
            logits = _logits(vs, w, b)
            acc = float((logits.argmax(-1) == vy).double().mean())
            val_loss = float(F.cross_entropy(logits, vy))
        rows.append({"weight_decay": lam, "val_acc": acc, "val_loss": val_loss, "train_loss": train_loss, "iterations": iters})
        log.info("lbfgs probe: weight_decay %.0e, val acc %.4f, val loss %.4f (%d iterations)", lam, acc, val_loss, iters)
        rank = (acc, -val_loss)  # larger lam wins exact ties: it is visited first
        if best is None or rank > best[0]:
            best = (rank, lam, w, b)
    _, lam, w, b = best
    # Fold the standardisation into the layer: W (x - m) / s + b = (W / s) x + (b - (W / s) m).
    weight = w / scale
    bias = b - weight @ mean
    rows.sort(key=lambda r: r["weight_decay"])
    chosen = next(r for r in rows if r["weight_decay"] == lam)
    return ProbeResult(weight.float(), bias.float(), lam, chosen["val_acc"], rows, time.perf_counter() - t0)


def linear_layer_of(head: nn.Module) -> nn.Linear:
    """The head's one linear layer (dropout around it is fine); ConfigError for an MLP head."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ConfigError(
            f"strategy.solver=lbfgs fits a linear probe, but this head has {len(linears)} linear layers: "
            "use model.head.type=linear, or strategy.solver=sgd for an MLP head"
        )
    return linears[0]


@torch.no_grad()
def load_into_head(head: nn.Module, result: ProbeResult) -> None:
    layer = linear_layer_of(head)
    if tuple(layer.weight.shape) != tuple(result.weight.shape):
        raise ValueError(f"probe weight {tuple(result.weight.shape)} does not fit the head's {tuple(layer.weight.shape)}")
    layer.weight.copy_(result.weight.to(layer.weight))
    layer.bias.copy_(result.bias.to(layer.bias))


def probe_head(head: nn.Module, features, grid, max_iter: int) -> ProbeResult:
    """Fit the probe on a FeatureDataModule's cached train features (penalty chosen on val, with its
    test-time views) and load it into the head's linear layer."""
    linear_layer_of(head)  # an MLP head fails here, before any feature is extracted
    features.setup("fit")
    probe = fit_linear_probe(
        features.features("train"), features.labels("train"), features.eval_features("val"), features.labels("val"),
        features.num_classes, grid=grid, max_iter=max_iter,
    )
    load_into_head(head, probe)
    log.info("lbfgs probe: weight_decay %g chosen on val (acc %.4f) in %.1f s", probe.weight_decay, probe.val_acc, probe.fit_s)
    return probe
