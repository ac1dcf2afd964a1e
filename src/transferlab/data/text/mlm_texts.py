"""What masked-language-model pre-training reads (task=mlm): token ids of the run's own texts, no labels.

- train: the labelled training split's texts and the unlabelled pool's (data.unlabeled), ids only;
- val: the validation split's texts, for the MLM loss only (nothing trains on them);
- the test split is never read.

Masking is `transformers.DataCollatorForLanguageModeling`: it pads each batch to its longest text and
picks `mlm_probability` of the tokens that are neither special nor padding. Validation batches are
masked once, by a seeded collator, so the loss before and after training is measured on the same
masked tokens.
"""

from __future__ import annotations

import hashlib

import torch
from torch.utils.data import DataLoader

from transferlab.data.arrays import token_lengths
from transferlab.errors import DataError

TRAIN_SPLITS = ("train", "unlabeled")


def text_ids(arrays) -> list[list[int]]:
    """Each text's ids without its right padding."""
    lengths = token_lengths(arrays.input_ids, arrays.pad_id).tolist()
    return [row[:n] for row, n in zip(arrays.input_ids.tolist(), lengths)]


def mlm_texts(splits: dict) -> tuple[list[list[int]], list[list[int]]]:
    """(training texts, validation texts) from a DataModule's splits; labels and test are not touched."""
    for name in ("train", "val"):
        if name in splits and splits[name].field != "input_ids":
            raise DataError("task=mlm pre-trains a text encoder on texts, and this data holds images: use text data "
                            "(data=bbc_news, data=text_files, data=text_table)")
    train = [ids for name in TRAIN_SPLITS if name in splits for ids in text_ids(splits[name])]
    val = text_ids(splits["val"]) if "val" in splits else []
    return train, val


def texts_digest(texts: list[list[int]]) -> str:
    """A key for the texts an MLM phase trains on (ids, in order)."""
    h = hashlib.blake2b(digest_size=20)
    for ids in texts:
        h.update(torch.tensor(ids, dtype=torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()


def masking_collator(tokenizer, mlm_probability: float, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                     seed: int | None = None):
    """Pads a list of {"input_ids"} and masks it; `seed` gives the collator a generator of its own
    (validation), None draws from torch's global one, which the run's seed sets."""
    from transformers import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability, mask_replace_prob=mask_replace_prob,
                                           random_replace_prob=random_replace_prob, seed=seed)


def train_loader(texts: list[list[int]], collator, batch_size: int, seed: int) -> DataLoader:
    rows = [{"input_ids": ids} for ids in texts]
    return DataLoader(rows, batch_size=batch_size, shuffle=True, collate_fn=collator, drop_last=False,
                      generator=torch.Generator().manual_seed(int(seed)))


def masked_batches(texts: list[list[int]], collator, batch_size: int) -> list[dict]:
    """Texts masked once, in order: the same masked tokens every time they are scored."""
    rows = [{"input_ids": ids} for ids in texts]
    return [collator(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
