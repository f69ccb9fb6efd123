"""Gemma-3-270M figures: the comparison bars and an accuracy-vs-step curve of the trained conditions.

Pass the 0-shot-teacher KD control with ``--extra NAME:LABEL``.
"""

from __future__ import annotations

from fsdistill.errors import exit_on_user_error
from fsdistill.evaluation.figures import main_comparison


@exit_on_user_error
def main(argv=None) -> dict:
    return main_comparison(
        argv,
        "assets/gemma_comparison.png",
        "Gemma-3-270M on GSM8K",
        default_curve_out="assets/gemma_curve.png",
    )


if __name__ == "__main__":
    main()
