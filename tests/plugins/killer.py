"""A callback that kills its own process at a chosen training step, as `kill -9` / `kill` would.

Loaded into `python train.py` subprocesses by tests/test_resume.py through the callbacks config:
  +callbacks.kill._target_=killer.KillAt +callbacks.kill.epoch=2 +callbacks.kill.batch=1
with tests/plugins on PYTHONPATH.
"""

import os
import signal

import lightning.pytorch as pl


class KillAt(pl.Callback):
    def __init__(self, epoch: int, batch: int, signal_name: str = "SIGKILL"):
        self.epoch, self.batch, self.signal = epoch, batch, getattr(signal, signal_name)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        # Only the first attempt dies: a resumed run carries its stored callbacks, this one included.
        if trainer.ckpt_path is None and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signal)
