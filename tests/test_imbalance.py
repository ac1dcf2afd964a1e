"""Class imbalance: class weights and logit adjustment against the loss by hand, the balanced
sampler's draws, the warning about a balanced subset of a skewed pool, data.skew's cut, the range
checks of every new key, and a tiny run that records what it used."""

import json
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from transferlab import CONFIG_DIR
from transferlab.config.checks import check_config
from transferlab.data.class_balance import balanced_sample_weights, skew_fractions
from transferlab.data.datamodule import TransferDataModule
from transferlab.data.loaders import EpochBatches
from transferlab.data.subsample import skewed_pool
from transferlab.engine.imbalance import check_imbalance, loss_terms
from transferlab.errors import ConfigError, DataError
from transferlab.finetune.class_imbalance import LossTerms, class_weights, logit_offset, supervised_cross_entropy
from transferlab.finetune.strategies import build_strategy

LOGITS = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 3.0], [0.5, -0.5]])
LABELS = torch.tensor([0, 0, 0, 1])


def ce_by_hand(logits, labels, weights=(1.0, 1.0), offset=(0.0, 0.0)) -> float:
    total = norm = 0.0
    for row, y in zip(logits.tolist(), labels.tolist()):
        z = [v + o for v, o in zip(row, offset)]
        log_p = z[y] - math.log(sum(math.exp(v) for v in z))
        total += -weights[y] * log_p
        norm += weights[y]
    return total / norm


def test_balanced_class_weights_are_inverse_frequency_of_the_subset_and_weigh_the_loss():
    weights = class_weights("balanced", LABELS, 2)
    assert weights.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    loss = supervised_cross_entropy(LOGITS, LABELS, terms=LossTerms(class_weights=weights))
    assert float(loss) == pytest.approx(ce_by_hand(LOGITS, LABELS, weights.tolist()), rel=1e-6)


def test_a_list_of_class_weights_weighs_the_loss():
    weights = class_weights([1, 3], LABELS, 2)
    loss = supervised_cross_entropy(LOGITS, LABELS, terms=LossTerms(class_weights=weights))
    assert float(loss) == pytest.approx(ce_by_hand(LOGITS, LABELS, [1.0, 3.0]), rel=1e-6)
    assert class_weights("none", LABELS, 2) is None


def test_logit_adjustment_adds_tau_log_prior_to_the_training_logits():
    prior = torch.tensor([0.75, 0.25])
    offset = logit_offset(prior, tau=2.0)
    assert offset.tolist() == pytest.approx([2 * math.log(0.75), 2 * math.log(0.25)])
    loss = supervised_cross_entropy(LOGITS, LABELS, terms=LossTerms(logit_offset=offset))
    assert float(loss) == pytest.approx(ce_by_hand(LOGITS, LABELS, offset=offset.tolist()), rel=1e-6)
    assert logit_offset(prior, tau=0.0).abs().max() == 0


class _Subset:
    """What loss_terms reads of a DataModule: the training subset's labels, and a pool that is not it."""

    def __init__(self, train_labels, pool_counts):
        self.num_classes = len(pool_counts)
        self.splits = {"train": type("Split", (), {"labels": torch.tensor(train_labels)})()}
        self.pool_counts = torch.tensor(pool_counts)

    def train_counts(self):
        return torch.bincount(self.splits["train"].labels, minlength=self.num_classes)


def test_logit_adjustment_offsets_by_the_training_subsets_prior_not_the_pools(caplog):
    cfg = OmegaConf.create({"optim": {"logit_adjustment": True, "logit_adjustment_tau": 1.0, "class_weights": "none"}})
    skewed = loss_terms(cfg, _Subset([0, 1, 1, 1], pool_counts=[10, 90]))
    assert skewed.logit_offset.tolist() == pytest.approx([math.log(0.25), math.log(0.75)])
    with caplog.at_level(logging.WARNING):
        balanced = loss_terms(cfg, _Subset([0, 0, 1, 1], pool_counts=[10, 90]))
    offset = balanced.logit_offset
    assert offset.tolist() == pytest.approx([math.log(0.5)] * 2)  # the same for every class: the softmax is unmoved
    assert torch.allclose(F.softmax(LOGITS + offset, -1), F.softmax(LOGITS, -1))
    assert any("balanced training subset changes nothing" in r.getMessage() for r in caplog.records)


def test_no_terms_is_exactly_the_plain_cross_entropy():
    plain = F.cross_entropy(LOGITS, LABELS, label_smoothing=0.1)
    assert torch.equal(supervised_cross_entropy(LOGITS, LABELS, 0.1, None), plain)
    assert torch.equal(supervised_cross_entropy(LOGITS, LABELS, 0.1, LossTerms()), plain)


