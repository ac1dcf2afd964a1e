"""DDP for train.py: Lightning's `ddp_spawn`, plus the rank-0 state that train() reads after fit.

Why spawn, not Lightning's default `ddp`: `ddp` starts the other ranks by running the command line
again. Under Hydra that is only right for a single run. In a multirun the command line holds `-m`
and the whole sweep, so each extra rank would start the sweep over, and in a joblib worker
(launcher=parallel) there is no command line of the job to run. With spawn, Hydra, train(),
metrics.json and the report run once, in the job's own process, and only trainer.fit / validate
/ test run in the rank processes (rank 0 among them), on pickled copies of the module, the data
and the callbacks.

What Lightning's spawn launcher sends back is the trained weights, the best checkpoint's path
and the logged metrics. train() reads more than that after fit: the best checkpoint's score (the
validation accuracy of the epoch that is tested), RunStats' times and the largest trainable
parameter count; and the CSV logger must go on appending to metrics.csv in trainer.test rather
than start the file again. `SpawnDDPStrategy` sends those back too: every callback's
`state_dict()` (ModelCheckpoint's best score, EarlyStopping's counters), what callbacks with
`rank_zero_state(trainer)` / `load_rank_zero_state(trainer, state)` return (RunStats; the feature
cache's DataModule and the LightningModule, whose test confusion matrix is no logged scalar, the
same way), and the CSV loggers' writers.

SIGTERM to the job's process (a scheduler, a killed sweep) reaches the ranks too: they stop at the
same step and this process raises SIGTERMException as a 1-process run does (see _forward_sigterm).

The spawned ranks are this machine's alone, whatever cluster the job runs on: `SpawnDDPStrategy`
numbers them itself (Lightning's own environment) rather than take SLURM's or torchrun's, which
describe the job's one process. Runs over several machines, where the cluster starts every rank,
are trainer=multinode (utils/ddp_layout.py checks which layout a run has).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import threading
import warnings
from typing import Any

import torch
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

# Training loss and accuracy are logged per rank on purpose: averaging them over ranks would cost
# an all-reduce every step for a number that only shows progress. Validation and test metrics are
# synchronised (torchmetrics on compute, the loss with sync_dist).
warnings.filterwarnings("ignore", message=r"It is recommended to use `self\.log\('train/")

_KEY = "transferlab_rank_zero_state"
_STOPPED = "transferlab: the ranks stopped on SIGTERM"
_STOP_SIGNAL = signal.SIGUSR2  # the main process's SIGTERM, passed on to the ranks
_STOP_GRACE_S = 60.0  # then ranks that have not stopped are killed


class _RankZeroStateLauncher(_MultiProcessingLauncher):
    def launch(self, function, *args: Any, trainer=None, **kwargs: Any) -> Any:
        # This process's trainer is attached to the datamodule only inside the ranks.
        self._datamodule = next((a for a in (*args, *kwargs.values()) if isinstance(a, LightningDataModule)), None)
        self._sigterm, self._timer = False, None
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._forward_sigterm)
        try:
            result = super().launch(function, *args, trainer=trainer, **kwargs)
        except BaseException as e:
            if self._sigterm and not isinstance(e, SIGTERMException):
                raise SIGTERMException() from e
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self._timer is not None:
                self._timer.cancel()
        if self._sigterm:  # came in the instant before the ranks existed, so they ran to the end
            raise SIGTERMException()
        return result

    def _forward_sigterm(self, signum, frame) -> None:
        # Left alone, SIGTERM kills this process at once and the ranks run on as orphans (their
        # parent-death signal is SIGINT, which shells ignore in background jobs), writing
        # checkpoints on devices the pool has already handed to the next job. Instead the ranks
        # stop at their next batch and this process raises SIGTERMException, as a 1-process run
        # does (train.py records it). They are told with _STOP_SIGNAL, not SIGTERM: Lightning's
        # SIGTERM handler runs a broadcast inside the handler, which can meet another rank's
        # gradient all-reduce and hang both (1 of 2 tries here).
        first = not self._sigterm
        self._sigterm = True
        self._signal_ranks(_STOP_SIGNAL if first else signal.SIGKILL)  # a second SIGTERM: at once
        if first:
            self._timer = threading.Timer(_STOP_GRACE_S, self._signal_ranks, args=(signal.SIGKILL,))
            self._timer.daemon = True
            self._timer.start()

    def _signal_ranks(self, signum) -> None:
        for p in self.procs:
            if p.is_alive() and p.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signum)

    def _wrapping_function(self, process_idx, trainer, function, args, kwargs, return_queue, global_states=None) -> None:
        # Only a flag: Lightning broadcasts rank 0's at the start of every training batch, so all
        # ranks stop at the same step (eval loops check it per batch).
        signal.signal(_STOP_SIGNAL, lambda signum, frame: setattr(trainer._signal_connector, "received_sigterm", True))
        # Ctrl-C reaches every process of the terminal's group; the job's process stops the ranks
        # (engine/policy.py passes it on as SIGTERM), so a rank must not die of it on its own.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            super()._wrapping_function(process_idx, trainer, function, args, kwargs, return_queue, global_states)
        except SIGTERMException:
            # A SystemExit with status 0: without a word from rank 0 the main process would wait
            # for its results forever.
            if process_idx == 0:
                return_queue.put(_STOPPED)
            raise

    def _recover_results_in_main_process(self, worker_output, trainer) -> None:
        if isinstance(worker_output, str) and worker_output == _STOPPED:
            raise SIGTERMException()
        super()._recover_results_in_main_process(worker_output, trainer)

    def get_extra_results(self, trainer) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        callbacks = []
        for cb in trainer.callbacks:
            own = cb.rank_zero_state(trainer) if hasattr(cb, "rank_zero_state") else None
            callbacks.append((type(cb).__qualname__, cb.state_dict(), own))
        writers = [lg._experiment for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        dm, module = trainer.datamodule, trainer.lightning_module
        datamodule = dm.rank_zero_state(trainer) if hasattr(dm, "rank_zero_state") else None
        module_state = module.rank_zero_state(trainer) if hasattr(module, "rank_zero_state") else None
        buffer = io.BytesIO()
        # Bytes, as Lightning sends its own metrics: tensors put on the queue would be shared memory.
        torch.save({"callbacks": callbacks, "csv_writers": writers, "datamodule": datamodule, "module": module_state}, buffer)
        extra[_KEY] = buffer.getvalue()
        return extra

    def update_main_process_results(self, trainer, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        if _KEY not in extra:
            return
        # Written a moment ago by this run's own rank 0, so not untrusted input.
        state = torch.load(io.BytesIO(extra[_KEY]), weights_only=False)
        if len(state["callbacks"]) != len(trainer.callbacks):
            log.warning("ddp: the ranks ran %d callbacks, this process has %d; their state is not restored",
                        len(state["callbacks"]), len(trainer.callbacks))
        else:
            for cb, (name, state_dict, own) in zip(trainer.callbacks, state["callbacks"]):
                if type(cb).__qualname__ != name:
                    log.warning("ddp: callback %s ran as %s in the ranks; its state is not restored", type(cb).__qualname__, name)
                    continue
                if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                    # Resolved in the ranks' setup (Lightning's default checkpoint dir); without it
                    # load_state_dict would keep only the best path, not its score.
                    cb.dirpath = state_dict.get("dirpath")
                if state_dict:
                    cb.load_state_dict(state_dict)
                if own is not None:
                    cb.load_rank_zero_state(trainer, own)
        if state["datamodule"] is not None and getattr(self, "_datamodule", None) is not None:
            self._datamodule.load_rank_zero_state(trainer, state["datamodule"])
        module = trainer.lightning_module
        if state.get("module") is not None and hasattr(module, "load_rank_zero_state"):
            module.load_rank_zero_state(trainer, state["module"])
        csv_loggers = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        for logger, writer in zip(csv_loggers, state["csv_writers"]):
            if writer is not None:
                logger._experiment = writer


class SpawnDDPStrategy(DDPStrategy):
    """`ddp_spawn` that also sends back the rank-0 state train() needs (see the module docstring).

    configs/trainer/ddp.yaml and ddp_cpu.yaml use it; other DDP options pass through to DDPStrategy.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("start_method", "spawn")
        # Left to Lightning, a SLURM job's environment would be chosen, and every spawned rank would
        # take the job's SLURM_PROCID as its rank and SLURM_NTASKS as the world: each trains alone.
        kwargs.setdefault("cluster_environment", LightningEnvironment())
        super().__init__(**kwargs)

    def _configure_launcher(self) -> None:
        self._launcher = _RankZeroStateLauncher(self, start_method=self._start_method)
