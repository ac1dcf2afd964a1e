"""Errors a user can fix. Each message names the problem and the fix in a line or two.

Entry points print these without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
import errno
import os
import sys
from pathlib import Path
from typing import Any, Callable


class TransferlabError(Exception):
    """Base for every error that is the user's input rather than a bug."""


class ConfigError(TransferlabError, ValueError):
    """A config value that cannot work (unknown model, strategy knob out of range, ...)."""


class DataError(TransferlabError, ValueError):
    """Data that cannot be found or read; the message names the problem and the fix."""


class WeightsError(TransferlabError, RuntimeError):
    """Pretrained weights that cannot be found, loaded or matched to the model."""


class CheckpointError(TransferlabError, RuntimeError):
    """A checkpoint that does not fit the model or data it is asked to serve."""


class DivergedError(TransferlabError, FloatingPointError):
    """Training whose loss stopped being a finite number."""


class RunNotValid(TransferlabError, RuntimeError):
    """A run that finished but did not train what its strategy says (recorded as failed)."""


class OutputError(TransferlabError, RuntimeError):
    """Run outputs (directory, checkpoints, metrics) that cannot be written."""


def exit_with(error: TransferlabError) -> None:
    """Print a user error as one line (the traceback would only bury it) and exit with status 2."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    print(f"error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None


# Errors of writing outputs that the user fixes by pointing them elsewhere or freeing space.
_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR}


def _causes(error: BaseException):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def output_error(error: BaseException, where: str | None = None, cache_dir: str | None = None) -> OutputError | None:
    """`error` (or what caused it) as a one-line OutputError naming the path and the fix, when it is
    a file system refusing to take outputs; None for anything else. `where`: the run directory, named
    when the OS does not say which file it was writing."""
    os_error = next((e for e in _causes(error) if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS), None)
    if os_error is None:
        return None
    path = os_error.filename or where or "the run directory"
    key = "paths.log_dir"
    if cache_dir and str(path).startswith(str(Path(cache_dir))):
        key = "paths.cache_dir"
    code = os_error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        problem = f"no space left to write {path} ({os_error.strerror})"
        fix = f"free space on that disk, or pass {key}=<a folder on a disk with space>"
    elif code == errno.ENOTDIR:
        blocker = next((p for p in Path(path).parents if p.exists() and not p.is_dir()), None)
        problem = f"cannot create {path}: {blocker or 'part of that path'} is a file, not a folder"
        fix = f"pass {key}=<a folder>"
    else:
        problem = f"cannot write {path} ({os_error.strerror})"
        fix = f"pass {key}=<a folder you can write>" + (" (or hydra.run.dir=...)" if key == "paths.log_dir" else "")
    return OutputError(f"{problem}: {fix}")


def user_error(error: BaseException, where: str | None = None, cache_dir: str | None = None) -> BaseException:
    """`error` as the one-line TransferlabError it is when the user's input caused it (a `???` left
    unset, outputs that cannot be written); otherwise `error` itself, a bug that keeps its traceback."""
    if isinstance(error, TransferlabError):
        return error
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, MissingMandatoryValue):
        key = getattr(error, "full_key", None) or str(error).splitlines()[0]
        return ConfigError(f"{key} is not set (??? in its config): pass {key}=<value>")
    try:
        from lightning.fabric.utilities.exceptions import MisconfigurationException
    except ImportError:  # the errors are usable without Lightning
        MisconfigurationException = ()  # noqa: N806
    lightning_said = next((e for e in _causes(error) if isinstance(e, MisconfigurationException)), None)
    if lightning_said is not None:
        # Lightning's own word on a trainer setting (accelerator, devices, strategy...), also when
        # Hydra's instantiate wrapped it: the user's input.
        return ConfigError(
            f"trainer: {_one_line(str(lightning_said))}: check the trainer settings (trainer=cpu|gpu|ddp|ddp_cpu, "
            "trainer.accelerator, trainer.devices)"
        )
    return output_error(error, where=where, cache_dir=cache_dir) or error


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines)


def _missing_choice(error: Any) -> str:
    """`strategy=partail`: name the group, the value and the choices (Hydra's own report is ten lines)."""
    missing = str(getattr(error, "missing_cfg_file", "") or "")
    options = list(getattr(error, "options", None) or [])
    group, _, value = missing.rpartition("/")
    if not group or not options:
        return _one_line(str(error).split("Config search path:")[0])
    close = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
    hint = f" (did you mean {group}={close[0]}?)" if close else ""
    return f"{group}={value}: no such {group} config; choose one of {', '.join(options)}{hint}"


def _composition(error: BaseException) -> str:
    """A config override Hydra refused (unknown key, bad syntax, + on an existing key) as one line."""
    text = _one_line(str(error).split("Config search path:")[0])
    cause = error.__cause__
    if cause is not None:
        detail = str(cause).splitlines()[0].strip() if str(cause).strip() else ""
        if detail and detail not in text:
            text = f"{text} ({detail})"
    return text


def composition_error(error: BaseException) -> ConfigError | None:
    """A Hydra error of composing a config (a choice that does not exist, an override it refused)
    as one ConfigError line; None for any other error."""
    from hydra.errors import CompactHydraException, MissingConfigException

    if isinstance(error, MissingConfigException):
        return ConfigError(_missing_choice(error))
    if isinstance(error, CompactHydraException):
        return ConfigError(_composition(error))
    return None


def cli(hydra_main: Callable[[], Any]) -> Any:
    """Run a `@hydra.main` entry point from the command line so that input errors Hydra meets
    before the task runs (a config choice that does not exist, a malformed override, a run directory
    that cannot be created) come out as one `error:` line too, not Hydra's multi-line report.

    HYDRA_FULL_ERROR makes Hydra raise instead of printing; a user who set it gets the full trace.
    """
    if os.environ.get("HYDRA_FULL_ERROR"):
        return hydra_main()
    from hydra.errors import CompactHydraException

    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return hydra_main()
    except CompactHydraException as e:  # MissingConfigException is one too
        exit_with(composition_error(e))
    except TransferlabError as e:  # raised by a Hydra callback (the device pool), outside the task
        exit_with(e)
    except OSError as e:  # Hydra creating the run directory, before the task starts
        error = output_error(e)
        if error is None:
            raise
        exit_with(error)
    finally:
        os.environ.pop("HYDRA_FULL_ERROR", None)
