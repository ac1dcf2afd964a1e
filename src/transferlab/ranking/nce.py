"""NCE (Tran et al. 2019, "Transferability and Hardness of Supervised Classification Tasks").

The source classifier's argmax labels Z on the target images, against the target labels Y: the
negative conditional entropy -H(Y | Z) of their empirical joint distribution. 0 when Z determines
Y; -log C at worst for C balanced classes.
"""

from __future__ import annotations

import torch


def nce(source_labels: torch.Tensor, labels: torch.Tensor) -> float:
    """-H(Y | Z) in nats; higher is better."""
    z = source_labels.long()
    y = labels.long()
    n = len(y)
    _, z_index = torch.unique(z, return_inverse=True)
    _, y_index = torch.unique(y, return_inverse=True)
    joint = torch.zeros(int(z_index.max()) + 1, int(y_index.max()) + 1, dtype=torch.float64)
    joint.index_put_((z_index, y_index), torch.ones(n, dtype=torch.float64), accumulate=True)
    joint /= n
    p_z = joint.sum(1, keepdim=True)
    seen = joint > 0  # 0 log 0 = 0
    return float((joint[seen] * (joint / p_z).expand_as(joint)[seen].log()).sum())
