"""Score every checkpoint of one or more runs on the config's task (0-shot prompts), resumably.

    python scripts/eval_checkpoints.py --config configs/base.yaml --n_samples 1319 \
        --conditions online_v1 baseline --base_dir experiments --checkpoint_steps 200 400 600 800 1000 \
        --output experiments/online_v1_full_eval.json --tensor_parallel_size 4 [--backend hf|vllm]

Runs are found through their run.json under --base_dir; a condition is a run's `name` (default: its
output folder's name). LoRA and full fine-tuning checkpoints are told apart by the run's config. The
result file is written after every checkpoint (atomically) and (condition, step) pairs already in it are
skipped, so an interrupted sweep resumes where it stopped. With --teacher_forced and eval.generate=false,
teacher-forced metrics only (no generation). --split validation needs --config to hold out the same
rows as each run (data source, size, seed), which is checked.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from fsdistill.cli import add_eval_args, config_from_args, parse_eval_args
from fsdistill.errors import UserError, exit_on_user_error

# config_identity patterns: what a run and --config must share. The base model (its name, init and
# architecture) for every sweep; with --split validation also what decides which training rows were held
# out (tasks.rows.training_rows), or rows the run trained on would be scored as "validation".
SAME_BASE_MAY_DIFFER = ("*", "!model.name", "!model.init", "!model.architecture")
SAME_VALIDATION_MAY_DIFFER = (
    "*",
    "!data.source",
    "!data.hub_config",
    "!data.train_split",
    "!data.max_train_examples",
    "!data.validation_size",
    "!data.validation_split",
    "!training.seed",
)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_eval_args(parser)
    parser.add_argument("--conditions", nargs="+", required=True, help="Run names to evaluate.")
    parser.add_argument("--base_dir", required=True, help="Folder searched (recursively) for run.json files.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--checkpoint_steps", type=int, nargs="+", help="Steps to score (default: all).")
    which.add_argument(
        "--selected",
        metavar="JSON",
        help="Score each condition at the step select_checkpoints.py chose for it on the validation split.",
    )
    return parse_eval_args(parser, argv)


def find_runs(base_dir: Path) -> dict[str, list[Path]]:
    """run name -> run folders holding a run.json with that name."""
    if not base_dir.is_dir():
        raise UserError(f"--base_dir {base_dir}: no such folder")
    runs: dict[str, list[Path]] = {}
    for manifest in sorted(base_dir.rglob("run.json")):
        try:
            name = json.loads(manifest.read_text())["name"]
        except (json.JSONDecodeError, KeyError) as e:
            raise UserError(f"{manifest}: not a run manifest ({e})") from None
        runs.setdefault(name, []).append(manifest.parent)
    return runs


def resolve_condition(runs: dict[str, list[Path]], name: str) -> Path:
    found = runs.get(name, [])
    if len(found) == 1:
        return found[0]
    listing = (
        "\n    ".join(f"{n}: {', '.join(map(str, dirs))}" for n, dirs in sorted(runs.items())) or "(none)"
    )
    problem = "matches no run" if not found else f"is ambiguous ({len(found)} runs carry it)"
    raise UserError(f"condition '{name}' {problem}; runs found:\n    {listing}")


def run_checkpoints(run_dir: Path, steps: list[int] | None) -> list[tuple[int, Path]]:
    from fsdistill.train.checkpoint import list_checkpoints

    have = list_checkpoints(run_dir)
    if not have:
        raise UserError(
            f"{run_dir}: the run has no complete checkpoint (checkpoint-STEP/ with checkpoint.json)"
        )
    if steps is None:
        return have
    by_step = dict(have)
    missing = [s for s in steps if s not in by_step]
    if missing:
        raise UserError(f"{run_dir}: no checkpoint for steps {missing}; it has {sorted(by_step)}")
    return [(s, by_step[s]) for s in steps]


def check_same(cfg, run_cfg, run_dir: Path, may_differ: tuple[str, ...], problem: str) -> None:
    """Refuse a run whose config differs from --config on what `may_differ` keeps."""
    from fsdistill.config import config_identity, identity_differences

    diffs = identity_differences(
        config_identity(run_cfg, may_differ), config_identity(cfg, may_differ), "run", "--config"
    )
    if diffs:
        raise UserError(f"{run_dir} {problem}:\n    " + "\n    ".join(diffs))


@exit_on_user_error
def main(argv=None) -> None:
    args = parse(argv)
    cfg, _ = config_from_args(args)
    from fsdistill.config import from_dict

    runs = find_runs(Path(args.base_dir))
    selected = None
    if args.selected:
        from fsdistill.eval.select import read_selection

        selected = read_selection(args.selected)
        missing = [name for name in args.conditions if name not in selected]
        if missing:
            raise UserError(
                f"--selected {args.selected}: no chosen step for {missing}; it has {sorted(selected)}"
            )
    plan = []
    for name in args.conditions:
        run_dir = resolve_condition(runs, name)
        manifest = json.loads((run_dir / "run.json").read_text())
        missing = [k for k in ("method", "config") if k not in manifest]
        if missing:
            raise UserError(f"{run_dir / 'run.json'}: not a run manifest (no {', '.join(missing)})")
        run_cfg = from_dict(manifest["config"], f"{run_dir / 'run.json'} (config)")
        check_same(
            cfg,
            run_cfg,
            run_dir,
            SAME_BASE_MAY_DIFFER,
            "was trained from another base model than --config describes",
        )
        if args.split == "validation":
            # training.seed draws the held-out rows only when they are held out of the training split.
            seed = () if cfg.data.validation_size else ("training.seed",)
            check_same(
                cfg,
                run_cfg,
                run_dir,
                SAME_VALIDATION_MAY_DIFFER + seed,
                "held out other rows than --config describes, so its training rows could be scored as validation (--split validation)",
            )
        steps = [selected[name]] if selected is not None else args.checkpoint_steps
        plan.append((name, manifest["method"], run_cfg, run_checkpoints(run_dir, steps)))
    sweep(cfg, args, plan)


def sweep(cfg, args, plan) -> None:
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
        for name, method, run_cfg, checkpoints in plan:
            for step, path in checkpoints:
                if session.has(name, step, 0):
                    print(f"{name} step {step}: already in {args.output}, skipped")
                    continue
                texts, metrics = evaluator.evaluate(run_cfg, path)
                entry = make_entry(
                    name,
                    method,
                    step,
                    0,
                    ev.score_examples(session.task, data.examples, texts),
                    checkpoint=str(path),
                    teacher_forced_metrics=metrics,
                )
                session.record(entry)
                print(ev.describe_entry(f"{name} step {step}", entry))
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

    def generate_vllm(self, run_cfg, path: Path) -> list[str]:
        from fsdistill.eval.generation import VLLMGenerator
        from fsdistill.train.checkpoint import checkpoint_model_folder

        lora = run_cfg.training.use_lora
        m = run_cfg.model
        folder = checkpoint_model_folder(path, run_cfg)  # checked; consolidated when sharded
        # The adapter's rank is part of a LoRA engine's key: vLLM refuses adapters above max_lora_rank.
        key = ("lora", m.name, m.tokenizer, m.dtype, run_cfg.lora.r) if lora else ("full", str(folder))
        if key not in self.engines:
            self.close()  # free the GPU before the next engine: two engines need twice the memory
            model = None if lora else vllm_model_view(folder)
            self.views += [model] if model else []
            self.engines[key] = VLLMGenerator(
                run_cfg.model.name if lora else model.name,
                tokenizer=run_cfg.model.tokenizer if lora else model.name,
                settings=self.settings,
                tensor_parallel_size=self.cfg.eval.tensor_parallel_size,
                dtype=run_cfg.model.dtype,
                max_lora_rank=run_cfg.lora.r if lora else None,
                gpu_memory_utilization=self.cfg.eval.gpu_memory_utilization,
                enforce_eager=self.cfg.vllm.enforce_eager,
            )
        return self.engines[key].generate(self.prompt_ids, lora_path=str(folder) if lora else None)

    def evaluate(self, run_cfg, path: Path) -> tuple[list[str] | None, dict | None]:
        """(generated texts, or None with eval.generate=false; teacher-forced metrics or None)."""
        import gc

        import torch

        from fsdistill.eval import evaluate as ev
        from fsdistill.eval.generation import generate_hf
        from fsdistill.modeling.loading import load_causal_lm
        from fsdistill.train.checkpoint import load_checkpoint_model

        generate = self.cfg.eval.generate
        texts = self.generate_vllm(run_cfg, path) if generate and self.cfg.eval.backend == "vllm" else None
        if texts is not None and self.teacher_seq is None:
            return texts, None
        model = load_checkpoint_model(path, run_cfg).to(self.device).eval()
        if generate and texts is None:
            texts = generate_hf(
                model, self.tokenizer, self.prompt_ids, self.settings, self.cfg.eval.batch_size
            )
        metrics = None
        if self.teacher_seq is not None:
            if run_cfg.training.use_lora:
                teacher = ev.hf_teacher_logits(model, self.device, adapter_off=model.disable_adapter)
            else:
                self.frozen_base = self.frozen_base or load_causal_lm(run_cfg.model).to(self.device).eval()
                teacher = ev.hf_teacher_logits(self.frozen_base, self.device)
            metrics = ev.teacher_forced_metrics(
                ev.hf_answer_logits(model, self.device),
                teacher,
                self.teacher_seq,
                self.tokenizer.pad_token_id,
                self.cfg.eval.teacher_forced_batch_size,
                self.device,
                f"teacher-forced {path.name}",
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


if __name__ == "__main__":
    main()
