"""Teachers, their targets and caches, the distillation losses and the answer-position alignment."""
