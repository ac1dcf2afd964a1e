"""`transferlab rank`: score candidate backbones on a run's training subset from their frozen
features, before fine-tuning any of them (docs/ranking.md).

One module per score (`logme.py`, `nce.py`, `leep.py`, `hscore.py`, `probe.py`); `candidates.py`
composes each candidate's config, `features.py` gets its cached features, `table.py` ranks and
writes the table, `agreement.py` checks a table against fine-tuned runs (Kendall's tau).
"""
