"""Main comparison figure: base 0-shot, base k-shot ICL, SFT, SFT + few-shot distillation (Qwen3) (fsdistill.eval.figure_commands.main_fig)."""

from fsdistill.eval.figure_commands import main_fig

if __name__ == "__main__":
    main_fig()
