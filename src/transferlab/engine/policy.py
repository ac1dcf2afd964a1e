"""What a run does when it cannot finish: the one place the user-error policy lives.

- A user error (TransferlabError, a `???` left unset, a folder that cannot be written, a Lightning
  misconfiguration) is recorded as failed in metrics.json and printed as one `error:` line; a
  single run exits 2, a multirun job logs the line and returns None so the sweep goes on.
- Anything else is a bug: recorded, and raised with its traceback (logged in a multirun).
- SIGTERM and SIGINT (Ctrl-C) are alike: training stops at the next batch, the run is recorded as
  interrupted with the command that resumes it, and the process exits 128 + the signal.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any, Callable

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from transferlab.errors import TransferlabError, exit_with, user_error
from transferlab.record import FAILED, INTERRUPTED

log = logging.getLogger(__name__)


def is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


class _Interrupts:
    """SIGINT handled like SIGTERM. Lightning stops gracefully on SIGTERM (at the next batch) and
    on SIGINT only by exiting with status 1 and no record. While a SIGTERM handler is installed (a
    fit or test is running) the first Ctrl-C is passed on as SIGTERM; otherwise it stops the run
    where it is. A second Ctrl-C is the default: at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = None

    def __enter__(self) -> "_Interrupts":
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _on_sigint(self, signum, frame) -> None:
        self.signal = signal.SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None):
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            raise KeyboardInterrupt


def run_guarded(cfg: DictConfig, task: Callable[[DictConfig], Any], record_failure: Callable[[BaseException, str], None]) -> Any:
    """`task(cfg)` under the policy above. `record_failure(error, status)` writes the run's record."""
    with _Interrupts() as interrupts:
        try:
            return task(cfg)
        except (SIGTERMException, KeyboardInterrupt) as e:
            signum = interrupts.signal or (signal.SIGTERM if isinstance(e, SIGTERMException) else signal.SIGINT)
            name = signal.Signals(signum).name
            run_dir = Path(cfg.paths.output_dir)
            can_resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
            hint = f"resume with: python train.py ckpt_path={run_dir}" if can_resume else "no epoch had finished: start it again"
            record_failure(RuntimeError(f"stopped by {name}; {hint}"), INTERRUPTED)
            log.error("stopped by %s; %s", name, hint)
            raise SystemExit(128 + signum) from e
        except Exception as e:
            try:
                where, cache = str(cfg.paths.output_dir), cfg.paths.get("cache_dir")
            except Exception:  # the paths themselves are what is broken
                where, cache = None, None
            error = user_error(e, where=where, cache_dir=cache)
            record_failure(error, FAILED)
            if is_multirun():
                # One bad job must not stop the sweep: the failure is in its metrics.json for the report
                # and the sweep's summary. None, not nan: the Optuna sweeper hands nan to study.tell,
                # which rejects it and ends the sweep; None makes it a failed trial.
                if isinstance(error, TransferlabError):
                    log.error("job failed: %s", " ".join(str(error).split()))
                else:
                    log.exception("job failed: %s", e)
                return None
            if isinstance(error, TransferlabError):
                exit_with(error)
            raise
