"""Errors a user can fix. Each message names the problem and the fix in a line or two.

Entry points print these without a traceback; anything else is a bug and keeps its traceback.
"""


import sys


class TransferlabError(Exception):
    """Base for every error that is the user's input rather than a bug."""


class ConfigError(TransferlabError, ValueError):
    """A config value that cannot work (unknown model, strategy knob out of range, ...)."""


class WeightsError(TransferlabError, RuntimeError):
    """Pretrained weights that cannot be found, loaded or matched to the model."""


class CheckpointError(TransferlabError, RuntimeError):
    """A checkpoint that does not fit the model or data it is asked to serve."""


def exit_with(error: TransferlabError) -> None:
    """Print a user error as one line (the traceback would only bury it) and exit with status 2."""
    print(f"error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(2) from None
