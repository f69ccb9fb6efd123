"""Score checkpoints of runs, or one checkpoint or model folder, on the task they were trained on (0-shot
prompts), resumably.

    python scripts/eval_checkpoints.py --conditions online_v1 baseline --base_dir experiments \
        --n_samples 1319 --checkpoint_steps 200 400 600 800 1000 \
        --output experiments/online_v1_full_eval.json --tensor_parallel_size 4 [--backend hf|vllm]
    python scripts/eval_checkpoints.py --path experiments/baseline/checkpoint-1000 --output eval.json
    python scripts/eval_checkpoints.py --path exported/my-model --output eval.json [--split validation]

What is scored (eval/targets.py): --conditions names runs, found through their run.json under --base_dir
(a condition is a run's `name`, by default its output folder's name); --path names one checkpoint folder,
one run folder (its checkpoints) or one model folder (export_model.py's, or any transformers folder with
--config). Entries are labelled by run name and step, a model folder by its name. LoRA and full
fine-tuning checkpoints are told apart by the run's config.

With what: without --config, each run's own recorded config (task, prompt, template, scoring, data,
evaluation settings), with `key=value` overrides and the flags below on top; with --config, that config
(checked against each run). Settings that defined the training (task, template, data source, model) are
not overridden unless --override_run_settings asks for it, which each entry then records.

The result file is written after every checkpoint (atomically) and (condition, step) pairs already in it are
skipped, so an interrupted sweep resumes where it stopped. With --teacher_forced and eval.generate=false,
teacher-forced metrics only (no generation). --split validation scores the rows each run held out, which
must be the same rows for every run (checked).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from fsdistill.cli import add_eval_args, config_from_args, parse_eval_args
from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.eval.targets import (
    Target,
    check_targets,
    find_runs,
    folder_model_overrides,
    recorded_evaluation_config,
    resolve_condition,
    run_targets,
    targets_at,
    teacher_model,
)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_eval_args(parser)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--conditions", nargs="+", help="Run names to evaluate (found under --base_dir).")
    what.add_argument(
        "--path", help="One checkpoint-STEP folder, run folder or model folder (exported, or with --config)."
    )
    parser.add_argument(
        "--base_dir", help="With --conditions: folder searched (recursively) for run.json files."
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--checkpoint_steps", type=int, nargs="+", help="Steps to score (default: all).")
    which.add_argument(
        "--selected",
        metavar="JSON",
        help="Score each condition at the step select_checkpoints.py chose for it on the validation split.",
    )
    parser.add_argument(
        "--override_run_settings",
        action="store_true",
        help="Score runs with a task, template, data source or model other than they were trained with (from "
        "--config or overrides); each entry records the differences.",
    )
    args = parse_eval_args(parser, argv)
    if args.conditions and not args.base_dir:
        parser.error("--conditions needs --base_dir (the folder holding the runs)")
    if args.path and args.base_dir:
        parser.error("--base_dir goes with --conditions, not --path")
    return args


def steps_chooser(args):
    """steps_for(run name): the steps --checkpoint_steps or --selected name (None: every checkpoint)."""
    if not args.selected:
        return lambda name: args.checkpoint_steps
    from fsdistill.eval.select import read_selection

    selected = read_selection(args.selected)
    missing = [name for name in args.conditions or () if name not in selected]
    if missing:
        raise UserError(
            f"--selected {args.selected}: no chosen step for {missing}; it has {sorted(selected)}"
        )

    def steps_for(name: str) -> list[int]:
        if name not in selected:
            raise UserError(
                f"--selected {args.selected}: no chosen step for {name!r}; it has {sorted(selected)}"
            )
        return [selected[name]]

    return steps_for


def find_targets(args) -> list[Target]:
    steps_for = steps_chooser(args)
    if args.conditions:
        runs = find_runs(Path(args.base_dir))
        return [t for name in args.conditions for t in run_targets(resolve_condition(runs, name), steps_for)]
    targets = targets_at(Path(args.path), steps_for)
    if (args.checkpoint_steps or args.selected) and targets[0].step is not None and len(targets) == 1:
        if targets[0].folder or Path(args.path, "checkpoint.json").is_file():
            raise UserError(
                f"--path {args.path} is one model: --checkpoint_steps and --selected name a run's steps"
            )
    return targets


def evaluation_config(args, targets: list[Target]):
    """(config, what described it for messages): --config's, or the targets' own (eval/targets.py)."""
    if args.config or args.base_config:
        extra = folder_model_overrides(targets[0].path) if targets[0].folder else []
        cfg, _ = config_from_args(args, extra)
        return cfg, "--config"
    cfg, _ = recorded_evaluation_config(targets, args.overrides, "eval_checkpoints", args.split)
    return cfg, "the command line"


@exit_on_user_error
def main(argv=None) -> None:
    args = parse(argv)
    targets = find_targets(args)
    cfg, described_by = evaluation_config(args, targets)
    changed = check_targets(cfg, targets, described_by, args.split, args.override_run_settings)
    sweep(cfg, args, targets, changed)


def sweep(cfg, args, targets: list[Target], changed: dict) -> None:
    from fsdistill.eval import evaluate as ev
    from fsdistill.eval.results import make_entry

    session = ev.open_session(cfg, "eval_checkpoints", args.split, args.output)
    prompts, data = session.prompts, session.data
    prompt_ids = ev.generation_prompts(prompts, data.examples, [])
    teacher_seq = (
        ev.encode_teacher_forced(prompts, data, cfg.fewshot.k, cfg.fewshot.seed)
        if cfg.eval.teacher_forced
        else None
    )
    evaluator = CheckpointEvaluator(cfg, prompts, prompt_ids, teacher_seq)
    try:
        for target in targets:
            if session.has(target.condition, target.step, 0):
                print(f"{target.label}: already in {args.output}, skipped")
                continue
            texts, metrics = evaluator.evaluate(target)
            entry = make_entry(
                target.condition,
                target.method,
                target.step,
                0,
                ev.score_examples(session.task, data.examples, texts),
                checkpoint=str(target.path),
                teacher_forced_metrics=metrics,
                run_overrides=changed[target],
            )
            session.record(entry)
            print(ev.describe_entry(target.label, entry))
            for key, change in changed[target].items():
                print(f"  scored with {key}={change['evaluated']!r} (trained with {change['run']!r})")
    finally:
        evaluator.close()


class CheckpointEvaluator:
    """Generates with the configured backend and computes teacher-forced metrics with transformers."""

    def __init__(self, cfg, prompts, prompt_ids, teacher_seq):
        from fsdistill.eval import evaluate as ev

        self.cfg, self.tokenizer, self.prompt_ids, self.teacher_seq = (
            cfg,
            prompts.tokenizer,
            prompt_ids,
            teacher_seq,
        )
        self.settings = ev.generation_settings(cfg, prompts)
        self.device = ev.eval_device()
        # vLLM: one engine at a time (each takes gpu_memory_utilization of the GPU), kept while LoRA
        # checkpoints of the same base model follow; a full fine-tuning checkpoint needs its own.
        self.engines: dict[tuple, object] = {}
        self.views: list = []  # the temporary model folders of full fine-tuning engines (vllm_model_view)
        self.frozen_base = None  # full fine-tuning: the base model, the teacher of teacher-forced KL
        # teacher.model: the configured teacher of teacher-forced KL (loaded once), and the shared ids.
        self.teacher_model, self.vocab_size = None, None
        if teacher_seq is not None:
            self.teacher_model, self.vocab_size = ev.teacher_forced_teacher(cfg, self.tokenizer, self.device)

    def generate_vllm(self, target: Target, run_cfg) -> list[str]:
        from fsdistill.eval.generation import VLLMGenerator
        from fsdistill.train.checkpoint import checkpoint_model_folder

        lora = not target.folder and run_cfg.training.use_lora
        # A model folder's tokenizer is the evaluation's (its own, when it holds one); a full fine-tuning
        # checkpoint carries its tokenizer.
        m = run_cfg.model
        # A checkpoint is checked, and consolidated when sharded; a model folder is loaded as it is.
        folder = target.path if target.folder else checkpoint_model_folder(target.path, run_cfg)
        # The adapter's rank is part of a LoRA engine's key: vLLM refuses adapters above max_lora_rank.
        key = ("lora", m.name, m.tokenizer, m.dtype, run_cfg.lora.r) if lora else ("full", str(folder))
        if key not in self.engines:
            self.close()  # free the GPU before the next engine: two engines need twice the memory
            model = None if lora else vllm_model_view(folder)
            self.views += [model] if model else []
            self.engines[key] = VLLMGenerator(
                m.name if lora else model.name,
                tokenizer=m.tokenizer
                if lora
                else (self.cfg.model.tokenizer or model.name)
                if target.folder
                else model.name,
                settings=self.settings,
                tensor_parallel_size=self.cfg.eval.tensor_parallel_size,
                dtype=m.dtype,
                max_lora_rank=run_cfg.lora.r if lora else None,
                gpu_memory_utilization=self.cfg.eval.gpu_memory_utilization,
                enforce_eager=self.cfg.vllm.enforce_eager,
            )
        return self.engines[key].generate(self.prompt_ids, lora_path=str(folder) if lora else None)

    def evaluate(self, target: Target) -> tuple[list[str] | None, dict | None]:
        """(generated texts, or None with eval.generate=false; teacher-forced metrics or None)."""
        import gc

        import torch

        from fsdistill.eval import evaluate as ev
        from fsdistill.eval.generation import generate_hf
        from fsdistill.modeling.loading import load_causal_lm

        # A plain model folder records no config: the evaluation's describes it. The weights load in the
        # evaluation's dtype (model.dtype is an evaluation setting; the run's by default).
        run_cfg = with_dtype(target.run_config() or self.cfg, self.cfg.model.dtype)
        generate = self.cfg.eval.generate
        texts = self.generate_vllm(target, run_cfg) if generate and self.cfg.eval.backend == "vllm" else None
        if texts is not None and self.teacher_seq is None:
            return texts, None
        model = load_target_model(target, run_cfg).to(self.device).eval()
        if generate and texts is None:
            texts = generate_hf(
                model, self.tokenizer, self.prompt_ids, self.settings, self.cfg.eval.batch_size
            )
        metrics = None
        if self.teacher_seq is not None:
            if self.teacher_model is not None:
                teacher = ev.hf_teacher_logits(self.teacher_model, self.device)
            elif not target.folder and run_cfg.training.use_lora:
                teacher = ev.hf_teacher_logits(model, self.device, adapter_off=model.disable_adapter)
            else:
                base = dataclasses.replace(teacher_model(target, self.cfg), dtype=self.cfg.model.dtype)
                self.frozen_base = self.frozen_base or load_causal_lm(base).to(self.device).eval()
                teacher = ev.hf_teacher_logits(self.frozen_base, self.device)
            metrics = ev.teacher_forced_metrics(
                ev.hf_answer_logits(model, self.device),
                teacher,
                self.teacher_seq,
                self.tokenizer.pad_token_id,
                self.cfg.eval.teacher_forced_batch_size,
                self.device,
                f"teacher-forced {target.label}",
                self.vocab_size,
            )
        del model
        if self.cfg.eval.backend == "vllm":
            # The next vLLM engine claims gpu_memory_utilization of the GPU: hand back what torch holds.
            self.frozen_base = None
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return texts, metrics

    def close(self) -> None:
        for engine in self.engines.values():
            engine.close()
        self.engines.clear()
        for view in self.views:
            view.cleanup()
        self.views.clear()


def is_model_weights_file(name: str) -> bool:
    """transformers' names for a model's weights: model.safetensors, or model-00001-of-00002.safetensors
    with model.safetensors.index.json."""
    return re.fullmatch(r"model(-\d+-of-\d+)?\.safetensors", name) is not None


def vllm_model_view(folder: Path):
    """A temporary folder of links to a full fine-tuning checkpoint's model files, for a vLLM engine.

    vLLM loads every *.safetensors file in a model folder (it filters by model.safetensors.index.json only
    when there is one), and a checkpoint also holds this project's optimizer and RNG states as safetensors:
    the view links every file but those. Returns a TemporaryDirectory (its .name the folder; cleanup()
    removes the links, never the checkpoint's files)."""
    import tempfile

    view = tempfile.TemporaryDirectory(prefix="fsdistill-vllm-model-")
    for file in folder.iterdir():
        if file.is_file() and (file.suffix != ".safetensors" or is_model_weights_file(file.name)):
            (Path(view.name) / file.name).symlink_to(file.resolve())
    return view


def with_dtype(cfg, dtype: str):
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype=dtype))


def load_target_model(target: Target, run_cfg):
    """A checkpoint's model (base + adapter, or its full weights; checksums verified), or a model folder's
    weights (safetensors only: nothing in a folder is unpickled), in run_cfg's model.dtype."""
    if target.folder:
        from fsdistill.modeling.loading import load_pretrained_folder

        return load_pretrained_folder(target.path, run_cfg.model.dtype)
    from fsdistill.train.checkpoint import load_checkpoint_model

    return load_checkpoint_model(target.path, run_cfg)


if __name__ == "__main__":
    main()
