"""The data-source registry: `data.source=<name>` picks the loader registered under that name.

A source is one module in this package with one function decorated `@register("<name>")`. It takes
the keys of `data.source_args` as keyword arguments, plus `context` (what the run asks of every
source), and returns a `Splits`. Modules here are imported by the package, so adding a file is all
it takes to add a source. A source that can keep its images in LitData chunks instead of memory
(`data.storage=stream`) registers with `streams=True` and honours `context.storage`.
"""

from __future__ import annotations

import inspect

from dataclasses import dataclass
from typing import Any, Callable

from transferlab.data.arrays import Splits
from transferlab.data.images.storage import Storage
from transferlab.errors import DataError

# The config key users set; named in every message that tells them to set it.
ROOT_KEY = "data.source_args.root"


@dataclass(frozen=True)
class SourceContext:
    seed: int = 0  # for sources that carve splits of their own (an image folder without test/)
    storage_size: int = 224  # the cap on the side decoded images are stored at (data.store_size)
    storage: Storage = Storage()  # memory, stream or auto (data.storage)
    # A text backbone's tokenizer at its max length, tokenize(texts) or tokenize(texts, pairs)
    # (data/text/tokens.py); None with an image backbone.
    tokenize: Callable[..., Any] | None = None


Loader = Callable[..., Splits]
_SOURCES: dict[str, Loader] = {}
_STREAMING: set[str] = set()


def register(name: str, streams: bool = False) -> Callable[[Loader], Loader]:
    def add(fn: Loader) -> Loader:
        if name in _SOURCES and _SOURCES[name] is not fn:
            raise ValueError(f"data source {name!r} is registered twice")
        _SOURCES[name] = fn
        if streams:
            _STREAMING.add(name)
        return fn

    return add


def source_names() -> list[str]:
    return sorted(_SOURCES)


def load_source(name: str, args: dict[str, Any], context: SourceContext, key: str = "data") -> Splits:
    """The source's splits; `key` is where its name and arguments sit in the config, for the errors."""
    if name not in _SOURCES:
        raise DataError(
            f"{key}.source={name!r} is unknown: use one of {', '.join(source_names())} "
            "(or add a module to src/transferlab/data/sources/)"
        )
    _check_arguments(name, args, key)
    if context.storage.mode == "stream" and name not in _STREAMING:
        raise DataError(
            f"data.source={name} is held in memory and cannot stream: data.storage=stream is for "
            f"{', '.join(sorted(_STREAMING))}; use data.storage=memory (or auto)"
        )
    return _SOURCES[name](context=context, **args)


def _check_arguments(name: str, args: dict[str, Any], key: str) -> None:
    """A DataError naming the missing or unknown source argument, not the loader's TypeError."""
    params = inspect.signature(_SOURCES[name]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n in params if n != "context"]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise DataError(f"{key}.source={name} takes no argument {', '.join(f'{key}.source_args.{k}' for k in unknown)} "
                        f"(it takes {', '.join(accepted) or 'none'}): drop it")
    missing = [n for n in accepted if params[n].default is inspect.Parameter.empty and n not in args]
    if missing:
        raise DataError(f"{key}.source={name} needs {', '.join(f'{key}.source_args.{k}' for k in missing)}: set it")
