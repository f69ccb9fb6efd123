"""Evaluate the base model 0-shot and k-shot (in-context learning) on the config's task.

    python scripts/eval_icl.py --config configs/base.yaml --output experiments/icl_eval.json
    python scripts/eval_icl.py --config configs/base.yaml --shots 0 8 --n_samples 200 --backend vllm
    fsdistill-eval-icl ...   (the same, installed as a command)

Entries are labelled "base" (compare_evals.py calls the k-shot entry base@k), except for a model folder that
export_model.py wrote, which is labelled by its folder's name, its run's method and step (eval/targets.py).
Exemplars: k training rows drawn once with eval.icl_seed, the same for every question. Qwen3 prompts
have thinking off (enable_thinking=False reaches the template). With --teacher_forced, also the gold
answer's NLL (0-shot and k-shot prompts) and the KL from the k-shot teacher to the 0-shot model;
with eval.generate=false those alone (no generation, entries without accuracy).
"""

from __future__ import annotations

import argparse

from fsdistill.cli import add_eval_args, config_from_args, parse_eval_args
from fsdistill.errors import exit_on_user_error


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_eval_args(parser)
    parser.add_argument("--shots", type=int, nargs="+", help="Shot counts (default: eval.icl_shots).")
    parser.add_argument(
        "--condition",
        help="The entries' condition name (default: base, or an exported model's run name): another name keeps, e.g., the base model with a "
        "candidate task.system_prompt apart from the plain base model in pooled comparisons.",
    )
    return parse_eval_args(parser, argv)


@exit_on_user_error
def main(argv=None) -> None:
    args = parse(argv)
    cfg, _ = config_from_args(args)

    from fsdistill.eval.targets import model_label

    condition, method, step = model_label(cfg)
    condition = args.condition or condition
    from fsdistill.eval import evaluate as ev
    from fsdistill.eval.results import make_entry

    session = ev.open_session(cfg, "eval_icl", args.split, args.output)
    tokenizer, prompts, data = session.tokenizer, session.prompts, session.data
    todo = [k for k in cfg.eval.icl_shots if not session.has(condition, step, k)]
    if not todo:
        print(f"{args.output}: every shot count is already evaluated")
    model = None
    generator = None
    device = ev.eval_device()
    try:
        for k in todo:
            prompt_ids = ev.generation_prompts(
                prompts, data.examples, ev.icl_exemplars(data.train, k, cfg.eval.icl_seed)
            )
            texts = None  # eval.generate=false: teacher-forced metrics only
            if cfg.eval.generate and cfg.eval.backend == "vllm":
                from fsdistill.eval.generation import VLLMGenerator

                generator = generator or VLLMGenerator(
                    cfg.model.name,
                    tokenizer=cfg.model.tokenizer,
                    settings=ev.generation_settings(cfg, prompts),
                    tensor_parallel_size=cfg.eval.tensor_parallel_size,
                    dtype=cfg.model.dtype,
                    max_lora_rank=None,
                    gpu_memory_utilization=cfg.eval.gpu_memory_utilization,
                    enforce_eager=cfg.vllm.enforce_eager,
                )
                texts = generator.generate(prompt_ids)
            if (cfg.eval.generate and cfg.eval.backend == "hf") or cfg.eval.teacher_forced:
                from fsdistill.modeling.loading import load_causal_lm

                model = model or load_causal_lm(cfg.model).to(device).eval()
            if cfg.eval.generate and cfg.eval.backend == "hf":
                from fsdistill.eval.generation import generate_hf

                texts = generate_hf(
                    model, tokenizer, prompt_ids, ev.generation_settings(cfg, prompts), cfg.eval.batch_size
                )
            metrics = None
            if cfg.eval.teacher_forced:
                metrics = base_teacher_forced(cfg, prompts, data, model, tokenizer, k, device)
            entry = make_entry(
                condition,
                method,
                step,
                k,
                ev.score_examples(session.task, data.examples, texts),
                teacher_forced_metrics=metrics,
            )
            session.record(entry)
            print(ev.describe_entry(f"{condition} {k}-shot", entry))
    finally:
        if generator is not None:
            generator.close()


def base_teacher_forced(cfg, prompts, data, model, tokenizer, k, device) -> dict[str, list[float]]:
    """The base model's gold-answer NLL under a k-shot prompt (the teacher protocol's exemplars, no teacher
    context); at k=0 also the KL from the configured teacher (fewshot.k exemplars and its context; the base
    model or teacher.model) to the 0-shot model (the gap distillation closes)."""
    from fsdistill.eval import evaluate as ev

    bs, pad = cfg.eval.teacher_forced_batch_size, tokenizer.pad_token_id
    if k > 0:
        seq = ev.encode_teacher_forced(prompts.without_teacher_context(), data, k, cfg.fewshot.seed)
        on_teacher_side = ev.hf_teacher_logits(model, device)
        return {
            "nll": ev.teacher_forced_metrics(on_teacher_side, None, seq, pad, bs, device, f"nll {k}-shot")[
                "nll"
            ]
        }
    teacher_model, vocab_size = ev.teacher_forced_teacher(cfg, tokenizer, device)
    teacher_seq = ev.encode_teacher_forced(prompts, data, cfg.fewshot.k, cfg.fewshot.seed)
    return ev.teacher_forced_metrics(
        ev.hf_answer_logits(model, device),
        ev.hf_teacher_logits(teacher_model or model, device),
        teacher_seq,
        pad,
        bs,
        device,
        f"nll/kl 0-shot vs the {cfg.fewshot.k}-shot teacher",
        vocab_size,
    )


if __name__ == "__main__":
    main()
