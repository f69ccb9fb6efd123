"""scripts/export_model.py: a LoRA checkpoint merged into a plain transformers folder that loads without
peft and gives the adapter model's logits (fp32, tiny model), whose chat template alone gives the prompt
evaluation builds (Qwen3 and SmolLM2 templates) and whose generation config decodes as evaluation does;
the folder (and the checkpoint) evaluated by path, and the chat command on both."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import CONFIGS, QWEN3_TOKENIZER, prepared_smollm2_dir
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

    from fsdistill.data.prompts import PromptBuilder, load_tokenizer
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
    # The evaluation's own prompts for test rows: what the exported template alone must reproduce.
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    builder = PromptBuilder.from_config(tokenizer, cfg)
    rows = builder.task.load(cfg.data.source, cfg.data.test_split, cfg.data.hub_config)[:3]
    turns = [builder.task.user_turn(row) for row in rows]
    expected_prompts = [builder.generation_prompt_ids(row, []) for row in rows]
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
        prompts = [tok.apply_chat_template([{{"role": "user", "content": turn}}], add_generation_prompt=True)["input_ids"]
                   for turn in {turns!r}]
        print(json.dumps({{"peft": "peft" in sys.modules, "fsdistill": "fsdistill" in sys.modules,
                           "dtype": str(model.dtype), "template": tok.chat_template is not None,
                           "eos": gen.eos_token_id, "end_of_turn": tok.convert_tokens_to_ids("<|im_end|>"),
                           "generation": gen.to_dict(), "prompts": prompts}}))
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
    assert (record["method"], record["run_name"]) == ("sft", lora_checkpoint.parent.name)

    # The prompt travels: the template alone (no enable_thinking argument) gives evaluation's prompt ids.
    assert report["prompts"] == expected_prompts
    assert tokenizer.decode(expected_prompts[0]).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert record["prompt"]["user_turn"] == "Question: {question}"
    assert record["prompt"]["template_variables"]["enable_thinking"] is False
    # Greedy, as evaluation: the Qwen3 tokenizer folder's sampling defaults are gone, and said so.
    generation = report["generation"]
    assert generation["do_sample"] is False
    assert all(generation.get(k) is None for k in ("temperature", "top_p", "top_k"))
    assert generation["max_new_tokens"] == cfg.task.max_new_tokens and not generation.get("stop_strings")
    changes = record["generation_config_changes"]
    assert changes["do_sample"] == [True, False] and changes["temperature"] == [0.6, None]
    assert changes["top_k"] == [20, None] and changes["top_p"] == [0.95, None]


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


# --------------------------------------------------------------------------------------------------
# The template alone gives evaluation's prompt: Qwen3 and SmolLM2, with and without a system prompt
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["qwen3", "smollm2"])
@pytest.mark.parametrize("system_prompt", [None, 'Answer with the number only.\nBe "brief"; ünïcode ok.'])
def test_the_exported_template_alone_gives_the_evaluation_prompt(model, system_prompt, tmp_path, gsm8k_dir):
    """Saved and reloaded as a user loads it, the exported tokenizer's apply_chat_template([user turn],
    add_generation_prompt=True), with no template arguments, gives the prompt ids evaluation builds
    (PromptBuilder.generation_prompt_ids), token for token, for the row's task-formatted user turn."""
    from transformers import AutoTokenizer

    from fsdistill.config import load_config
    from fsdistill.data.prompts import PromptBuilder
    from fsdistill.tools.export import exported_tokenizer

    if model == "qwen3":
        config, overrides = "tiny/base.yaml", [f"model.tokenizer={QWEN3_TOKENIZER}"]
    else:
        config, overrides = "smollm2/sft.yaml", [f"model.name={prepared_smollm2_dir()}"]
    mine = tmp_path / "mine.yaml"  # a YAML string: newlines, quotes and non-ASCII reach the template as typed
    mine.write_text(f"inherit: {CONFIGS / config}\ntask:\n  system_prompt: {json.dumps(system_prompt)}\n")
    cfg, _ = load_config(str(mine), overrides=[*overrides, f"data.source={gsm8k_dir}"])
    assert cfg.task.system_prompt == system_prompt
    tokenizer, _ = exported_tokenizer(cfg)
    tokenizer.save_pretrained(str(tmp_path / "tok"))
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))

    builder = PromptBuilder.from_config(tokenizer, cfg)  # the evaluation's own prompts
    rows = builder.task.load(str(gsm8k_dir), "test", "main")[:4]
    for row in rows:
        turn = [{"role": "user", "content": builder.task.user_turn(row)}]
        ids = saved.apply_chat_template(turn, add_generation_prompt=True)["input_ids"]
        assert ids == builder.generation_prompt_ids(row, []), saved.decode(ids)
    text = saved.decode(ids)
    if system_prompt is not None:
        assert system_prompt in text
    if model == "qwen3":
        assert text.endswith("<think>\n\n</think>\n\n")  # thinking off, as trained
        # a caller may still pass the variable itself: the baked value is a default
        on = saved.apply_chat_template(turn, add_generation_prompt=True, tokenize=False, enable_thinking=True)
        assert not on.endswith("</think>\n\n")
    else:
        assert ("You are a helpful AI assistant named SmolLM" in text) == (system_prompt is None)


