"""Loading the base model and the student; logits at chosen positions; reuse of a prefix's keys/values."""
