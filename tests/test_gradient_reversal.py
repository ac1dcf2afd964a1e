"""Gradient reversal: the identity forward, -lambda times the gradient backward."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from transferlab.errors import ConfigError
from transferlab.finetune.gradient_reversal import GradientReversal, reverse_gradient

LAMBDAS = [0.0, 0.5, 1.0, 3.0]


def test_forward_is_the_identity():
    x = torch.randn(4, 7, dtype=torch.float64, requires_grad=True)
    out = GradientReversal(2.0)(x)
    assert torch.equal(out, x) and out.shape == x.shape and out.dtype == x.dtype


@pytest.mark.parametrize("lambda_", LAMBDAS)
def test_jacobian_is_minus_lambda_times_identity(lambda_):
    # Forward is the identity, so finite differences would give I: the layer's whole point is
    # that autograd's Jacobian disagrees with them by exactly the factor -lambda.
    x = torch.randn(5, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(lambda t: reverse_gradient(t, lambda_), x)
    torch.testing.assert_close(jacobian, -lambda_ * torch.eye(5, dtype=torch.float64), rtol=0, atol=0)


@pytest.mark.parametrize("lambda_", LAMBDAS)
def test_gradient_flips_sign_and_scales_against_the_same_graph_without_it(lambda_):
    torch.manual_seed(0)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, dtype=torch.float64)

    def grad_of(layer):
        x.grad = None
        (torch.tanh(layer(x)) @ w).square().sum().backward()
        return x.grad.clone()

    plain = grad_of(nn.Identity())
    reversed_ = grad_of(GradientReversal(lambda_))
    assert plain.abs().min() > 0
    torch.testing.assert_close(reversed_, -lambda_ * plain, rtol=1e-12, atol=0)


def test_dann_shape_reverses_the_features_gradient_only():
    # features -> reversal -> domain classifier: the classifier learns as usual, while the features
    # below the reversal get the domain loss's gradient reversed and scaled.
    torch.manual_seed(0)
    features = nn.Linear(8, 4).double()
    domain = nn.Linear(4, 2).double()
    x = torch.randn(6, 8, dtype=torch.float64)
    is_target = torch.tensor([0, 0, 0, 1, 1, 1])
    lambda_ = 0.3

    def grads(reversal):
        f, d = copy.deepcopy(features), copy.deepcopy(domain)
        F.cross_entropy(d(reversal(f(x))), is_target).backward()
        return [p.grad for p in f.parameters()], [p.grad for p in d.parameters()]

    plain_f, plain_d = grads(nn.Identity())
    rev_f, rev_d = grads(GradientReversal(lambda_))
    for got, want in zip(rev_d, plain_d):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    for got, want in zip(rev_f, plain_f):
        torch.testing.assert_close(got, -lambda_ * want, rtol=1e-12, atol=1e-15)


def test_lambda_can_be_ramped_between_steps():
    layer = GradientReversal(0.0)
    x = torch.ones(3, requires_grad=True)
    for lambda_ in (0.0, 0.25, 1.0):
        layer.lambda_ = lambda_
        x.grad = None
        layer(x).sum().backward()
        assert torch.equal(x.grad, torch.full((3,), -lambda_))
    assert "lambda_=1.0" in repr(layer)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), True, "1", None])
def test_bad_lambda_is_one_line_naming_the_fix(bad):
    for make in (lambda: GradientReversal(bad), lambda: reverse_gradient(torch.ones(1), bad)):
        with pytest.raises(ConfigError) as e:
            make()
        msg = str(e.value)
        assert "\n" not in msg and f"lambda_={bad!r} is not a finite number >= 0" in msg and "pass e.g. lambda_=1.0" in msg
