"""Token ids from one tokenizer pass that still counts which texts were cut, and those counts per split."""

import pytest
import torch

from test_text import backbone_of, make_encoder, make_texts

from transferlab.data.datamodule import TransferDataModule

TEXTS = ["w1 w2 w3", "w4 " * 40, "w5", "w6 " * 30, "w7 " * 31]  # 30 words + [CLS] + [SEP] fill 32 exactly


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return make_encoder(tmp_path_factory.mktemp("enc") / "bert")


@pytest.fixture(scope="module")
def backbone(encoder):
    return backbone_of(encoder)


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

    from transferlab.models.hf_backbone import _encode

    tokenizer = ByT5Tokenizer()
    ids, cut = _encode(tokenizer, ["hello", "x" * 40, "y" * 9], 10)  # 9 bytes + </s> fill 10 exactly
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
