"""Tuned comparisons: the same search budget on validation for every strategy (compare.py), and
what it found (summary.py). The Hydra seam is src/hydra_plugins/transferlab_tuned/."""
