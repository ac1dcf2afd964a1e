"""Hydra's plugins must live in the hydra_plugins namespace: this one is transferlab's tuned
comparison sweeper (configs/hydra/sweeper/tuned_compare.yaml), a thin seam over transferlab.tune."""
