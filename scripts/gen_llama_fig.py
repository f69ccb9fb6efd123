"""Main comparison figure for Llama-3.2-3B-Instruct (same bars as gen_main_fig.py) (fsdistill.eval.figure_commands.llama_fig)."""

from fsdistill.eval.figure_commands import llama_fig

if __name__ == "__main__":
    llama_fig()
