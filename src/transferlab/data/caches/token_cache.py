"""Token-id cache: a text source's texts are tokenised once per tokenizer and max length, not once per run.

`CachedTokenize` wraps a text backbone's `tokenize(texts) -> Tokens` (data/text/tokens.py); sources call it
as they call the plain one. The ids are stored under `paths.cache_dir`/tokens, one file per call,
named by the hash of everything that changes them (`TokenKey`): the tokenizer's identity (its class,
name_or_path, vocabulary size and a hash of its vocabulary and rules, from the backbone), the max
length, and a hash of the exact texts. Files are keyed, checked, locked and written as the feature
cache's are (data/caches/cache_files.py): a file that cannot be trusted is logged and rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from transferlab.data.caches.cache_files import CacheFileError, CacheStats, JsonKey, load_blob, read_or_build, safe_name, save_blob
from transferlab.data.text.tokens import Tokenize, Tokens

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def _update_with_text(h, item) -> None:
    # Length-prefixed, so ["ab", "c"] and ["a", "bc"] differ; a tuple is one example of several texts
    # (a sentence pair).
    if isinstance(item, str):
        data = item.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(data))
        h.update(data)
        return
    parts = list(item)
    h.update(b"t%d:" % len(parts))
    for part in parts:
        _update_with_text(h, part)


def texts_digest(texts: Sequence) -> str:
    h = hashlib.blake2b(digest_size=20)
    for text in texts:
        _update_with_text(h, text)
    return h.hexdigest()


@dataclass(frozen=True)
class TokenKey(JsonKey):
    """Everything that changes the ids of one list of texts. Two equal keys give equal ids."""

    tokenizer: tuple  # the backbone's tokenizer_identity() items, sorted (json-able)
    max_length: int
    texts_digest: str
    num_texts: int
    format: int = FORMAT_VERSION

    def as_dict(self) -> dict:
        d = asdict(self)
        d["tokenizer"] = dict(self.tokenizer)
        return d


def make_token_key(tokenizer: dict, max_length: int, texts: Sequence) -> TokenKey:
    return TokenKey(tuple(sorted(tokenizer.items())), int(max_length), texts_digest(texts), len(texts))


class TokenCache:
    """Token-id files under `root`/tokens, one per list of texts, named by their key's hash."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.stats = CacheStats()

    def path_for(self, key: TokenKey) -> Path:
        # A folder per tokenizer, for people clearing the cache by hand; the hash alone names the file.
        name = safe_name(Path(str(dict(key.tokenizer).get("name_or_path", ""))).name or "tokenizer")
        return self.root / "tokens" / name / f"{key.digest()[:32]}.pt"

    @staticmethod
    def read(path: Path, key: TokenKey) -> Tokens:
        """The tokens stored at `path` for `key`; CacheFileError if they cannot be trusted."""
        blob = load_blob(path, FORMAT_VERSION, key, "tokenizer, max_length or texts")
        ids, cut, pad_id = blob.get("input_ids"), blob.get("is_truncated"), blob.get("pad_id")
        expected = (key.num_texts, key.max_length)
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or tuple(ids.shape) != expected:
            found = (ids.dtype, tuple(ids.shape)) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise CacheFileError(f"input_ids are {found}, expected int64 {expected}")
        if cut is not None and (not isinstance(cut, torch.Tensor) or cut.dtype != torch.bool or tuple(cut.shape) != expected[:1]):
            raise CacheFileError(f"is_truncated is not bool [{key.num_texts}]")
        truncated = blob.get("truncated")
        if not isinstance(pad_id, int) or not isinstance(truncated, int) or (cut is not None and int(cut.sum()) != truncated):
            raise CacheFileError("pad_id or the truncated count is missing or inconsistent")
        return Tokens(ids, pad_id, truncated, cut)

    def get_or_build(self, key: TokenKey, tokenize: Callable[[], Tokens]) -> Tokens:
        """Cached tokens for `key`, or `tokenize()`'s, stored for next time."""
        expected = (key.num_texts, key.max_length)

        def build() -> Tokens:
            t0 = time.perf_counter()
            tokens = tokenize()
            self.stats.build_s += time.perf_counter() - t0
            if tuple(tokens.input_ids.shape) != expected:
                raise RuntimeError(f"tokenize gave ids of shape {tuple(tokens.input_ids.shape)}, expected {expected}")
            return tokens

        def write(path: Path, tokens: Tokens) -> None:
            save_blob(path, FORMAT_VERSION, key, {"input_ids": tokens.input_ids.to(torch.int64).contiguous(),
                                                  "pad_id": int(tokens.pad_id), "truncated": int(tokens.truncated),
                                                  "is_truncated": tokens.is_truncated})

        path = self.path_for(key)
        got = read_or_build(path, lambda p: self.read(p, key), build, write, log, "token cache")
        tokens = got.value
        if got.hit:
            self.stats.hits += 1
            log.info("token cache hit: %d texts at max_length %d (%d truncated) from %s", key.num_texts, key.max_length,
                     tokens.truncated, path)
        else:
            if got.stale is None:
                self.stats.built += 1
            else:
                self.stats.rebuilt += 1
            log.info("token cache miss: %d texts tokenized, written to %s", key.num_texts, path)
        return tokens


class CachedTokenize:
    """`tokenize(texts) -> Tokens` through the cache: the tokenizer runs only for texts it has not seen."""

    def __init__(self, tokenize: Tokenize, tokenizer: dict, max_length: int, cache: TokenCache):
        self.tokenize = tokenize
        self.tokenizer = dict(tokenizer)  # the backbone's tokenizer_identity()
        self.max_length = int(max_length)
        self.cache = cache

    def __call__(self, texts: list[str], pairs: list[str] | None = None) -> Tokens:
        keyed = texts if pairs is None else list(zip(texts, pairs, strict=True))
        key = make_token_key(self.tokenizer, self.max_length, keyed)
        return self.cache.get_or_build(key, lambda: self.tokenize(texts) if pairs is None else self.tokenize(texts, pairs))
