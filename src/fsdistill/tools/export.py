"""Export a trained checkpoint as a plain transformers model folder: LoRA merged into the weights, the
tokenizer with the chat template the run trained with, a generation config that decodes as evaluation
does. The folder loads with AutoModelForCausalLM / AutoTokenizer alone: no peft, no fsdistill.

The prompt travels with it: the saved chat template holds the run's template variables
(model.chat_template_kwargs, e.g. Qwen3's enable_thinking=false) as defaults and its system prompt
(task.system_prompt) as the default system turn, so `apply_chat_template([{"role": "user", "content":
TURN}], add_generation_prompt=True)` gives the very prompt ids evaluation builds, when TURN is the task's
user turn (task.question_template filled with the row; a chat template cannot hold it, export.json records
it). generation_config.json decodes greedily (do_sample false, the sampling fields unset), stops at eos
and the template's end-of-turn token (eos_token_id: plain generate() needs a tokenizer for stop strings)
and generates at most task.max_new_tokens; export.json lists each change made to the base model's.

    python scripts/export_model.py --checkpoint experiments/twostep/runs/distill_seed1/checkpoint-100 \
        --out exported/twostep-distill [--dtype bfloat16] [--overwrite] [--push_to_hub USER/NAME [--private]]

The merge runs in float32 (base weights and adapter), then the merged weights are cast to --dtype (default:
the run's model.dtype), so the only rounding is the final cast. The checkpoint's own config.yaml says how
it was trained (base model, LoRA or full fine-tuning); its weights are read from safetensors only (nothing
is unpickled). The folder is written under a temporary name and renamed when complete. export.json records
what was exported from where.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
from datetime import datetime, timezone
from pathlib import Path

from fsdistill.config import to_dict
from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.files import (
    contained,
    describe_files,
    git_state,
    install_folder,
    listed_unchanged,
    new_folder_beside,
    remove_made_folder,
    replaceable_folder,
    write_json_atomic,
)
from fsdistill.train.run_dir import MODEL_FILES

DTYPES = ("float32", "bfloat16", "float16")
EXPORT_RECORD = "export.json"
# The fields of an export.json written before exports listed their files.
EARLIER_EXPORT_FIELDS = {"checkpoint", "step", "merged_lora", "dtype", "base_model"}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint-STEP folder")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument(
        "--dtype", choices=DTYPES, help="weights' dtype in the folder (default: the run's model.dtype)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--push_to_hub", metavar="REPO_ID", help="also upload the folder to this Hub model repo")
    p.add_argument("--private", action="store_true", help="with --push_to_hub: create the repo private")
    return p.parse_args(argv)


def merged_model(checkpoint: Path, cfg):
    """The checkpoint's CausalLM in float32 with any LoRA adapter merged into its weights (no peft left)."""
    from fsdistill.train.checkpoint import check_checkpoint_matches, load_checkpoint_model

    if not cfg.training.use_lora:
        return load_checkpoint_model(checkpoint, cfg).float()
    import peft

    from fsdistill.modeling.loading import load_causal_lm

    check_checkpoint_matches(checkpoint, cfg)
    base = load_causal_lm(dataclasses.replace(cfg.model, dtype="float32", gradient_checkpointing=False))
    model = peft.PeftModel.from_pretrained(base, str(checkpoint))
    return model.merge_and_unload()