def test_class_weights_that_do_not_fit_the_data_are_refused():
    with pytest.raises(ConfigError, match="3 weights and the data has 2 classes"):
        class_weights([1, 2, 3], LABELS, 2)
    with pytest.raises(ConfigError, match="at least one > 0"):
        class_weights([0, 0], LABELS, 2)


# --- the balanced sampler -----------------------------------------------------------------------
SKEWED_LABELS = torch.tensor([0] * 90 + [1] * 10)


def epoch_indices(seed: int, epoch: int) -> list[int]:
    batches = EpochBatches(len(SKEWED_LABELS), 10, shuffle=True, seed=seed, draw_weights=balanced_sample_weights(SKEWED_LABELS))
    batches.set_epoch(epoch)
    return [i for batch in batches for i in batch]


def test_the_balanced_sampler_draws_every_class_alike():
    drawn = torch.tensor([i for epoch in range(10) for i in epoch_indices(0, epoch)])
    share = float((SKEWED_LABELS[drawn] == 1).double().mean())
    assert len(drawn) == 1000 and 0.45 < share < 0.55  # the natural order gives the rare class 0.10


def test_the_balanced_sampler_is_a_function_of_seed_and_epoch():
    assert epoch_indices(3, 2) == epoch_indices(3, 2)  # a resumed run's sampler, built anew, draws the same
    assert epoch_indices(3, 2) != epoch_indices(3, 1)
    assert epoch_indices(3, 2) != epoch_indices(4, 2)


# --- the pool: data.skew and the warning --------------------------------------------------------
def test_skew_cuts_the_asked_classes_of_the_pool_deterministically():
    labels = torch.arange(3).repeat_interleave(40)
    kept = skewed_pool(labels, {1: 0.1, 2: 0.5}, seed=0)
    assert torch.bincount(labels[kept]).tolist() == [40, 4, 20]
    assert torch.equal(kept, skewed_pool(labels, {1: 0.1, 2: 0.5}, seed=0))
    assert not torch.equal(kept, skewed_pool(labels, {1: 0.1, 2: 0.5}, seed=1))
    assert torch.bincount(labels[skewed_pool(labels, {1: 0.001}, seed=0)]).tolist() == [40, 1, 40]  # never empty


def test_skew_takes_class_names_and_refuses_unknown_ones():
    assert skew_fractions({"b": 0.5, 0: 0.1}, ["a", "b"]) == {1: 0.5, 0: 0.1}
    with pytest.raises(DataError, match="does not have"):
        skew_fractions({"zebra": 0.5}, ["a", "b"])
    with pytest.raises(DataError, match="has 2 classes"):
        skew_fractions({5: 0.5}, ["a", "b"])


def synthetic_dm(**kw) -> TransferDataModule:
    args = {"num_classes": 3, "train_per_class": 40, "test_per_class": 4, "image_size": 8}
    return TransferDataModule("synthetic", transform=None, source_args=args, storage_size=8, val_per_class=2, **kw)


def prior_warnings(caplog) -> list:
    return [r for r in caplog.records if r.levelno == logging.WARNING and "skewed pool" in r.getMessage()]


def test_a_balanced_subset_of_a_skewed_pool_is_warned_about_once(caplog):
    caplog.set_level(logging.WARNING)
    dm = synthetic_dm(samples_per_class=5, skew={0: 0.25})  # 10 against 40: 4x
    dm.setup()
    dm.setup()
    (warning,) = prior_warnings(caplog)
    message = warning.getMessage()
    assert "precision" in message and all(o in message for o in ("optim.logit_adjustment", "optim.class_weights", "data.sampler"))
    assert dm.prior_warning and dm.train_counts().tolist() == [5, 5, 5] and dm.pool_counts.tolist() == [10, 40, 40]


@pytest.mark.parametrize("kw", [dict(samples_per_class=5, skew={0: 0.5}), dict(samples_per_class=5), dict(skew={0: 0.25})])
def test_no_warning_at_a_skew_of_2x_or_without_a_balanced_subset(caplog, kw):
    caplog.set_level(logging.WARNING)
    dm = synthetic_dm(**kw)
    dm.setup()
    assert prior_warnings(caplog) == [] and not dm.prior_warning


def test_the_training_loader_draws_balanced_with_the_balanced_sampler():
    dm = synthetic_dm(skew={0: 0.25}, sampler="balanced", batch_size=8)
    dm.setup()
    labels = dm.splits["train"].labels
    assert torch.bincount(labels).tolist() == [8, 38, 38]
    drawn = torch.cat([batch.labels for batch in dm.train_dataloader()])
    assert len(drawn) == len(labels) and torch.bincount(drawn, minlength=3).min() > len(labels) / 6


