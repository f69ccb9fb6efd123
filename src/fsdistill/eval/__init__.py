"""Evaluation: generation backends, scoring records, teacher-forced metrics, result files, statistics,
figures, and the evaluation commands."""