def export_checkpoint(
    checkpoint: str | Path, out: str | Path, dtype: str | None = None, overwrite: bool = False
) -> Path:
    """Write the plain model folder `out` for `checkpoint` (see the module docstring); returns `out`."""
    import torch

    from fsdistill.train.checkpoint import saved_config
    from fsdistill.train.run_dir import checkpoint_step

    checkpoint, out = Path(checkpoint), Path(out)
    if not (checkpoint / "checkpoint.json").is_file():
        raise UserError(
            f"--checkpoint {checkpoint}: not a checkpoint folder of this project (no checkpoint.json)"
        )
    ours = exported_files(out, overwrite)
    cfg = saved_config(checkpoint)
    dtype = dtype or cfg.model.dtype
    model = merged_model(checkpoint, cfg).to(getattr(torch, dtype)).eval()

    tokenizer, prompts = exported_tokenizer(cfg)
    model.generation_config, generation_changes = evaluation_generation_config(cfg, model, tokenizer, prompts)
    meta = json.loads((checkpoint / "checkpoint.json").read_text())

    tmp = new_folder_beside(out)
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        write_json_atomic(
            tmp / EXPORT_RECORD,
            {
                "checkpoint": str(checkpoint.resolve()),
                "step": checkpoint_step(checkpoint),
                "run_name": meta.get("name"),
                "method": meta.get("method"),
                "merged_lora": cfg.training.use_lora,
                "dtype": dtype,
                "base_model": cfg.model.name,
                "prompt": prompt_record(cfg, prompts),
                "generation_config_changes": generation_changes,
                "run_config": to_dict(cfg),
                "exported_with": git_state(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                # What makes a later --overwrite delete exactly these files, unchanged, and nothing else.
                "files": describe_files(tmp),
            },
        )
        install_export(tmp, out, ours)
    finally:
        remove_made_folder(tmp.parent, tmp.name)  # already gone once installed
    return out


def exported_files(out: Path, overwrite: bool) -> list[str]:
    """The files of an existing --out that this command wrote, which the new export replaces; UserError
    (nothing deleted) for a folder it cannot show to be an export. Ownership is not taken from a name: the
    folder's export.json must list its files with their sizes and sha256, and each must be unchanged; an
    export.json of an earlier version (which listed no files) stands for the names an export writes."""
    if os.path.lexists(out) and not overwrite:
        raise UserError(f"--out {out} exists; pass --overwrite to replace it (nothing was written)")
    if not replaceable_folder(out, lambda folder: (folder / EXPORT_RECORD).is_file()):
        # --overwrite replaces only what this command wrote: never a folder of someone else's files.
        raise UserError(
            f"--out {out} is not a folder this command exported (no export.json); it is left as it is: "
            "choose another --out"
        )
    if not (out / EXPORT_RECORD).is_file():
        return []  # absent or empty
    record = out / EXPORT_RECORD
    try:
        manifest = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"{record}: not the record this command writes ({e}); nothing was deleted") from None
    if isinstance(manifest, dict) and "files" in manifest:
        ours = listed_unchanged(out, manifest["files"], record)
    elif isinstance(manifest, dict) and EARLIER_EXPORT_FIELDS <= manifest.keys():
        ours = [p.name for p in out.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in MODEL_FILES)]
    else:
        raise UserError(
            f"{record}: does not list the files the export wrote (their sizes and sha256), so nothing in "
            f"{out} can be shown to be this command's: it is left as it is; choose another --out"
        )
    for name in (*ours, EXPORT_RECORD):  # a link among them is refused now, before the export's work
        contained(out, name)
    return [*ours, EXPORT_RECORD]


def install_export(tmp: Path, out: Path, ours: list[str]) -> None:
    """The finished export in the place of --out: the old export's own files replaced, any other file left
    where it is, and said so."""
    kept = install_folder(tmp, out, ours, last=EXPORT_RECORD)
    if kept:
        print(f"kept in {out}, not written by the export and left where they are: {', '.join(kept)}")


# Fields only sampling reads: a greedy GenerationConfig must leave them unset (transformers refuses to save
# do_sample=False beside a temperature, top_p, ...).
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff")


def exported_tokenizer(cfg):
    """(tokenizer, prompt builder) of an export: the run's tokenizer whose chat template carries what the
    run trained with (its template, template variables and system prompt: template_with_defaults)."""
    from fsdistill.data.prompts import PromptBuilder, load_tokenizer

    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.name)
    prompts = PromptBuilder.for_template(tokenizer, cfg)
    tokenizer.chat_template = template_with_defaults(
        prompts.template_text(), prompts.template_kwargs, cfg.task.system_prompt
    )
    return tokenizer, prompts


