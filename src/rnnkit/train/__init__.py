"""Training: the Trainer, checkpoints, diagnostics."""
