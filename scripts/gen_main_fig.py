"""Main comparison figure: base 0-shot, base k-shot ICL, SFT, SFT + few-shot distillation (Qwen3)."""

from __future__ import annotations

from fsdistill.errors import exit_on_user_error
from fsdistill.evaluation.figures import main_comparison


@exit_on_user_error
def main(argv=None) -> dict:
    return main_comparison(argv, "assets/main_comparison.png", "Qwen3-1.7B on GSM8K")


if __name__ == "__main__":
    main()
