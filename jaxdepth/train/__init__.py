"""Optimiser, pure train/eval steps and the training driver."""
