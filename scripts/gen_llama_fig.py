"""Main comparison figure for Llama-3.2-3B-Instruct (same bars as gen_main_fig.py)."""

from __future__ import annotations

from fsdistill.errors import exit_on_user_error
from fsdistill.evaluation.figures import main_comparison


@exit_on_user_error
def main(argv=None) -> dict:
    return main_comparison(argv, "assets/llama_comparison.png", "Llama-3.2-3B-Instruct on GSM8K")


if __name__ == "__main__":
    main()
