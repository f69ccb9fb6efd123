"""Training-loss curves of several runs, read from each run folder's metrics.jsonl (fsdistill.eval.figure_commands.loss_fig)."""

from fsdistill.eval.figure_commands import loss_fig

if __name__ == "__main__":
    loss_fig()
