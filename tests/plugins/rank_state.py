"""A callback that writes what this rank trained: loaded into `python train.py` by tests/test_multinode.py
through the callbacks config (+callbacks.rank_state._target_=rank_state.RankState), with tests/plugins
on PYTHONPATH. Each rank is a process of its own, so each writes <out>/rank<r>.json and .pt."""

import hashlib
import json
from pathlib import Path

import lightning.pytorch as pl
import torch


def digest(module) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class RankState(pl.Callback):
    def __init__(self, out: str):
        self.out = Path(out)
        self.initial = None

    def on_train_start(self, trainer, module):
        self.initial = digest(module)

    def on_train_end(self, trainer, module):
        self.out.mkdir(parents=True, exist_ok=True)
        r = trainer.global_rank
        rec = {"rank": r, "world": trainer.world_size, "nodes": trainer.num_nodes, "node_rank": trainer.node_rank,
               "global_step": trainer.global_step, "initial": self.initial, "final": digest(module)}
        (self.out / f"rank{r}.json").write_text(json.dumps(rec))
        torch.save({k: v.detach().cpu().clone() for k, v in module.state_dict().items()}, self.out / f"rank{r}.pt")