# --------------------------------------------------------------------------------------------------
# Evaluated by path, labelled by what it is; the chat command answers as evaluation does
# --------------------------------------------------------------------------------------------------


def test_export_and_checkpoint_by_path_and_chat_answers_as_evaluation(
    lora_checkpoint, tmp_path, monkeypatch, capsys
):
    """eval_checkpoints.py --path scores a checkpoint (labelled run name + step) and an exported folder
    (labelled by its name, its run's method and step) from their recorded configs, with the same
    predictions; piped into the chat command, the same questions give the evaluation's texts."""
    import io

    from fsdistill.config import load_config
    from fsdistill.eval import chat, checkpoints
    from fsdistill.eval.results import entry_key, load_results
    from fsdistill.eval.targets import model_label
    from fsdistill.tools.export import export_checkpoint
    from fsdistill.train.checkpoint import saved_config

    exported = export_checkpoint(lora_checkpoint, tmp_path / "my-model")
    settings = ["eval.n_samples=4", "task.max_new_tokens=8", "eval.batch_size=1"]
    entries = {}
    for name, path in (("checkpoint", lora_checkpoint), ("folder", exported)):
        out = tmp_path / f"{name}.json"
        checkpoints.main(["--path", str(path), "--output", str(out), *settings])
        (entries[name],) = load_results(out)["results"]
    run_name = lora_checkpoint.parent.name
    assert (entry_key(entries["checkpoint"]), entries["checkpoint"]["method"]) == ((run_name, 2, 0), "sft")
    assert (entry_key(entries["folder"]), entries["folder"]["method"]) == (("my-model", 2, 0), "sft")
    predictions = [ex["prediction"] for ex in entries["checkpoint"]["examples"]]
    assert [ex["prediction"] for ex in entries["folder"]["examples"]] == predictions
    assert len(set(predictions)) > 1  # the texts say something about the model

    cfg = saved_config(lora_checkpoint)
    lines = (Path(cfg.data.source) / "test.jsonl").read_text().splitlines()
    questions = [json.loads(lines[ex["index"]])["question"] for ex in entries["checkpoint"]["examples"]]
    assert not any("\n" in q for q in questions)
    for path in (lora_checkpoint, exported):
        monkeypatch.setattr(sys, "stdin", io.StringIO("".join(f"{q}\n" for q in questions)))
        capsys.readouterr()
        chat.main(["--path", str(path), "--jsonl", "task.max_new_tokens=8"])
        answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [a["question"] for a in answers] == questions
        assert [a["answer"] for a in answers] == predictions, path

    # eval_icl.py labels a config whose model is an exported folder by the folder, not "base".
    icl_cfg, _ = load_config(
        str(CONFIGS / "tiny" / "base.yaml"),
        overrides=[f"model.name={exported}", "model.init=pretrained", f"model.tokenizer={exported}"],
    )
    assert model_label(icl_cfg) == ("my-model", "sft", 2)
    assert model_label(cfg) == ("base", "base", None)
