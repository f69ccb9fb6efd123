"""Ablation figures: accuracy vs. step of each condition, and each condition's best checkpoint (fsdistill.eval.figure_commands.ablation_fig)."""

from fsdistill.eval.figure_commands import ablation_fig

if __name__ == "__main__":
    ablation_fig()
