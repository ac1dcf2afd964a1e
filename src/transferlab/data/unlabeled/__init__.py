"""The unlabelled pool a run may learn from (`data.unlabeled`): chosen, read from files, served beside labelled batches."""
