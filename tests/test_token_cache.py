"""Token ids: one tokenizer pass per text that still counts what was cut, and a cache across runs
keyed by the tokenizer, max_length and the exact texts (a stale or corrupt file is rebuilt)."""

import logging

import pytest
import torch

from test_text import backbone, backbone_of, encoder, make_encoder, make_texts  # noqa: F401 (fixtures)

from transferlab.data.datamodule import TransferDataModule
from transferlab.data.text.tokens import Tokens
from transferlab.data.caches.token_cache import CachedTokenize, TokenCache, make_token_key

TEXTS = ["w1 w2 w3", "w4 " * 40, "w5", "w6 " * 30, "w7 " * 31]  # 30 words + [CLS] + [SEP] fill 32 exactly


class Counting:
    """A tokenize that counts its calls."""

    def __init__(self, tokenize):
        self.tokenize, self.calls = tokenize, 0

    def __call__(self, texts):
        self.calls += 1
        return self.tokenize(texts)


def cached(backbone, root, tokenize=None, identity=None, max_length=None):
    counting = Counting(tokenize or backbone.tokenize)
    wrapped = CachedTokenize(counting, identity or backbone.tokenizer_identity(), max_length or backbone.max_length, TokenCache(root))
    return wrapped, counting


def assert_same_tokens(a: Tokens, b: Tokens) -> None:
    assert torch.equal(a.input_ids, b.input_ids) and a.pad_id == b.pad_id and a.truncated == b.truncated
    assert torch.equal(a.is_truncated, b.is_truncated)


# --- one pass of the tokenizer ---------------------------------------------------------------------
def test_one_tokenizer_pass_gives_the_truncated_ids_and_says_which_texts_were_cut(backbone):
    calls = []
    tokenizer = backbone.tokenizer
    original = type(tokenizer).__call__

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    type(tokenizer).__call__ = spy
    try:
        tokens = backbone.tokenize(TEXTS)
    finally:
        type(tokenizer).__call__ = original
    assert len(calls) == 1 and calls[0]["truncation"] is True
    reference = tokenizer(TEXTS, truncation=True, max_length=32, padding="max_length", return_tensors="pt")["input_ids"]
    assert torch.equal(tokens.input_ids, reference)
    assert tokens.is_truncated.tolist() == [False, True, False, False, True] and tokens.truncated == 2


def test_a_python_tokenizer_is_counted_in_the_same_single_pass():
    from transformers import ByT5Tokenizer

    from transferlab.models.hf_backbone import encode_texts

    tokenizer = ByT5Tokenizer()
    ids, cut = encode_texts(tokenizer, ["hello", "x" * 40, "y" * 9], None, 10)  # 9 bytes + </s> fill 10 exactly
    assert cut.tolist() == [False, True, False]
    reference = tokenizer(["hello", "x" * 40, "y" * 9], truncation=True, max_length=10, padding="max_length")["input_ids"]
    assert ids.tolist() == reference


def test_truncated_counts_follow_the_texts_into_each_split(encoder, tmp_path):
    texts = make_texts(tmp_path / "t", per_class=20)
    long = texts / "topic0" / "long.txt"
    long.write_text("w1 " * 50)
    dm = TransferDataModule("text_files", transform=None, source_args={"root": str(texts), "test_fraction": 0.3},
                            val_fraction=0.2, tokenize=backbone_of(encoder).tokenize)
    dm.setup()
    assert sum(dm.truncated.values()) == 1 and set(dm.truncated) == {"train", "val", "test"}


# --- the cache -------------------------------------------------------------------------------------
def test_a_second_run_reads_the_ids_and_never_calls_the_tokenizer(backbone, tmp_path, caplog):
    first, counted = cached(backbone, tmp_path)
    with caplog.at_level(logging.INFO, logger="transferlab.data.caches.token_cache"):
        built = first(TEXTS)
        again, counted_again = cached(backbone, tmp_path)  # a later run: a new cache object on the same folder
        read = again(TEXTS)
    assert counted.calls == 1 and counted_again.calls == 0
    assert first.cache.stats.built == 1 and again.cache.stats.hits == 1
    assert "token cache miss: 5 texts" in caplog.text and "token cache hit: 5 texts at max_length 32 (2 truncated)" in caplog.text
    assert_same_tokens(read, built)
    assert_same_tokens(read, backbone.tokenize(TEXTS))  # what the tokenizer gives without any cache
    assert list((tmp_path / "tokens" / "bert").glob("*.pt")) == [again.cache.path_for(make_token_key(again.tokenizer, 32, TEXTS))]


