"""Command-line composition shared by every entry point: config files, --output_dir, overrides.

Imports nothing heavy: a config mistake must fail before torch or transformers load.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from fsdistill.config import Config, ConfigError, load_config
from fsdistill.errors import UserError
from fsdistill.methods import CONDITIONS


def add_config_args(parser: argparse.ArgumentParser, need_output_dir: bool = False) -> None:
    parser.add_argument(
        "--config", help="YAML config (may say 'inherit: BASE.yaml' or 'inherit: [MODEL.yaml, TASK.yaml]')."
    )
    parser.add_argument(
        "--base_config",
        help="A YAML config loaded before --config (the original's flag): the same as --config saying "
        "'inherit: [BASE_CONFIG, CONFIG]'.",
    )
    parser.add_argument("--output_dir", required=need_output_dir, help="Run folder (sets output.dir).")
    parser.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="Config overrides, applied last."
    )


def config_from_args(
    args: argparse.Namespace, extra_overrides: list[str] = ()
) -> tuple[Config, dict[str, str]]:
    if not args.config and not args.base_config:
        raise ConfigError(["the command line: give --config FILE (see configs/)"])
    return load_config(args.config, args.base_config, [*extra_overrides, *args.overrides], args.output_dir)


def check_launcher_precision(cfg: Config) -> None:
    """Refuse an `accelerate launch --mixed_precision X` that disagrees with training.mixed_precision.

    The launcher passes its flag as ACCELERATE_MIXED_PRECISION ("no" when the flag is absent, and outside
    a launcher). Checked before torch loads, and again when the Accelerator is made.
    """
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    wanted = cfg.training.mixed_precision
    if launcher not in ("no", wanted):
        raise UserError(
            f"accelerate launch --mixed_precision {launcher} disagrees with training.mixed_precision={wanted}; "
            "the config is the one place precision is set: drop the flag or change the config"
        )


def check_distributed_launch(cfg: Config) -> None:
    """Refuse training.distributed=fsdp in a process no distributed launcher started.

    FSDP shards over a process group, which torchrun (under `accelerate launch --multi_gpu`) sets up through
    RANK and WORLD_SIZE in the environment; plain `python`, or `accelerate launch --num_processes N` without
    --multi_gpu on a machine without GPUs (one process), leaves them unset and torch would fail deep in
    setup. Checked before torch loads and before any folder is made, with the command to use.
    """
    if cfg.training.distributed != "fsdp" or {"RANK", "WORLD_SIZE"} <= os.environ.keys():
        return
    command = shlex.join(["accelerate", "launch", "--multi_gpu", "--num_processes", "N", *sys.argv])
    raise UserError(
        "training.distributed=fsdp needs a distributed launch (RANK and WORLD_SIZE are not set: this is one "
        f"process started without one); launch it as\n    {command}\nwith N processes (without GPUs add "
        "ACCELERATE_USE_CPU=true; on GPU nodes see configs/accelerate/fsdp_8gpu.yaml), or use "
        "training.distributed=ddp for one process (nothing was written)"
    )


def parse_training_cli(description: str, argv=None, with_condition: bool = False):
    """Parse an entry point's arguments; returns (args, config, source)."""
    parser = argparse.ArgumentParser(description=description)
    add_config_args(parser, need_output_dir=True)
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="Continue from the latest complete checkpoint in --output_dir, or from the checkpoint folder given.",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Delete what the run in --output_dir wrote (records, checkpoints; nothing else) and start again.",
    )
    if with_condition:
        parser.add_argument(
            "--condition",
            choices=sorted(CONDITIONS),
            help="Shortcut for the control's settings (zero_shot_teacher: fewshot.k=0; shuffled_answers: "
            "fewshot.shuffle_answers=true); checked against the config.",
        )
    # Intermixed: overrides may come before and after options (`--config C a=1 --output_dir D b=2`);
    # plain parse_args takes only the first run of positionals and rejects the rest.
    args = parser.parse_intermixed_args(argv)
    if isinstance(args.resume, str) and "=" in args.resume and not os.path.exists(args.resume):
        args.overrides.append(args.resume)  # `--resume key=value`: a bare --resume, then an override
        args.resume = True
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    extra = list(CONDITIONS[args.condition].settings) if with_condition and args.condition else []
    cfg, source = config_from_args(args, extra)
    check_launcher_precision(cfg)
    check_distributed_launch(cfg)
    return args, cfg, source


def add_eval_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by eval_icl.py and eval_checkpoints.py; parse with parse_eval_args."""
    add_config_args(parser)
    parser.add_argument(
        "--output", required=True, help="Result JSON (resumed if it exists with the same settings)."
    )
    parser.add_argument("--n_samples", type=int, help="Test subset size (default: eval.n_samples).")
    parser.add_argument(
        "--backend", choices=["hf", "vllm"], help="Generation backend (default: eval.backend)."
    )
    parser.add_argument("--tensor_parallel_size", type=int, help="vLLM tensor parallel degree.")
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "validation"],
        help="validation: rows held out of train (data.validation_size), to select checkpoints honestly.",
    )
    parser.add_argument("--teacher_forced", action="store_true", help="Also compute teacher-forced metrics.")


def parse_eval_args(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """Parse, and turn the eval flags into eval.* overrides placed before the command line's own."""
    # Intermixed: overrides may stand between options (`--config C a=1 --output O b=2`), as in training.
    args = parser.parse_intermixed_args(argv)
    flags = {
        "n_samples": args.n_samples,
        "backend": args.backend,
        "tensor_parallel_size": args.tensor_parallel_size,
        "icl_shots": getattr(args, "shots", None),  # eval_icl.py only
        "teacher_forced": True if args.teacher_forced else None,
    }
    args.overrides = [f"eval.{k}={v}" for k, v in flags.items() if v is not None] + args.overrides
    return args
