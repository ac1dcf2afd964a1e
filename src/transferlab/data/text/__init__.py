"""Texts as model input: token ids per split, cut per batch, and what masked-LM pre-training reads."""