# --- range checks -------------------------------------------------------------------------------
@pytest.mark.parametrize("override, named", [
    ("data.sampler=shuffled", "data.sampler='shuffled' is outside its range: use one of natural, balanced"),
    ("optim.class_weights=[1,-1]", "optim.class_weights=[1, -1] is outside its range"),
    ("optim.class_weights=inverse", "optim.class_weights='inverse' is outside its range"),
    ("optim.logit_adjustment=maybe", "optim.logit_adjustment='maybe' is outside its range"),
    ("optim.logit_adjustment_tau=-0.5", "optim.logit_adjustment_tau=-0.5 is outside its range: use a number >= 0"),
    ("data.skew={0:0}", "data.skew={0: 0} is outside its range"),
    ("data.skew={0:1.5}", "data.skew={0: 1.5} is outside its range"),
])
def test_bad_imbalance_values_are_refused_by_name(override, named):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=[override])
    with pytest.raises(ConfigError) as e:
        check_config(cfg)
    assert str(e.value).startswith(named) and "\n" not in str(e.value)


@pytest.mark.parametrize("strategy", [{"name": "extract", "solver": "lbfgs"}, {"name": "lp_ft"}, {"name": "setfit"}])
def test_strategies_that_fit_a_probe_refuse_the_loop_options(strategy):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=["optim.logit_adjustment=true"])
    with pytest.raises(ConfigError, match="outside the loop"):
        check_imbalance(cfg, build_strategy(strategy))
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        check_imbalance(compose("train"), build_strategy(strategy))  # the defaults pass


# --- end to end ---------------------------------------------------------------------------------
TINY = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "data.source_args.train_per_class=24",
    "data.source_args.test_per_class=4", "data.val_per_class=4", "data.batch_size=8", "trainer.max_epochs=1",
]


def test_a_run_records_the_imbalance_options_it_used(tmp_path, monkeypatch, capsys):
    from test_bad_input import run

    from transferlab import train as train_cli

    args = [*TINY, "data.skew={1:0.25}", "data.val_per_class=2", "data.samples_per_class=4", "optim.class_weights=[1,2,1,1]",
            "optim.logit_adjustment=true", "optim.logit_adjustment_tau=0.5", "data.sampler=balanced"]
    code, out, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    (path,) = (tmp_path / "logs").rglob("metrics.json")
    m = json.loads(path.read_text())
    assert m["status"] == "completed"
    assert m["imbalance"] == {
        "class_weights": [1, 2, 1, 1], "class_weights_used": [1.0, 2.0, 1.0, 1.0], "logit_adjustment": True,
        "logit_adjustment_tau": 0.5, "logit_offset_used": [round(0.5 * math.log(0.25), 6)] * 4, "sampler": "balanced",
        "skew": {"1": 0.25}, "pool_counts": [24, 6, 24, 24],
        "pool_skew": 4.0, "train_skew": 1.0, "balanced_subset_warning": True,
    }


def test_the_imbalance_experiment_is_data_efficiency_with_one_class_cut_to_a_tenth():
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("train", overrides=["experiment=imbalance"])
        cheap = compose("train", overrides=["experiment=data_efficiency"])
    assert cfg.data.skew == {0: 0.1} and cfg.task_name == "imbalance"
    assert (cfg.data.image_size, cfg.trainer.max_epochs) == (cheap.data.image_size, cheap.trainer.max_epochs)
    check_config(cfg)


def test_the_report_keeps_runs_with_other_imbalance_options_apart(tmp_path):
    from test_report import _job, _metrics

    from transferlab.report import write_report

    sweep = tmp_path / "multiruns" / "2026-01-01_10-00-00"
    for num, (adjust, seed) in enumerate([(False, 1), (False, 2), (True, 1), (True, 2)]):
        m = _metrics("lite0", "partial", 10, seed)
        m["imbalance"] = {"class_weights": "none", "logit_adjustment": adjust, "logit_adjustment_tau": 1.0,
                          "sampler": "natural", "skew": {"0": 0.1}, "pool_counts": [600, 6000], "pool_skew": 10.0}
        _job(sweep, num, [f"seed={seed}", f"optim.logit_adjustment={adjust}"], m)
    report = write_report([sweep])
    assert report.groups.set_index("strategy")["n"].to_dict() == {"partial (logit_adjustment=False)": 2,
                                                                  "partial (logit_adjustment=True)": 2}


def test_the_table_script_reads_the_cut_class_from_the_confusion_matrix():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from imbalance_table import cut_class_scores

    record = {"confusion": {"matrix": [[6, 4], [2, 8]]}}  # rows true: class 0 recall 6/10, precision 6/8
    assert cut_class_scores(record) == (0.75, 0.6)
