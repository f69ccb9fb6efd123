"""Scoring functions that tests name by import path (task.scoring: callable, 'scorers:...')."""


def same_parity(generation: str, gold: str):
    """Correct when the generation's last character and the gold have the same parity (a toy rule)."""
    digits = [c for c in generation if c.isdigit()]
    if not digits:
        return None, False
    return digits[-1], int(digits[-1]) % 2 == int(gold) % 2


def says_yes(generation: str, gold: str) -> bool:
    return generation.strip().lower() == "yes"


def broken(generation: str, gold: str):
    return "not a verdict"


NOT_CALLABLE = 3
