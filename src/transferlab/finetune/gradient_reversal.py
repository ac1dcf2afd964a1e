"""Gradient reversal (Ganin & Lempitsky 2015, "Unsupervised Domain Adaptation by Backpropagation").

DANN puts this layer between the feature extractor and a domain classifier: forward it is the
identity, backward it multiplies the gradient by -lambda. The domain classifier therefore learns
to tell source from target while the features below it learn to make that impossible, in one
backward pass and with one optimizer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from transferlab.errors import ConfigError


def _check_lambda(lambda_: float) -> float:
    # A negative lambda would silently turn the adversary into a helper; zero is DANN's usual start.
    if isinstance(lambda_, bool) or not isinstance(lambda_, (int, float)) or not math.isfinite(lambda_) or lambda_ < 0:
        raise ConfigError(f"gradient reversal lambda_={lambda_!r} is not a finite number >= 0: pass e.g. lambda_=1.0 (0 disables the reversal)")
    return float(lambda_)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lambda_: float) -> torch.Tensor:
        ctx.lambda_ = lambda_
        # A view, not x itself: autograd needs a distinct output to attach this node's backward to.
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.lambda_ * grad, None


def reverse_gradient(x: torch.Tensor, lambda_: float = 1.0) -> torch.Tensor:
    """`x` unchanged; the gradient flowing back through it is multiplied by -lambda_."""
    return _ReverseGradient.apply(x, _check_lambda(lambda_))


class GradientReversal(nn.Module):
    """reverse_gradient as a layer. `lambda_` may be reassigned between steps, since DANN ramps it
    from 0 so that the domain classifier's early, noisy gradients do not wreck the features."""

    def __init__(self, lambda_: float = 1.0):
        super().__init__()
        self.lambda_ = lambda_

    @property
    def lambda_(self) -> float:
        return self._lambda

    @lambda_.setter
    def lambda_(self, value: float) -> None:
        self._lambda = _check_lambda(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self._lambda)

    def extra_repr(self) -> str:
        return f"lambda_={self._lambda}"
