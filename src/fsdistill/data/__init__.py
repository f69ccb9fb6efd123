"""Prompts (chat template, answer span, tokenisation), exemplar selection, and training batches."""
