"""An export is checked where it is written: the exported model and the trained network score the
same real inputs, at batch sizes other than the one it was traced with."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from transferlab.errors import TransferlabError

MAX_ABS_DIFF = 1e-4


class ExportError(TransferlabError):
    """The exported model does not compute what the trained one does, or cannot be written."""


def batch_sizes(n: int, traced: int) -> list[int]:
    """Sizes to check: 1 and the largest available, both unlike the traced one."""
    return [b for b in dict.fromkeys((1, max(1, n))) if b != traced] or [1]


def compare(
    reference: Callable[[torch.Tensor], np.ndarray], exported: Callable[[torch.Tensor], np.ndarray],
    samples: torch.Tensor, traced: int, what: str, source: str,
) -> dict:
    """Max |logit difference| and argmax agreement over the samples, batch by batch; ExportError
    beyond MAX_ABS_DIFF or on any differing argmax."""
    worst, agree, checked = 0.0, True, []
    for b in batch_sizes(len(samples), traced):
        x = samples[:b]
        ref, got = reference(x), exported(x)
        if got.shape != ref.shape:
            raise ExportError(f"the {what} export gives logits of shape {tuple(got.shape)} at batch {b}, the model {tuple(ref.shape)}")
        worst = max(worst, float(np.abs(ref - got).max()))
        agree = agree and bool((ref.argmax(1) == got.argmax(1)).all())
        checked.append(b)
    report = {"max_abs_diff": worst, "argmax_equal": agree, "batch_sizes": checked, "traced_batch": traced,
              "inputs": source, "tolerance": MAX_ABS_DIFF}
    if worst > MAX_ABS_DIFF or not agree:
        raise ExportError(
            f"the {what} export does not match the trained model on {source} (max |logit diff| {worst:.3g}, "
            f"argmax {'equal' if agree else 'differs'}; tolerance {MAX_ABS_DIFF:g}): nothing was written; "
            "report this with the run's config"
        )
    return report
