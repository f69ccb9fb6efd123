#!/usr/bin/env bash
# The GPU check on the lent GPU machine (compute.md, "GPU check"), from the repository's root:
#   bash scripts/gpu_check.sh --output "$OUT"        # the device tool's run, carry [".gpu_carry"]
# The machine has torch, transformers, peft, accelerate, but no omegaconf and no ../shared:
# scripts/prepare_gpu_check.py put the wheels and the data into .gpu_carry/. The wheels are installed into
# a folder of their own (never over the image's packages); the package runs from src/.
set -euo pipefail
cd "$(dirname "$0")/.."
CARRY=${FSDISTILL_CARRY:-.gpu_carry}
if [[ ! -d $CARRY/shared ]]; then
    echo "error: $CARRY/shared not found: run python scripts/prepare_gpu_check.py first, and carry $CARRY" >&2
    exit 2
fi
if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/fsdistill-site "$CARRY"/wheels/*.whl
    export PYTHONPATH=/tmp/fsdistill-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD/src:$PYTHONPATH
export FSDISTILL_SHARED=$PWD/$CARRY/shared
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec python3 scripts/gpu_check.py "$@"
