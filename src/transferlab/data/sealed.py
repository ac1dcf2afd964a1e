"""A test split that cannot be read: what a tuning trial holds in place of the real one.

A search that picks settings on validation must not see the test split, not even by accident (a
callback, a cache warm-up, a debug print). The trial's data module keeps the split's size (the
record's data sizes stay comparable) and nothing else that could be read.
"""

from __future__ import annotations

from transferlab.errors import DataError


class SealedSplit:
    # What the record asks of every split (whether its texts were cut): nothing to say here.
    is_truncated = None

    def __init__(self, size: int, why: str):
        self._size = size
        self._why = why
        self.nbytes = 0  # held in memory: nothing

    def __len__(self) -> int:
        return self._size

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise DataError(f"the test split is sealed ({self._why}): only validation may steer a tuning search; "
                        "test the chosen settings in a run of their own (the tuned sweep does)")

    def __getitem__(self, index):
        return self.__getattr__("items")
