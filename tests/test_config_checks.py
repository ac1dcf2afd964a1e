"""Every number and choice a user sets is checked where the config is read, against its range, and
a schedule that would make the run another strategy is refused: nothing out of range reaches
Lightning or torch, and nothing is recorded as the experiment it was not.

The table is derived from the rules themselves (config/checks.py's RULES, each backbone kind's and
each strategy's field rules) and from the config folder: a new key with a rule is tested without
editing this file.
"""

import copy
import functools
import json
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from transferlab import CONFIG_DIR
from transferlab import train as train_cli
from transferlab.config.checks import RULES, Rule, check_config, rules_of
from transferlab.engine.assemble import make_run
from transferlab.engine.builders import make_strategy
from transferlab.errors import ConfigError
from transferlab.finetune.strategies import STRATEGIES
from transferlab.models.backbone import kinds
from transferlab.utils.resolvers import register

register()

TINY = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "data.source_args.train_per_class=12",
    "data.source_args.test_per_class=4", "data.val_per_class=4", "data.batch_size=8",
]
STRATEGY_NAMES = sorted(p.stem for p in (CONFIG_DIR / "strategy").glob("*.yaml"))


def _text(value) -> str:
    """An override's text for `value`, as a user would type it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)


def composed(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides])
    GlobalHydra.instance().clear()
    return cfg


@functools.lru_cache(maxsize=None)
def _base(strategy: str):
    return composed(f"strategy={strategy}")


def with_value(strategy: str, key: str, value):
    """The composed config of `strategy` with `key` set to `value`, as an override would set it
    (composing once per strategy: the table has hundreds of rows)."""
    cfg = copy.deepcopy(_base(strategy))
    with open_dict(cfg):  # text-only keys (data.max_length, model.pooling) are absent from this image config
        OmegaConf.update(cfg, key, value, merge=False)
    return cfg


def global_cases():
    for key, rule in RULES.items():
        for bad in rule.bad_values():
            yield pytest.param(key, bad, id=f"{key}={_text(bad)}")


def kind_cases():
    for kind in kinds():
        for key, rule in kind.rules.items():
            for bad in rule.bad_values():
                yield pytest.param(kind.name, key, bad, id=f"{kind.name}:{key}={_text(bad)}")


def strategy_cases():
    for name in STRATEGY_NAMES:
        for key, rule in rules_of(STRATEGIES[name].Config).items():
            for bad in rule.bad_values():
                yield pytest.param(name, key, bad, id=f"{name}:{key}={_text(bad)}")


def test_every_strategy_config_has_a_registered_strategy_and_the_same_knobs():
    assert STRATEGY_NAMES == sorted(STRATEGIES)
    for name in STRATEGY_NAMES:
        cfg = _base(name)
        yaml_knobs = set(cfg.strategy)
        fields = {f for f in STRATEGIES[name].Config.__dataclass_fields__}
        assert yaml_knobs == fields, name
        # The dataclass defaults equal the YAML's: a strategy built in code is the one the config builds.
        defaults = STRATEGIES[name].Config()
        for key in fields - {"name"}:
            assert getattr(defaults, key) == cfg.strategy[key], (name, key)


def test_the_default_config_passes_every_rule():
    for name in STRATEGY_NAMES:
        cfg = _base(name)
        check_config(cfg)
        make_strategy(cfg)


@pytest.mark.parametrize("key,bad", list(global_cases()))
def test_each_global_key_refuses_values_outside_its_range(key, bad):
    cfg = with_value("partial", key, bad)
    with pytest.raises(ConfigError, match=f"^{key}=.* is outside its range: use "):
        check_config(cfg)


@pytest.mark.parametrize("kind,key,bad", list(kind_cases()))
def test_each_backbone_kind_key_refuses_values_outside_its_range(kind, key, bad):
    cfg = with_value("partial", "model.backbone", kind)
    with open_dict(cfg):
        OmegaConf.update(cfg, key, bad, merge=False)
    with pytest.raises(ConfigError, match=f"^{key}=.* is outside its range: use "):
        check_config(cfg)


def test_a_backbone_kind_key_is_checked_only_for_that_kind():
    cfg = with_value("partial", "model.pooling", "not-a-pooling")  # an hf key on a timm config: not its business
    check_config(cfg)
    cfg.model.backbone = "hf"
    with pytest.raises(ConfigError, match="^model.pooling='not-a-pooling' is outside its range"):
        check_config(cfg)


@pytest.mark.parametrize("name,key,bad", list(strategy_cases()))
def test_each_strategy_knob_refuses_values_outside_its_range(name, key, bad):
    cfg = with_value(name, f"strategy.{key}", bad)
    with pytest.raises(ConfigError, match=f"strategy.{key}="):
        make_strategy(cfg)


def test_rules_describe_their_range():
    assert Rule("int", low=1).describe() == "a whole number >= 1"
    assert Rule("float", low=0.0, high=1.0, low_open=True, nullable=True).describe() == "null or a number in (0, 1]"
    assert Rule("str", choices=("adamw", "sgd")).describe() == "one of adamw, sgd"
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=-1 is outside its range: use a whole number >= 1 \(.*no limit.*early_stopping\)$"):
        RULES["trainer.max_epochs"].check("trainer.max_epochs", -1)


# --- schedules that would make the run another strategy ----------------------------------------------
@pytest.mark.parametrize("overrides,message", [
    (["strategy=gradual", "strategy.milestones=[3,5,8]", "trainer.max_epochs=1"],
     r"strategy=gradual would start training block groups after the last epoch \(g\d\d at epoch 3.*trainer.max_epochs=1 runs epochs 0..0\).*put strategy.milestones below 1"),
    (["strategy=partial", "strategy.unfreeze_top=0"], "trains no block group of the backbone: strategy.unfreeze_top=0 .* is strategy=extract"),
    (["strategy=two_phase", "strategy.head_epochs=3", "trainer.max_epochs=3"], "strategy.head_epochs \\(now 3\\) must be below trainer.max_epochs=3"),
    (["strategy=fine_tune", "trainer.max_epochs=1"], "strategy.freeze_epochs \\(now 1\\) must be below trainer.max_epochs=1"),
    (["strategy=scratch", "strategy.pretrained=true"], "strategy=scratch with strategy.pretrained=true .* use strategy=full strategy.decay=1.0"),
    (["strategy=lp_ft", "model.head.type=mlp"], "strategy=lp_ft starts from a linear probe"),
])
def test_degenerate_schedules_are_refused_before_anything_loads(tmp_path, overrides, message):
    cfg = composed(*overrides, f"paths.output_dir={tmp_path}")
    with pytest.raises(ConfigError, match=message):
        make_run(cfg)


def test_debug_runs_skip_the_schedule_check(tmp_path):
    # fast_dev_run trains one batch: a check that the run works, not the schedule (recorded as debug).
    make_run(composed("strategy=gradual", "trainer.max_epochs=1", "+trainer.fast_dev_run=true", f"paths.output_dir={tmp_path}"))


# --- through the command line: one line, and the failure recorded ------------------------------------
@pytest.mark.parametrize("override,named", [
    ("seed=abc", "seed='abc' is outside its range: use a whole number >= 0"),
    ("data.batch_size=0", "data.batch_size=0 is outside its range: use a whole number >= 1"),
    ("data.image_size=0", "data.image_size=0 is outside its range: use null or a whole number >= 16"),
    ("strategy.lr=-1", "strategy.lr=-1 is outside its range: use a number > 0"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 is outside its range: use a whole number >= 1"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1 is outside its range"),
    ("trainer.num_nodes=0", "trainer.num_nodes=0 is outside its range: use a whole number >= 1 (machines the run trains on"),
])
def test_out_of_range_values_are_one_line_and_recorded_as_failed(tmp_path, monkeypatch, capsys, override, named):
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", ["train.py", *TINY, override])
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_:
        train_cli.main()
    GlobalHydra.instance().clear()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"error: {named}" or named in err.strip().splitlines()[-1]
    (metrics,) = (tmp_path / "logs").rglob("metrics.json")
    m = json.loads(metrics.read_text())
    assert m["status"] == "failed" and named in m["error"]
    assert m["config"]["strategy"] == "partial" and m["provenance"]["versions"]["torch"]