@pytest.mark.parametrize("change", ["texts", "order", "max_length", "tokenizer"])
def test_other_texts_max_length_or_tokenizer_miss(backbone, encoder, tmp_path, change):
    first, _ = cached(backbone, tmp_path)
    first(TEXTS)
    texts, other = list(TEXTS), backbone
    if change == "texts":
        texts[0] = "w1 w2 w4"
    elif change == "order":
        texts = texts[::-1]
    elif change == "max_length":
        other = backbone_of(encoder, max_length=16)
    else:
        other = backbone_of(make_encoder(tmp_path / "other"))
        other.tokenizer.add_tokens(["w999"])  # one token more: another tokenizer under the same name
    second, counted = cached(other, tmp_path)
    tokens = second(texts)
    assert counted.calls == 1 and second.cache.stats.built == 1
    assert_same_tokens(tokens, other.tokenize(texts))


def test_the_tokenizer_identity_is_stable_and_tells_tokenizers_apart(backbone, encoder, tmp_path):
    identity = backbone.tokenizer_identity()
    backbone.tokenize(TEXTS)  # a call leaves truncation and padding set on a fast tokenizer's backend
    assert backbone.tokenizer_identity() == identity == backbone_of(encoder).tokenizer_identity()
    other = backbone_of(make_encoder(tmp_path / "other"))
    other.tokenizer.backend_tokenizer.normalizer = None  # same vocabulary, other rules
    assert other.tokenizer_identity()["digest"] != identity["digest"]


def _garbage(path):
    path.write_bytes(b"not a torch file")


def _truncated(path):
    path.write_bytes(path.read_bytes()[:100])


def _wrong_shape(path):
    blob = torch.load(path, weights_only=True)
    blob["input_ids"] = blob["input_ids"][:, :10]
    torch.save(blob, path)


def _inconsistent(path):
    blob = torch.load(path, weights_only=True)
    blob["truncated"] = 0
    torch.save(blob, path)


def _other_key(path):
    blob = torch.load(path, weights_only=True)
    blob["key"] = blob["key"].replace('"max_length": 32', '"max_length": 33')
    torch.save(blob, path)


@pytest.mark.parametrize("damage", [_garbage, _truncated, _wrong_shape, _inconsistent, _other_key])
def test_a_corrupt_file_is_rebuilt_with_a_warning(backbone, tmp_path, caplog, damage):
    first, _ = cached(backbone, tmp_path)
    good = first(TEXTS)
    path = first.cache.path_for(make_token_key(first.tokenizer, 32, TEXTS))
    damage(path)
    second, counted = cached(backbone, tmp_path)
    with caplog.at_level(logging.WARNING, logger="transferlab.data.caches.token_cache"):
        tokens = second(TEXTS)
    assert counted.calls == 1 and second.cache.stats.rebuilt == 1
    assert "rebuilding" in caplog.text and str(path) in caplog.text
    assert_same_tokens(tokens, good)
    assert_same_tokens(TokenCache.read(path, make_token_key(first.tokenizer, 32, TEXTS)), good)  # the new file is whole


def test_a_datamodule_through_the_cache_has_the_splits_of_one_without(encoder, tmp_path):
    texts = make_texts(tmp_path / "t", per_class=20)
    backbone = backbone_of(encoder)

    def setup(tokenize):
        dm = TransferDataModule("text_files", transform=None, source_args={"root": str(texts)}, val_fraction=0.2, tokenize=tokenize)
        dm.setup()
        return dm

    plain = setup(backbone.tokenize)
    for _ in range(2):
        wrapped, counted = cached(backbone, tmp_path / "cache")
        dm = setup(wrapped)
        for split, arrays in plain.splits.items():
            assert torch.equal(dm.splits[split].input_ids, arrays.input_ids) and dm.splits[split].texts == arrays.texts
        assert dm.truncated == plain.truncated
    assert counted.calls == 0  # the second datamodule read both of the source's calls (pool, test)
