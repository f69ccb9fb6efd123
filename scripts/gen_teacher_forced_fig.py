"""Teacher-forced metrics (gold-answer NLL, KL to the k-shot teacher) vs. training step, from result JSON (fsdistill.eval.figure_commands.teacher_forced_fig)."""

from fsdistill.eval.figure_commands import teacher_forced_fig

if __name__ == "__main__":
    teacher_forced_fig()