def template_with_defaults(template: str, variables: dict, system_prompt: str | None) -> str:
    """The Jinja chat template with the run's template variables set as defaults (a caller may still pass
    its own) and, when the task has one, its system prompt as the system turn of a conversation that opens
    without one: rendered with no extra arguments, it gives the prompt the run trained and evaluated on."""
    lines = []
    for name, value in sorted(variables.items()):
        if not name.isidentifier():
            raise UserError(f"model.chat_template_kwargs: {name!r} is not a template variable name")
        lines.append(
            f"{{%- if {name} is not defined %}}{{%- set {name} = {jinja_literal(name, value)} %}}{{%- endif %}}"
        )
    if system_prompt is not None:
        system = jinja_literal("task.system_prompt", system_prompt)
        lines.append(
            "{%- if not messages or messages[0]['role'] != 'system' %}"
            f"{{%- set messages = [{{'role': 'system', 'content': {system}}}] + messages %}}{{%- endif %}}"
        )
    return "".join(lines) + template


def jinja_literal(name: str, value) -> str:
    """A bool, number or string as a Jinja literal (Jinja reads a string's escapes as Python does)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise UserError(
        f"{name}: cannot write {value!r} into the exported chat template (only text, numbers, true/false)"
    )


def evaluation_generation_config(cfg, model, tokenizer, prompts):
    """(GenerationConfig, {field: [before, after]}): the base model's generation config (or one from its
    model config) made to decode as evaluation does: greedy, at most task.max_new_tokens, stopping at eos,
    the template's end-of-turn token and the model's own eos ids."""
    from fsdistill.eval.generation import load_generation_config, stop_token_ids_for

    generation = load_generation_config(cfg.model.tokenizer, cfg.model.name)
    if generation is None:
        from transformers import GenerationConfig

        generation = GenerationConfig.from_model_config(model.config)
    wanted = {
        "do_sample": False,
        **{name: None for name in SAMPLING_FIELDS if getattr(generation, name, None) is not None},
        "max_new_tokens": cfg.task.max_new_tokens,
        "eos_token_id": list(stop_token_ids_for(tokenizer, prompts.end_of_turn_ids(), generation)),
        "pad_token_id": tokenizer.pad_token_id,
    }
    if getattr(generation, "num_beams", None) not in (None, 1):
        wanted["num_beams"] = 1
    changes = {}
    for name, value in wanted.items():
        before = getattr(generation, name, None)
        if before != value:
            changes[name] = [before, value]
        setattr(generation, name, value)
    return generation, changes


def prompt_record(cfg, prompts) -> dict:
    """What export.json says about the prompt: what a user must put in the user turn (the chat template
    cannot), what the saved template now holds, and the stop strings generate() cannot apply alone."""
    return {
        "user_turn": cfg.task.question_template,
        "system_prompt": cfg.task.system_prompt,
        "template_variables": dict(prompts.template_kwargs),
        "stop_strings": list(cfg.task.stop_strings),
        "note": "apply_chat_template([{'role': 'user', 'content': user_turn filled with the row}], "
        "add_generation_prompt=True) gives the prompt the model was trained and evaluated on; the template "
        "variables and system prompt are the saved chat template's defaults; stop_strings, if any, must be "
        "applied by the caller (generate(stop_strings=..., tokenizer=...))",
    }


def push_folder(folder: Path, repo_id: str, private: bool) -> str:
    """Upload the exported folder to a Hub model repo (created if needed); returns the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model")
    return str(url)


@exit_on_user_error
def main(argv=None) -> Path:
    args = parse(argv)
    if args.push_to_hub and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise UserError("--push_to_hub needs the Hub, but HF_HUB_OFFLINE is set (nothing was written)")
    out = export_checkpoint(args.checkpoint, args.out, args.dtype, args.overwrite)
    print(f"wrote {out}: loads with AutoModelForCausalLM.from_pretrained({str(out)!r}) and AutoTokenizer")
    prompt = json.loads((out / "export.json").read_text())["prompt"]
    print(
        f"its prompt: apply_chat_template([{{'role': 'user', 'content': TURN}}], add_generation_prompt=True) with "
        f"TURN = {prompt['user_turn']!r} filled with the row (export.json 'prompt'); evaluate it with: "
        f"fsdistill-eval-checkpoints --path {out} --output {out}_eval.json"
    )
    if args.push_to_hub:
        print(f"uploaded to {push_folder(out, args.push_to_hub, args.private)}")
    return out
