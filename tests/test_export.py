"""scripts/export_model.py: a LoRA checkpoint merged into a plain transformers folder that loads without
peft and gives the adapter model's logits (fp32, tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from helpers import cli_argv, common_overrides, run_cli

from fsdistill.errors import UserError

pytestmark = pytest.mark.slow
LOGITS_ATOL = 1e-5  # fp32 merge of W + B @ A * scale vs. the adapter's separate branch: rounding only


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory, short_gsm8k):
    from fsdistill.train.entry import train_baseline

    out = tmp_path_factory.mktemp("export") / "sft"
    # A high learning rate, so the adapter moves the logits by far more than the tolerance.
    argv = cli_argv(
        "base.yaml", out, *common_overrides(short_gsm8k), "training.max_steps=2", "training.lr=5e-2"
    )
    assert run_cli(train_baseline, argv) == 0
    return out / "checkpoint-2"


def test_export_merges_the_adapter_into_a_plain_model(lora_checkpoint, tmp_path):
    import torch

    from fsdistill.modeling.loading import load_causal_lm
    from fsdistill.tools.export import main
    from fsdistill.train.checkpoint import load_checkpoint_model, saved_config

    out = tmp_path / "exported"
    assert main(["--checkpoint", str(lora_checkpoint), "--out", str(out)]) == out
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "export.json",
    } <= {p.name for p in out.iterdir()}
    assert not list(out.glob("adapter_*")) and not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    first = (out / "model.safetensors").read_bytes()
    assert (
        main(["--checkpoint", str(lora_checkpoint), "--out", str(out), "--overwrite"]) == out
    )  # ours: replaced
    assert (out / "model.safetensors").read_bytes() == first

    ids = torch.tensor([[151644, 872, 198, 14582, 25, 3555, 374, 220, 17, 488, 220, 17, 30, 151645]])
    cfg = saved_config(lora_checkpoint)
    with torch.no_grad():
        adapter_logits = load_checkpoint_model(lora_checkpoint, cfg).eval()(ids).logits
        base_logits = load_causal_lm(cfg.model).eval()(ids).logits
    assert (adapter_logits - base_logits).abs().max() > 100 * LOGITS_ATOL  # the adapter does something

    # Loaded the way a user loads any Hub model, in a fresh process that never imports peft or fsdistill.
    code = textwrap.dedent(
        f"""
        import json, sys, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        model = AutoModelForCausalLM.from_pretrained({str(out)!r}).eval()
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        with torch.no_grad():
            logits = model(torch.tensor({ids.tolist()!r})).logits
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        gen = GenerationConfig.from_pretrained({str(out)!r})
        print(json.dumps({{"peft": "peft" in sys.modules, "fsdistill": "fsdistill" in sys.modules,
                           "dtype": str(model.dtype), "template": tok.chat_template is not None,
                           "eos": gen.eos_token_id, "end_of_turn": tok.convert_tokens_to_ids("<|im_end|>")}}))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["peft"] is False and report["fsdistill"] is False
    assert report["dtype"] == "torch.float32" and report["template"]
    assert report["end_of_turn"] in report["eos"]  # generate() stops where evaluation stops
    exported_logits = torch.load(tmp_path / "logits.pt")  # our own tensor, written just above
    torch.testing.assert_close(exported_logits, adapter_logits, atol=LOGITS_ATOL, rtol=0)
    record = json.loads((out / "export.json").read_text())
    assert record["merged_lora"] is True and record["step"] == 2


def test_export_refuses_what_it_cannot_do(lora_checkpoint, tmp_path, monkeypatch, capsys):
    from fsdistill.tools.export import export_checkpoint, main

    with pytest.raises(UserError, match="not a checkpoint folder of this project"):
        export_checkpoint(tmp_path, tmp_path / "x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="exists; pass --overwrite"):
        export_checkpoint(lora_checkpoint, tmp_path / "taken")
    (tmp_path / "taken" / "notes.txt").write_text("mine")  # a user's folder: --overwrite must not delete it
    with pytest.raises(UserError, match="not a folder this command exported"):
        export_checkpoint(lora_checkpoint, tmp_path / "taken", overwrite=True)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as e:
        main(
            ["--checkpoint", str(lora_checkpoint), "--out", str(tmp_path / "y"), "--push_to_hub", "me/model"]
        )
    assert e.value.code == 2
    assert "--push_to_hub needs the Hub, but HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def export_main(*argv: str) -> int:
    from fsdistill.tools.export import main

    return run_cli(main, list(argv))


def test_overwrite_replaces_exactly_the_files_the_export_wrote(lora_checkpoint, tmp_path, capsys):
    """export.json lists every file the export wrote with its size and sha256; --overwrite deletes exactly
    those, unchanged, and leaves a user's file where it is, saying so. An export of an earlier version (no
    list) stands for the names an export writes. Anything else refused, nothing deleted."""
    from helpers import snapshot

    out = tmp_path / "exported"
    args = ("--checkpoint", str(lora_checkpoint), "--out", str(out), "--overwrite")
    assert export_main(*args) == 0
    listed = json.loads((out / "export.json").read_text())["files"]
    assert set(listed) == {p.name for p in out.iterdir()} - {"export.json"}
    assert listed["config.json"]["bytes"] == (out / "config.json").stat().st_size
    (out / "thesis.tex").write_text("a user's file")
    capsys.readouterr()
    assert export_main(*args) == 0
    assert (out / "thesis.tex").read_text() == "a user's file"
    assert "not written by the export and left where they are: thesis.tex" in capsys.readouterr().out
    assert set(json.loads((out / "export.json").read_text())["files"]) == set(listed)

    record = json.loads((out / "export.json").read_text())
    (out / "export.json").write_text(json.dumps({k: v for k, v in record.items() if k != "files"}))
    assert export_main(*args) == 0  # an earlier version's export: replaced by name, the user's file kept
    assert (out / "thesis.tex").read_text() == "a user's file" and "files" in json.loads(
        (out / "export.json").read_text()
    )

    config = (out / "config.json").read_text()
    for edit, message in (
        (lambda: (out / "config.json").write_text(config + " "), "differs from what"),  # changed since
        (lambda: (out / "export.json").write_text("{}"), "does not list the files the export wrote"),
    ):
        edit()
        before = snapshot(tmp_path)
        assert export_main(*args) == 2
        assert message in capsys.readouterr().err
        assert snapshot(tmp_path) == before


def test_a_symlinked_out_and_a_users_temporary_folder_are_never_touched(lora_checkpoint, tmp_path, capsys):
    from helpers import snapshot

    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "export.json").write_text("{}")
    (target / "thesis.tex").write_text("a user's file")
    (tmp_path / "link").symlink_to(target)
    (tmp_path / ".exported.tmp").mkdir()  # the temporary name earlier versions used, now a user's folder
    (tmp_path / ".exported.tmp" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    argv = ("--checkpoint", str(lora_checkpoint), "--out", str(tmp_path / "link"), "--overwrite")
    assert export_main(*argv) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'link'} is a symbolic link" in err and "Traceback" not in err
    assert export_main("--checkpoint", str(lora_checkpoint), "--out", str(tmp_path / "exported")) == 0
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if not k.startswith("exported/")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".exported.tmp", "elsewhere", "exported", "link"]
