"""Gemma-3-270M figures: the comparison bars and an accuracy-vs-step curve of the trained conditions (fsdistill.eval.figure_commands.gemma_fig)."""

from fsdistill.eval.figure_commands import gemma_fig

if __name__ == "__main__":
    gemma_fig()
