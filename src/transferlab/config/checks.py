"""Range checks for every number and choice a user sets, run once where the config is read.

A value out of range never reaches Lightning or torch: `data.batch_size=0` is a ZeroDivisionError
deep in a loader, `strategy.lr=-1` is gradient ascent recorded as a finished run, `data.image_size=0`
silently trains at the model's default size. `RULES` holds the keys every run config has; the
keys that come with one choice register their rules with it (`register_choice_rules`: a backbone
kind's `model.*` keys, checked when `model.backbone` names that kind); each strategy's own knobs
carry their rule in their dataclass field (`rule(...)` metadata), checked by `check_dataclass`.
tests/test_config_checks.py feeds every rule the values just outside it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from transferlab.config.tuning import ARMS, SEARCH_ARM
from transferlab.errors import ConfigError

_MISSING = object()


@dataclass(frozen=True)
class Rule:
    # int | float | bool | str | pair (two floats, low <= high) | int_list (increasing) | float_list
    # (with choices: one of them, or the list) | map ({key: number}, each number in the range)
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low end itself is outside the range
    high_open: bool = False
    choices: tuple | None = None
    nullable: bool = False
    length: int | None = None  # lists: exactly this many entries
    hint: str = ""  # the fix, where the range alone does not say it

    # --- describing -----------------------------------------------------------------------------
    def _interval(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return ""

    def describe(self) -> str:
        if self.choices is not None and self.kind == "float_list":
            text = "one of " + ", ".join(str(c) for c in self.choices) + f", or a list of numbers, each {self._interval()}"
        elif self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.kind == "map":
            text = f"a map {{key: number}}, each number {self._interval()}"
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "pair":
            text = f"two numbers [low, high] with low <= high, each {self._interval()}".rstrip(", each")
        elif self.kind in ("int_list", "float_list"):
            what = "whole numbers" if self.kind == "int_list" else "numbers"
            order = ", increasing" if self.kind == "int_list" else ""
            count = f"{self.length} " if self.length is not None else ""
            text = f"a list of {count}{what}{order}" + (f", each {self._interval()}" if self._interval() else "")
        else:
            what = "a whole number" if self.kind == "int" else ("a number" if self.kind == "float" else "a string")
            text = f"{what} {self._interval()}".strip()
        return f"null or {text}" if self.nullable else text

    # --- checking -------------------------------------------------------------------------------
    def _number_ok(self, v: Any, integer: bool) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if integer and not isinstance(v, int):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            return False
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            return False
        return True

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.choices is not None and isinstance(value, str):
            return value in self.choices
        if self.choices is not None and self.kind != "float_list":
            return value in self.choices
        if self.kind == "map":
            return isinstance(value, dict) and all(self._number_ok(v, False) for v in value.values())
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and bool(value)
        if self.kind in ("int", "float"):
            return self._number_ok(value, self.kind == "int")
        if not isinstance(value, (list, tuple)):
            return False
        if self.kind == "pair":
            return len(value) == 2 and all(self._number_ok(v, False) for v in value) and value[0] <= value[1]
        integer = self.kind == "int_list"
        if self.length is not None and len(value) != self.length:
            return False
        if not all(self._number_ok(v, integer) for v in value):
            return False
        return not integer or list(value) == sorted(set(value))

    def check(self, key: str, value: Any) -> None:
        if not self.accepts(value):
            hint = f" ({self.hint})" if self.hint else ""
            raise ConfigError(f"{key}={_show(value)} is outside its range: use {self.describe()}{hint}")

    # --- for the table-driven test --------------------------------------------------------------
    def bad_values(self) -> list:
        """Values just outside this rule, one per way of being wrong."""
        if self.choices is not None and self.kind != "float_list":
            return ["not-a-choice", *([] if self.nullable else [None])]
        bad: list = [] if self.nullable else [None]
        if self.choices is not None:
            bad.append("not-a-choice")
        if self.kind == "bool":
            return bad + ["yes-please", 2]
        if self.kind == "str":
            return bad + [""]
        step = 1 if self.kind in ("int", "int_list") else 1e-3
        edges = []
        if self.low is not None:
            edges.append(self.low if self.low_open else self.low - step)
        if self.high is not None:
            edges.append(self.high if self.high_open else self.high + step)
        if self.kind == "map":
            return bad + [{0: e} for e in edges] + ["abc", [0.5]]
        if self.kind in ("int", "float"):
            bad += [*edges, "abc"]
            if self.kind == "int":
                bad.append(2.5)
            return bad
        if self.kind == "pair":
            lo = self.low if self.low is not None else 0.0
            hi = self.high if self.high is not None else lo + 1.0
            return bad + [[hi, lo] if hi > lo else [lo + 1, lo], [lo], "abc"] + [[e, e] for e in edges]
        size = self.length or 1
        bad += [[e] * size for e in edges] + ["abc"]
        if self.length is not None:
            bad.append([0.5] * (self.length + 1))
        if self.kind == "int_list":
            bad.append([2, 1])
        return bad


def rule(kind: str, **kw) -> dict:
    """Field metadata for a dataclass knob: `lr: float = field(default=1e-3, metadata=rule("float", low=0, low_open=True))`."""
    return {"rule": Rule(kind, **kw)}


def _show(value: Any) -> str:
    return "null" if value is None else (repr(value) if isinstance(value, str) else str(value))


def check_dataclass(obj: Any, prefix: str) -> None:
    """Every field of `obj` that carries a rule, against its rule."""
    for f in dataclasses.fields(obj):
        r = f.metadata.get("rule")
        if r is not None:
            r.check(f"{prefix}.{f.name}", getattr(obj, f.name))


def rules_of(cls: type) -> dict[str, Rule]:
    return {f.name: f.metadata["rule"] for f in dataclasses.fields(cls) if "rule" in f.metadata}


_FRACTION = dict(low=0.0, high=1.0, low_open=True)
_EPOCHS_HINT = (
    "transferlab's learning-rate schedules need a known number of epochs, so Lightning's -1 (no limit) is "
    "not supported; stop earlier with callbacks.early_stopping"
)

# The run config's own keys (strategy knobs live with their strategy, data source arguments with their source).
RULES: dict[str, Rule] = {
    "seed": Rule("int", low=0),
    "data.batch_size": Rule("int", low=1),
    "data.eval_batch_size": Rule("int", low=1, nullable=True),
    "data.image_size": Rule("int", low=16, nullable=True, hint="null uses the model's own input size"),
    "data.crop_pct": Rule("float", nullable=True, **_FRACTION),
    "data.num_workers": Rule("int", low=0),
    "data.samples_per_class": Rule("int", low=1, nullable=True),
    "data.train_fraction": Rule("float", nullable=True, **_FRACTION),
    "data.val_per_class": Rule("int", low=0, nullable=True),
    "data.val_fraction": Rule("float", nullable=True, low=0.0, high=1.0, low_open=True, high_open=True),
    "data.eval_hflip": Rule("bool"),
    "data.store_size": Rule("int", low=1, nullable=True, hint="the largest side images are stored at; null: the model's eval resize"),
    "data.stream.num_workers": Rule("int", low=0),
    "data.unlabeled": Rule("str", nullable=True, hint="rest, source, target, a folder of images or a file of texts; null: no unlabelled pool"),
    "data.unlabeled_max": Rule("int", low=1, nullable=True, hint="null keeps the whole unlabelled pool"),
    "data.max_length": Rule("int", low=8, hint="tokens per text; longer texts are cut"),
    "data.token_cache": Rule("bool"),
    "data.bucket_by_length": Rule("bool"),
    "data.bucket_size_multiplier": Rule("int", low=1, hint="batches sorted by length together"),
    "data.augment.enabled": Rule("bool"),
    "data.augment.scale": Rule("pair", low=0.0, high=1.0, low_open=True),
    "data.augment.ratio": Rule("pair", low=0.0, low_open=True),
    "data.augment.hflip": Rule("float", low=0.0, high=1.0),
    "data.sampler": Rule("str", choices=("natural", "balanced"), hint="balanced: the training loader draws every class alike"),
    "data.skew": Rule("map", nullable=True, **_FRACTION, hint="{class index or name: fraction kept}, e.g. data.skew={0:0.1}"),
    "trainer.max_epochs": Rule("int", low=1, hint=_EPOCHS_HINT),
    "trainer.num_nodes": Rule("int", low=1, hint="machines the run trains on; more than 1 needs trainer=multinode"),
    "trainer.tasks_per_node": Rule("int", low=1, hint="processes SLURM starts per node: 1, or trainer.devices under trainer=multinode"),
    "optim.name": Rule("str", choices=("adamw", "sgd")),
    "optim.schedule": Rule("str", choices=("cosine", "constant")),
    "optim.weight_decay": Rule("float", low=0.0),
    "optim.momentum": Rule("float", low=0.0, high=1.0, high_open=True),
    "optim.betas": Rule("float_list", length=2, low=0.0, high=1.0, high_open=True),
    "optim.warmup_epochs": Rule("float", low=0.0),
    "optim.min_lr_ratio": Rule("float", low=0.0, high=1.0),
    "optim.fused": Rule("bool", nullable=True),
    "optim.label_smoothing": Rule("float", low=0.0, high=1.0, high_open=True),
    "optim.class_weights": Rule("float_list", low=0.0, choices=("none", "balanced"),
                                hint="a list: one weight per class, in the data's class order"),
    "optim.logit_adjustment": Rule("bool"),
    "optim.logit_adjustment_tau": Rule("float", low=0.0, hint="the weight of the log prior added to the logits in training"),
    "model.head.type": Rule("str", choices=("linear", "mlp")),
    "model.head.hidden": Rule("int", low=1),
    "model.head.dropout": Rule("float", low=0.0, high=1.0, high_open=True),
    "model.backbone_lr_scale": Rule("float", low=0.0, low_open=True),
    "tune.arm": Rule("str", choices=ARMS, nullable=True, hint="set by experiment=tuned_compare on the jobs it launches; null otherwise"),
    "tune.trials": Rule("int", low=1, hint="Optuna trials per strategy in experiment=tuned_compare"),
    "eval.calibrate": Rule("str", choices=("none", "temperature"),
                           hint="temperature fits one T on validation after the test; none leaves the logits as trained"),
}


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


# Rules of the keys one choice brings: selector key -> choice -> {key: rule}; and the choice a
# config that sets no selector gets (one written before the selector existed).
_CHOICE_RULES: dict[str, dict[str, dict[str, Rule]]] = {}
_CHOICE_DEFAULTS: dict[str, str] = {}


def register_choice_rules(selector: str, choice: str, rules: dict[str, Rule], default: bool = False) -> None:
    """`rules` apply to a config whose `selector` is `choice` (with `default`, also to one without
    `selector`); the module that owns the choice registers them."""
    _CHOICE_RULES.setdefault(selector, {})[choice] = dict(rules)
    if default:
        _CHOICE_DEFAULTS[selector] = choice


def choice_rules(cfg: DictConfig) -> dict[str, Rule]:
    """The rules the config's choices bring (none for a choice nobody registered: that choice fails
    later, where it is built, with its own message)."""
    found: dict[str, Rule] = {}
    for selector, by_choice in _CHOICE_RULES.items():
        choice = OmegaConf.select(cfg, selector, default=_CHOICE_DEFAULTS.get(selector))
        found.update(by_choice.get(str(choice), {}))
    return found


def check_rules(cfg: DictConfig, rules: dict[str, Rule]) -> None:
    """Each key of `rules` that the config has, against its rule; ConfigError on the first one out of range."""
    for key, r in rules.items():
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
        if value is not _MISSING:
            r.check(key, _plain(value))


def check_config(cfg: DictConfig) -> None:
    """The keys of RULES and those the config's choices bring, against their rules."""
    check_rules(cfg, RULES)
    check_rules(cfg, choice_rules(cfg))
    if OmegaConf.select(cfg, "tune.arm") == SEARCH_ARM and cfg.get("test", True):
        raise ConfigError("tune.arm=search is a tuning trial, scored on validation only, and test=true would test it: "
                          "set test=false (experiment=tuned_compare does), or drop tune.arm")
