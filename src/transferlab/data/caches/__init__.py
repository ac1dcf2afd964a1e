"""The caches under `paths.cache_dir`: frozen-backbone features and token ids, on keyed files they share."""
