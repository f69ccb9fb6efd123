"""Bar chart of an experiment summary: references and each method's seeds (fsdistill.eval.figure_commands)."""

from fsdistill.eval.figure_commands import summary_fig

if __name__ == "__main__":
    summary_fig()
