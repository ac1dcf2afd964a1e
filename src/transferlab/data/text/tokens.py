"""Texts as model input: tokenised once into padded id arrays, cut per batch to the longest text.

A text source reads strings and labels; the run's text backbone supplies `tokenize` (its tokenizer
at its max length) through the source context, so ids are made once per run, not per epoch. Each
batch is then trimmed to its own longest text (dynamic padding) and given its attention mask, so
short texts do not pay for long ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from transferlab.data.arrays import TokenArrays, token_lengths
from transferlab.data.batch import Batch
from transferlab.errors import DataError


@dataclass
class Tokens:
    input_ids: torch.Tensor  # int64 [N, max_length], right-padded
    pad_id: int
    truncated: int  # texts longer than max_length, cut
    # Which texts were cut (bool [N]), so each split carved from the ids can count its own.
    is_truncated: torch.Tensor | None = None


# tokenize(texts), or tokenize(texts, pairs) for sentence pairs: one sequence per (text, pair).
Tokenize = Callable[..., Tokens]

# Joins a pair in TokenArrays.texts: no word characters, so word-level methods (TF-IDF) read the words
# of both texts and no made-up word; the ids keep the pair's own structure.
PAIR_SEPARATOR = " ||| "


def token_arrays(texts: list[str], labels: list[int], classes: list[str], tokenize: Tokenize | None, source: str,
                 pairs: list[str] | None = None) -> TokenArrays:
    if tokenize is None:
        raise DataError(f"data.source={source} holds texts, and this model is an image backbone: use a text model "
                        "(model=minilm, or model=hf model.name=<HF id or folder>)")
    if pairs is None:
        tokens, strings = tokenize(texts), list(texts)
    else:
        tokens, strings = tokenize(texts, pairs), [a + PAIR_SEPARATOR + b for a, b in zip(texts, pairs, strict=True)]
    return TokenArrays(tokens.input_ids, torch.tensor(labels, dtype=torch.int64), list(classes), tokens.pad_id, strings,
                       tokens.is_truncated)


def padding_share(input_ids: torch.Tensor, pad_id: int) -> float:
    """The share of a batch that is padding once DynamicPadding cuts it to its longest text."""
    lengths = token_lengths(input_ids, pad_id)
    if not len(lengths):
        return 0.0
    return 1.0 - float(lengths.sum()) / (len(lengths) * max(1, int(lengths.max())))


class DynamicPadding(nn.Module):
    """The batch transform of text backbones: ids cut to the batch's longest text, plus the mask."""

    def __init__(self, pad_id: int):
        super().__init__()
        self.pad_id = int(pad_id)

    def apply(self, batch: Batch, train: bool) -> Batch:
        ids = batch.input_ids
        mask = ids != self.pad_id
        longest = max(1, int(mask.sum(1).max()))  # right padding: the first `longest` columns hold every token
        return batch.with_inputs(input_ids=ids[:, :longest].contiguous(), attention_mask=mask[:, :longest].long())
