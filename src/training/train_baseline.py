"""SFT baseline: cross-entropy on the answer tokens only (LoRA or full fine-tuning, as the config says).

    accelerate launch src/training/train_baseline.py --config configs/base.yaml --output_dir experiments/sft

Teacher and distillation settings (fewshot.*, distill.*) are refused rather than ignored.
"""

from __future__ import annotations

from fsdistill.cli import check_sft, parse_training_cli
from fsdistill.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> None:
    args, cfg, source = parse_training_cli(__doc__.splitlines()[0], argv)
    method = check_sft(cfg, source)
    from fsdistill.training.core import train  # torch loads only after the config is valid

    train(cfg, method, resume=args.resume, overwrite=args.overwrite)


if __name__ == "__main__":
    main()
