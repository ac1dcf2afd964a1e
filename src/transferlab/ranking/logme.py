"""LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning").

Per class k, a Bayesian linear model y_k = F w + noise with prior w ~ N(0, 1/alpha I) and noise
N(0, 1/beta) explains the one-hot target column y_k from the features F [n, D]. alpha and beta are
set by maximising the evidence p(y_k | F, alpha, beta) with MacKay's fixed point; the score is the
mean over classes of the maximised log evidence divided by n. One SVD of F serves every class and
every iteration: with F = U S V^T and sigma = S^2, every quantity is a sum over the singular
directions plus the part of y_k outside U's span.
"""

from __future__ import annotations

import math

import torch

MAX_ITER = 100
TOL = 1e-6  # relative change of alpha and beta between iterations


def log_evidence(sigma: torch.Tensor, z: torch.Tensor, y_sq: float, n: int, d: int, alpha: float, beta: float) -> tuple[float, float, float]:
    """Log evidence of one target at (alpha, beta), with gamma and the two norms the update needs.

    sigma: the squared singular values of F; z = U^T y; y_sq = ||y||^2.
    Returns (log evidence, ||m||^2, ||F m - y||^2) where m is the posterior mean of w.
    """
    denom = alpha + beta * sigma
    m_sq = float((beta * sigma.sqrt() * z / denom).square().sum())
    residual = float((alpha * z / denom).square().sum()) + max(y_sq - float(z.square().sum()), 0.0)
    # log|alpha I + beta F^T F|: alpha on the D - rank directions F does not reach.
    log_det = float(denom.log().sum()) + (d - len(sigma)) * math.log(alpha)
    evidence = (n / 2 * math.log(beta) + d / 2 * math.log(alpha) - n / 2 * math.log(2 * math.pi)
                - beta / 2 * residual - alpha / 2 * m_sq - log_det / 2)
    return evidence, m_sq, residual


def fit_evidence(sigma: torch.Tensor, z: torch.Tensor, y_sq: float, n: int, d: int) -> tuple[float, float, float]:
    """The fixed point of alpha = gamma / ||m||^2, beta = (n - gamma) / ||F m - y||^2 from
    alpha = beta = 1; returns (log evidence, alpha, beta)."""
    alpha, beta = 1.0, 1.0
    for _ in range(MAX_ITER):
        _, m_sq, residual = log_evidence(sigma, z, y_sq, n, d, alpha, beta)
        gamma = float((beta * sigma / (alpha + beta * sigma)).sum())
        new_alpha = gamma / max(m_sq, 1e-300)
        new_beta = (n - gamma) / max(residual, 1e-300)
        done = abs(new_alpha - alpha) <= TOL * alpha and abs(new_beta - beta) <= TOL * beta
        alpha, beta = new_alpha, new_beta
        if done:
            break
    return log_evidence(sigma, z, y_sq, n, d, alpha, beta)[0], alpha, beta


def logme(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """Mean over classes of max log evidence / n; higher is better."""
    f = features.double()
    y = labels.long()
    n, d = f.shape
    classes = int(num_classes or int(y.max()) + 1)
    u, s, _ = torch.linalg.svd(f, full_matrices=False)
    keep = s > s.max() * 1e-10 if len(s) else s.bool()  # numerically zero directions carry no signal
    u, sigma = u[:, keep], s[keep].square()
    total = 0.0
    for k in range(classes):
        target = (y == k).double()
        evidence, _, _ = fit_evidence(sigma, u.T @ target, float(target.square().sum()), n, d)
        total += evidence / n
    return total / classes
