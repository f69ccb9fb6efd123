"""Training: the one recipe, its step stages, checkpoints, run records and the entry points."""
