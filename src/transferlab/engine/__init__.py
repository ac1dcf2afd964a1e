"""Assembling and running one experiment: the LightningModule, the run built from a config, fit and test, the run record, resume."""
