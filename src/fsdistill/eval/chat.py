"""Talk to a model with the prompt it was trained on: a run's checkpoint, an exported model, a base model.

    fsdistill-chat --path runs/sft/checkpoint-100      # a terminal: ask, read the answer, ask again
    fsdistill-chat --path runs/sft                     # the run's latest checkpoint (--step N: another)
    echo "What is (3 + 4) * 5?" | fsdistill-chat --path exported/twostep-distill --jsonl
    fsdistill-chat --config configs/twostep/sft.yaml   # the config's base model

Each input line is one question. The prompt is the one training and evaluation build: the task's user
turn (task.question_template with the line as {question}), the run's system prompt and chat template;
generation is greedy with the task's length limit, stop tokens and stop strings, through the very
function the evaluation's hf backend uses, so an answer here is the answer evaluation scored. With
--temperature > 0 it samples instead (seeded: --seed, plus the question's number).

The settings come from the checkpoint's or export's recorded config, as in eval_checkpoints.py: `key=value`
overrides may change evaluation settings (task.max_new_tokens, model.dtype, ...); a different task,
template or data source needs --override_run_settings. A base model or a plain transformers folder needs
--config.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fsdistill.cli import config_from_args
from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.eval.targets import (
    Target,
    check_targets,
    folder_model_overrides,
    recorded_evaluation_config,
    targets_at,
)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--path", help="A checkpoint-STEP folder, a run folder (its latest checkpoint) or a model folder."
    )
    parser.add_argument(
        "--step", type=int, help="With a run folder: the checkpoint step (default: the latest)."
    )
    parser.add_argument(
        "--config",
        help="The config of a base model or plain model folder; else it replaces the recorded one.",
    )
    parser.add_argument("--base_config", help="A YAML config loaded before --config.")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="Config overrides, applied last."
    )
    parser.add_argument(
        "--jsonl", action="store_true", help='One {"question", "answer"} JSON line per answer.'
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; > 0: sample.")
    parser.add_argument("--top_p", type=float, default=1.0, help="Nucleus sampling (with --temperature > 0).")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed (with --temperature > 0).")
    parser.add_argument(
        "--override_run_settings",
        action="store_true",
        help="Allow another task, template, data source or model than the checkpoint was trained with.",
    )
    args = parser.parse_intermixed_args(argv)
    if not args.path and not (args.config or args.base_config):
        parser.error("give --path (a checkpoint, run or model folder) or --config (its base model)")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        parser.error("--temperature must be >= 0 and --top_p in (0, 1]")
    return args


def chat_target(args) -> tuple[Target | None, object]:
    """(the model to talk to, or None for the config's base model; the config its prompt comes from)."""
    if not args.path:
        cfg, _ = config_from_args(args)
        return None, cfg
    targets = targets_at(Path(args.path), lambda name: [args.step] if args.step is not None else None)
    target = targets[-1]  # a run folder: its latest checkpoint, or --step's
    if args.config or args.base_config:
        cfg, _ = config_from_args(args, folder_model_overrides(target.path) if target.folder else [])
        described_by = "--config"
    else:
        cfg, _ = recorded_evaluation_config([target], args.overrides, "chat", "test")
        described_by = "the command line"
    check_targets(cfg, [target], described_by, "test", args.override_run_settings)
    return target, cfg


class Chat:
    """A loaded model and its prompt builder: answer(question) -> the model's text."""

    def __init__(self, target: Target | None, cfg, args):
        from fsdistill.data.prompts import PromptBuilder, load_tokenizer
        from fsdistill.eval import evaluate as ev

        self.cfg, self.args = cfg, args
        self.tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
        self.prompts = PromptBuilder.from_config(self.tokenizer, cfg)
        if self.prompts.task.other_fields:
            raise UserError(
                f"task.question_template {cfg.task.question_template!r} reads the row's fields "
                f"{self.prompts.task.other_fields} besides {{question}}; chat fills {{question}} with each line "
                "only: give a template of {question} alone (task.question_template=..., with "
                "--override_run_settings for a trained model)"
            )
        self.settings = ev.generation_settings(cfg, self.prompts)
        self.device = ev.eval_device()
        self.model = self.load(target).to(self.device).eval()
        self.asked = 0

    def load(self, target: Target | None):
        from fsdistill.eval.checkpoints import load_target_model, with_dtype
        from fsdistill.modeling.loading import load_causal_lm

        if target is None:
            return load_causal_lm(self.cfg.model)
        return load_target_model(target, with_dtype(target.run_config() or self.cfg, self.cfg.model.dtype))

    def prompt_ids(self, question: str) -> list[int]:
        from fsdistill.tasks import Example

        return self.prompts.generation_prompt_ids(Example(self.asked, question, None, None), [])

    def answer(self, question: str) -> str:
        from fsdistill.eval.generation import generate_hf

        ids = self.prompt_ids(question)
        self.asked += 1
        if self.args.temperature == 0:
            return generate_hf(self.model, self.tokenizer, [ids], self.settings, 1, progress=False)[0]
        return self.sample(ids)

    def sample(self, ids: list[int]) -> str:
        from fsdistill.eval.generation import cut_at_stop, cut_at_stop_strings, pad_token_id_for
        from fsdistill.modeling.generation import SamplingSettings, sample_hf

        s = self.settings
        sampling = SamplingSettings(
            self.args.temperature, self.args.top_p, 0, s.max_new_tokens, s.stop_token_ids
        )
        (new,) = sample_hf(
            self.model, [ids], sampling, pad_token_id_for(self.tokenizer), self.args.seed + self.asked
        )
        text = self.tokenizer.decode(cut_at_stop(new, s.stop_token_ids), skip_special_tokens=True)
        return cut_at_stop_strings(text, s.stop_strings)


def questions(interactive: bool):
    """Non-empty input lines; in a terminal with a prompt, until Ctrl-D (or Ctrl-C)."""
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and not line:
            return
        if line.strip():
            yield line.rstrip("\r\n")  # the question as typed: no other whitespace is dropped


@exit_on_user_error
def main(argv=None) -> None:
    args = parse(argv)
    target, cfg = chat_target(args)
    chat = Chat(target, cfg, args)
    interactive = sys.stdin.isatty()
    if interactive:
        what = target.label if target is not None else f"{cfg.model.name} (base model)"
        mode = "greedy" if args.temperature == 0 else f"sampling at temperature {args.temperature:g}"
        print(
            f"{what}: each line is a question, asked as {cfg.task.question_template!r} ({mode}); Ctrl-D ends",
            file=sys.stderr,
        )
    for question in questions(interactive):
        text = chat.answer(question)
        print(json.dumps({"question": question, "answer": text}, ensure_ascii=False) if args.jsonl else text)
        if interactive and not args.jsonl:
            print()
        sys.stdout.flush()
