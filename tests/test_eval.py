"""eval_icl.py and eval_checkpoints.py on tiny models: result files, test subsets, prompts, resumption,
refusals, teacher-forced metrics, and an end-to-end check that a model overfit on 16 rows scores >= 90% on
them (a random model's ~0% would hide a prompt or scoring bug that marks every answer wrong). The vllm
backend against the real engine: tests/test_vllm.py.

Training runs are shared per module: one LoRA SFT run, one LoRA distillation run and one full
fine-tuning run of 2 checkpoints each, and one overfit full fine-tuning run.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import GSM8K_DIR, OFFLINE_OVERRIDES, QWEN3_TOKENIZER
from eval_helpers import TINY, arithmetic_rows, train, write_arithmetic_data

from fsdistill.config import from_dict, load_config
from fsdistill.eval import checkpoints as eval_checkpoints
from fsdistill.eval import evaluate as ev
from fsdistill.eval import generation
from fsdistill.eval import icl as eval_icl
from fsdistill.eval.results import entry_key, find_entry, load_results
from fsdistill.modeling import loading
from fsdistill.tasks import make_task
from fsdistill.tasks.gsm8k import gold_answer
from fsdistill.train import checkpoint as train_checkpoint

N = 4  # evaluated test rows
MAX_NEW = 8  # generated tokens (random models never stop on their own)
THINK_OFF = "<|im_start|>assistant\n<think>\n\n</think>\n\n"  # Qwen3's generation prompt, thinking off
EVAL_OVERRIDES = [*OFFLINE_OVERRIDES, f"eval.n_samples={N}", f"task.max_new_tokens={MAX_NEW}"]


def original_subset(n_total: int, k: int) -> list[int]:
    """The original's test subset, computed its own way (global RNG), without touching the test's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(42)
        return torch.randperm(n_total)[:k].tolist()


def gsm8k_test_rows(indices: list[int]) -> list[dict]:
    lines = (GSM8K_DIR / "test.jsonl").read_text().splitlines()
    return [json.loads(lines[i]) for i in indices]


def expected_prompt_ids(tokenizer, question: str) -> list[int]:
    """A 0-shot prompt built straight from the chat template (thinking off), not through PromptBuilder."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Question: {question}"}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def user_error(main, argv, capsys) -> str:
    """Run a CLI main that must refuse: exit status 2, a message on stderr, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def checkpoints_argv(runs, output: Path, *conditions: str, base_dir=None, extra=(), flags=()) -> list[str]:
    """eval_checkpoints.py with --config, scoring the runs' test split (the arithmetic rows they trained on)."""
    # Overrides stand between options on purpose: the CLI parses them intermixed.
    return [
        "--config",
        str(TINY / "base.yaml"),
        *EVAL_OVERRIDES,
        f"data.source={runs.data}",
        *extra,
        "--base_dir",
        str(base_dir or runs.base),
        "--output",
        str(output),
        "--conditions",
        *conditions,
        *flags,
    ]


# --------------------------------------------------------------------------------------------------
# Shared training runs
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny model's thousands of small ops each end in an OpenMP barrier, which
    on 2 shared, busy cores waits for a descheduled second thread (measured: training 100 steps took
    52 s with one thread and ~200 s with two on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def arithmetic_dir(tmp_path_factory, gsm8k_dir, qwen3_tokenizer_path) -> Path:
    return write_arithmetic_data(tmp_path_factory.mktemp("arithmetic"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, arithmetic_dir) -> SimpleNamespace:
    """LoRA SFT, LoRA distillation (2-shot teacher) and full fine-tuning runs, checkpoints 1 and 2 each."""
    base = tmp_path_factory.mktemp("runs")
    small = [
        f"model.tokenizer={QWEN3_TOKENIZER}",
        f"data.source={arithmetic_dir}",
        "training.max_steps=2",
        "training.save_every=1",
        "training.warmup_steps=0",
        "training.per_device_batch_size=1",
        "training.grad_accum_steps=1",
        "output.log_with=[]",
    ]
    return SimpleNamespace(
        base=base,
        data=arithmetic_dir,
        sft=train("train_baseline", "base.yaml", base / "sft", *small),
        distill=train("train_online_v1", "online_v1.yaml", base / "distill", *small),
        full_ft=train("train_baseline", "full_ft.yaml", base / "full_ft", *small),
    )


# Overfit: full fine-tuning of the tiny model on the 16 arithmetic rows until it has memorised them
# (measured: 38% right after 50 steps, 94% after 80, 100% after 100).
OVERFIT_STEPS = 100
OVERFIT_OVERRIDES = [
    "training.lr=1e-2",
    "training.warmup_steps=5",
    f"training.max_steps={OVERFIT_STEPS}",
    f"training.save_every={OVERFIT_STEPS}",
    "training.per_device_batch_size=16",
    "training.grad_accum_steps=1",
    "data.max_student_len=128",
    "output.log_with=[]",
]


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory, arithmetic_dir) -> SimpleNamespace:
    base = tmp_path_factory.mktemp("overfit")
    start = time.perf_counter()
    train(
        "train_baseline",
        "full_ft.yaml",
        base / "overfit",
        f"model.tokenizer={QWEN3_TOKENIZER}",
        f"data.source={arithmetic_dir}",
        *OVERFIT_OVERRIDES,
    )
    return SimpleNamespace(base=base, seconds=time.perf_counter() - start)


# --------------------------------------------------------------------------------------------------
# 1. eval_icl.py
# --------------------------------------------------------------------------------------------------


def test_eval_icl_result_file_prompts_and_resume(tmp_path, monkeypatch, qwen3_tokenizer, gsm8k_dir):
    calls = []
    real_generate = generation.generate_hf

    def counting_generate(model, tokenizer, prompt_ids, settings, batch_size, progress=True):
        texts = real_generate(model, tokenizer, prompt_ids, settings, batch_size, progress=False)
        calls.append(SimpleNamespace(prompt_ids=prompt_ids, settings=settings, texts=texts))
        return texts

    monkeypatch.setattr(generation, "generate_hf", counting_generate)
    out = tmp_path / "icl.json"
    argv = ["--config", str(TINY / "base.yaml"), *EVAL_OVERRIDES, "--output", str(out)]

    eval_icl.main([*argv, "--shots", "0"])
    assert len(calls) == 1
    eval_icl.main([*argv, "--shots", "0", "2"])  # resumes: only the 2-shot count is new
    assert len(calls) == 2
    eval_icl.main([*argv, "--shots", "0", "2"])  # nothing left to do
    assert len(calls) == 2

    results = load_results(out)
    assert [entry_key(e) for e in results["results"]] == [("base", None, 0), ("base", None, 2)]
    indices = ev.subset_indices(1319, N)
    assert indices == original_subset(1319, N)
    rows = gsm8k_test_rows(indices)
    for entry, call in zip(results["results"], calls):
        assert entry["method"] == "base" and entry["n"] == N
        assert [ex["index"] for ex in entry["examples"]] == indices
        assert [ex["gold"] for ex in entry["examples"]] == [gold_answer(r["answer"]) for r in rows]
        assert [ex["prediction"] for ex in entry["examples"]] == call.texts
        assert call.settings.max_new_tokens == MAX_NEW
        assert qwen3_tokenizer.convert_tokens_to_ids("<|im_end|>") in call.settings.stop_token_ids

    zero_shot, two_shot = ([qwen3_tokenizer.decode(ids) for ids in call.prompt_ids] for call in calls)
    for text, row in zip(zero_shot, rows):
        assert text.endswith(THINK_OFF)
        assert text.count("<|im_start|>user") == 1 and f"Question: {row['question']}<|im_end|>" in text
    assert calls[0].prompt_ids == [expected_prompt_ids(qwen3_tokenizer, r["question"]) for r in rows]
    for text, row in zip(two_shot, rows):
        assert text.endswith(f"Question: {row['question']}<|im_end|>\n{THINK_OFF}")
        assert text.count("<|im_start|>user") == 3 and text.count("<|im_start|>assistant") == 3
    # The exemplars are the same for every question (the prompts share everything before the question),
    # and the same in every run: eval.icl_seed's draw from the training rows.
    prefix = two_shot[0][: two_shot[0].rindex("<|im_start|>user")]
    assert all(text.startswith(prefix) for text in two_shot) and prefix.count("####") == 2
    cfg, _ = load_config(str(TINY / "base.yaml"), None, EVAL_OVERRIDES)
    for shot in ev.icl_exemplars(ev.load_eval_data(cfg, make_task(cfg), "test").train, 2, 42):
        assert (
            f"Question: {shot.question}<|im_end|>\n<|im_start|>assistant\n" in prefix
            and shot.answer in prefix
        )


def test_eval_icl_refuses_to_resume_a_file_measured_differently(
    tmp_path, monkeypatch, arithmetic_dir, capsys
):
    """A result file's identity is the whole config but what cannot change its numbers: resuming it with
    another dtype or data config is refused naming the key (not mixed); a throughput knob may differ."""
    monkeypatch.setattr(
        generation, "generate_hf", lambda model, tok, prompt_ids, *a, **k: ["#### 1"] * len(prompt_ids)
    )
    out = tmp_path / "icl.json"
    argv = ["--config", str(TINY / "base.yaml"), *EVAL_OVERRIDES, f"data.source={arithmetic_dir}"]
    argv += ["--output", str(out)]
    eval_icl.main([*argv, "--shots", "0"])
    before = out.read_bytes()
    for override, key in (
        ("model.dtype=bfloat16", "model.dtype"),
        ("data.hub_config=other", "data.hub_config"),
    ):
        err = user_error(eval_icl.main, [*argv, override, "--shots", "0"], capsys)
        assert "refusing to mix" in err and f"{key}: " in err, err
        assert out.read_bytes() == before
    eval_icl.main([*argv, "eval.batch_size=3", "--shots", "0", "2"])
    assert [e["shots"] for e in load_results(out)["results"]] == [0, 2]


def test_a_single_training_file_is_never_scored_as_test(tmp_path, monkeypatch, arithmetic_dir, capsys):
    """data.source may be one JSONL file: it is the training file, so evaluation refuses to score it as the
    test split unless data.test_split names a file explicitly; n_samples beyond the split is refused."""
    monkeypatch.setattr(
        generation, "generate_hf", lambda model, tok, prompt_ids, *a, **k: ["#### 1"] * len(prompt_ids)
    )
    train_file = arithmetic_dir / "train.jsonl"
    argv = ["--config", str(TINY / "base.yaml"), *EVAL_OVERRIDES, f"data.source={train_file}"]
    err = user_error(eval_icl.main, [*argv, "--output", str(tmp_path / "a.json"), "--shots", "0"], capsys)
    assert "is a single JSONL file, which is the training file" in err
    assert not (tmp_path / "a.json").exists()
    explicit = [
        *argv,
        f"data.test_split={arithmetic_dir / 'test.jsonl'}",
        "--output",
        str(tmp_path / "b.json"),
    ]
    eval_icl.main([*explicit, "--shots", "0"])
    assert load_results(tmp_path / "b.json")["results"][0]["n"] == N
    err = user_error(eval_icl.main, [*explicit, "eval.n_samples=17", "--shots", "0"], capsys)
    assert "eval.n_samples=17 (set in the command line) but the evaluated test split has 16 rows" in err
    assert "eval.n_samples=null (or --n_samples 16)" in err


def test_eval_icl_teacher_forced(tmp_path, monkeypatch, arithmetic_dir):
    monkeypatch.setattr(
        generation, "generate_hf", lambda model, tok, prompt_ids, *a, **k: ["#### 1"] * len(prompt_ids)
    )
    out = tmp_path / "icl_tf.json"
    argv = ["--config", str(TINY / "base.yaml"), *EVAL_OVERRIDES, f"data.source={arithmetic_dir}"]
    eval_icl.main([*argv, "--output", str(out), "--shots", "0", "2", "--teacher_forced"])
    results = load_results(out)
    assert results["settings"]["eval.teacher_forced"] is True
    zero, two = find_entry(results, "base", None, 0), find_entry(results, "base", None, 2)
    assert set(zero["teacher_forced"]) == {"nll", "kl"} and set(two["teacher_forced"]) == {"nll"}
    for entry, metrics in ((zero, ("nll", "kl")), (two, ("nll",))):
        assert entry["teacher_forced"]["nll"]["n"] == N
        for ex in entry["examples"]:
            for name in metrics:
                assert math.isfinite(ex[name]), (name, ex)
            assert ex["nll"] > 0
    assert all(ex["kl"] >= 0 for ex in zero["examples"])
    assert "kl" not in two["examples"][0]
    assert all(ex["prediction"] == "#### 1" for ex in zero["examples"])

    # eval.generate=false: the same metrics, no generation, no accuracy.
    def no_generation(*args, **kwargs):
        raise AssertionError("eval.generate=false must not generate")

    monkeypatch.setattr(generation, "generate_hf", no_generation)
    only = tmp_path / "icl_tf_only.json"
    eval_icl.main(
        [*argv, "eval.generate=false", "--output", str(only), "--shots", "0", "2", "--teacher_forced"]
    )
    for entry, generated in zip(load_results(only)["results"], (zero, two)):
        assert entry["accuracy"] is None and entry["examples"][0]["prediction"] is None
        assert entry["teacher_forced"] == generated["teacher_forced"]


# --------------------------------------------------------------------------------------------------
# 2. eval_checkpoints.py: finding runs, refusals, LoRA and full fine-tuning, resumption
# --------------------------------------------------------------------------------------------------


def test_checkpoints_find_runs_and_refuse_unknown_or_ambiguous(runs, tmp_path, capsys):
    found = eval_checkpoints.find_runs(runs.base)
    assert found == {"sft": [runs.sft], "distill": [runs.distill], "full_ft": [runs.full_ft]}
    out = tmp_path / "out.json"

    err = user_error(eval_checkpoints.main, checkpoints_argv(runs, out, "sft", "nope"), capsys)
    assert "condition 'nope' matches no run" in err
    for name, path in (("sft", runs.sft), ("distill", runs.distill), ("full_ft", runs.full_ft)):
        assert f"{name}: {path}" in err

    twins = tmp_path / "twins"
    for copy in ("a", "b"):
        (twins / copy).mkdir(parents=True)
        shutil.copy(runs.sft / "run.json", twins / copy / "run.json")
    err = user_error(eval_checkpoints.main, checkpoints_argv(runs, out, "sft", base_dir=twins), capsys)
    assert "condition 'sft' is ambiguous (2 runs carry it)" in err
    assert str(twins / "a") in err and str(twins / "b") in err

    argv = checkpoints_argv(runs, out, "sft", flags=["--checkpoint_steps", "1", "7"])
    err = user_error(eval_checkpoints.main, argv, capsys)
    assert f"{runs.sft}: no checkpoint for steps [7]; it has [1, 2]" in err
    assert not out.exists()


def test_checkpoints_refuse_another_base_model_and_other_validation_rows(runs, tmp_path, capsys):
    other = tmp_path / "runs" / "other"
    shutil.copytree(runs.sft, other)
    manifest = json.loads((other / "run.json").read_text())
    manifest["name"] = "other"
    manifest["config"]["model"]["architecture"]["hidden_size"] = 128
    (other / "run.json").write_text(json.dumps(manifest))
    out = tmp_path / "out.json"
    err = user_error(
        eval_checkpoints.main, checkpoints_argv(runs, out, "other", base_dir=other.parent), capsys
    )
    assert "was trained from another base model than --config describes" in err
    assert "model.architecture" in err and "'hidden_size': 128" in err and "'hidden_size': 64" in err

    # --split validation scores rows the run held out: the run held out none of these.
    argv = checkpoints_argv(runs, out, "sft", extra=[f"data.source={GSM8K_DIR}", "data.validation_size=4"])
    err = user_error(eval_checkpoints.main, [*argv, "--split", "validation"], capsys)
    assert "held out other rows than --config describes" in err
    assert "data.validation_size: run has 0, evaluation has 4" in err
    assert "data.source" in err
    assert not out.exists()


def test_checkpoints_lora_and_full_fine_tuning(runs, tmp_path, monkeypatch):
    loaded = []
    real_load = train_checkpoint.load_checkpoint_model

    def recording_load(path, run_cfg):
        model = real_load(path, run_cfg)
        loaded.append((Path(path), type(model).__name__, model))
        return model

    monkeypatch.setattr(train_checkpoint, "load_checkpoint_model", recording_load)
    out = tmp_path / "lora_and_full.json"
    argv = checkpoints_argv(runs, out, "sft", "full_ft", flags=["--checkpoint_steps", "2"])
    eval_checkpoints.main(argv)

    results = load_results(out)
    assert [entry_key(e) for e in results["results"]] == [("sft", 2, 0), ("full_ft", 2, 0)]
    for entry, run in zip(results["results"], (runs.sft, runs.full_ft)):
        assert entry["method"] == "sft" and entry["n"] == N
        assert entry["checkpoint"] == str(run / "checkpoint-2")
        assert [ex["index"] for ex in entry["examples"]] == ev.subset_indices(16, N)
    (lora_path, lora_type, _), (full_path, full_type, full_model) = loaded
    assert (lora_path, lora_type) == (runs.sft / "checkpoint-2", "PeftModelForCausalLM")
    assert (full_path, full_type) == (runs.full_ft / "checkpoint-2", "Qwen3ForCausalLM")
    # The full fine-tuning checkpoint's own (trained) weights were scored, not the base model's.
    from safetensors.torch import load_file

    saved = load_file(str(full_path / "model.safetensors"))
    name = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(full_model.state_dict()[name], saved[name])
    base = loading.load_causal_lm(load_config(str(TINY / "full_ft.yaml"), None, EVAL_OVERRIDES)[0].model)
    assert not torch.equal(base.state_dict()[name], saved[name])


def test_checkpoints_interrupted_sweep_resumes(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep.json"
    evaluated = []
    real_evaluate = eval_checkpoints.CheckpointEvaluator.evaluate

    def interrupted(self, target):
        if evaluated:
            raise RuntimeError("interrupted")  # the machine went away during the second checkpoint
        evaluated.append(target.path)
        return real_evaluate(self, target)

    monkeypatch.setattr(eval_checkpoints.CheckpointEvaluator, "evaluate", interrupted)
    with pytest.raises(RuntimeError, match="interrupted"):
        eval_checkpoints.main(checkpoints_argv(runs, out, "sft"))
    first = load_results(out)  # written after the first checkpoint
    assert [entry_key(e) for e in first["results"]] == [("sft", 1, 0)]

    def counting(self, target):
        evaluated.append(target.path)
        return real_evaluate(self, target)

    evaluated.clear()
    monkeypatch.setattr(eval_checkpoints.CheckpointEvaluator, "evaluate", counting)
    eval_checkpoints.main(checkpoints_argv(runs, out, "sft"))
    assert evaluated == [runs.sft / "checkpoint-2"]
    resumed = load_results(out)
    assert [entry_key(e) for e in resumed["results"]] == [("sft", 1, 0), ("sft", 2, 0)]
    assert resumed["results"][0] == first["results"][0]
    assert len(resumed["provenance"]["resumed"]) == 1

    # The same file with settings that change the numbers is refused, naming the setting.
    argv = checkpoints_argv(runs, out, "sft", extra=["task.max_new_tokens=9"])
    err = user_error(eval_checkpoints.main, argv, capsys)
    assert "max_new_tokens: 8 vs 9" in err
    assert evaluated == [runs.sft / "checkpoint-2"]
    assert load_results(out) == resumed


def test_checkpoints_teacher_forced_without_generation(runs, tmp_path, monkeypatch, arithmetic_dir):
    def no_generation(*args, **kwargs):
        raise AssertionError("eval.generate=false must not generate")

    monkeypatch.setattr(generation, "generate_hf", no_generation)
    out = tmp_path / "teacher_forced.json"
    extra = [f"data.source={arithmetic_dir}", "eval.generate=false", "fewshot.k=2"]
    flags = ["--checkpoint_steps", "2", "--teacher_forced"]
    eval_checkpoints.main(checkpoints_argv(runs, out, "sft", "full_ft", extra=extra, flags=flags))

    results = load_results(out)
    assert results["settings"]["eval.generate"] is False and results["settings"]["fewshot.k"] == 2
    assert [entry_key(e) for e in results["results"]] == [("sft", 2, 0), ("full_ft", 2, 0)]

    # The teacher is the BASE model with 2 exemplars for both kinds: the LoRA checkpoint with its adapter
    # off, and for full fine-tuning the initial weights, not the checkpoint itself.
    from fsdistill.data.prompts import PromptBuilder, load_tokenizer

    cfg, _ = load_config(str(TINY / "base.yaml"), None, [*EVAL_OVERRIDES, *extra, "eval.teacher_forced=true"])
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    data = ev.load_eval_data(cfg, make_task(cfg), "test")
    seq = ev.encode_teacher_forced(prompts, data, 2, cfg.fewshot.seed)
    cpu = torch.device("cpu")
    base = ev.hf_teacher_logits(loading.load_causal_lm(cfg.model), cpu)
    for entry, run in zip(results["results"], (runs.sft, runs.full_ft)):
        run_cfg = from_dict(json.loads((run / "run.json").read_text())["config"], str(run))
        model = train_checkpoint.load_checkpoint_model(run / "checkpoint-2", run_cfg)
        expected = ev.teacher_forced_metrics(
            ev.hf_answer_logits(model, cpu), base, seq, tokenizer.pad_token_id, N, cpu
        )
        assert entry["accuracy"] is None and entry["n"] == N
        for name in ("nll", "kl"):
            assert [ex[name] for ex in entry["examples"]] == pytest.approx(expected[name], rel=1e-4, abs=1e-5)
        for ex in entry["examples"]:
            assert ex["prediction"] is None and ex["correct"] is None
            assert math.isfinite(ex["nll"]) and ex["nll"] > 0 and ex["kl"] > 0


# --------------------------------------------------------------------------------------------------
# 2b. eval_checkpoints.py from the runs' recorded configs, and --path
# --------------------------------------------------------------------------------------------------


def copy_run(run: Path, dest: Path, name: str, **changes) -> Path:
    """A copy of a run under another name, its recorded config changed ({"section.key": value})."""
    shutil.copytree(run, dest)
    manifest = json.loads((dest / "run.json").read_text())
    manifest["name"] = name
    for key, value in changes.items():
        section, field = key.split(".")
        manifest["config"][section][field] = value
    (dest / "run.json").write_text(json.dumps(manifest))
    return dest


def test_checkpoints_without_config_use_each_runs_recorded_config(runs, tmp_path, monkeypatch):
    """Without --config the runs' own task, data, template and evaluation settings are used: the same
    result file as --config with those settings; --path scores one checkpoint or one run folder."""
    monkeypatch.setattr(
        generation,
        "generate_hf",
        lambda model, tok, prompt_ids, *a, **k: [f"#### {len(p)}" for p in prompt_ids],
    )
    overrides = [f"eval.n_samples={N}", f"task.max_new_tokens={MAX_NEW}"]
    recorded = tmp_path / "recorded.json"
    eval_checkpoints.main(
        [
            "--conditions",
            "sft",
            "distill",
            "--base_dir",
            str(runs.base),
            "--output",
            str(recorded),
            *overrides,
        ]
    )
    explicit = tmp_path / "explicit.json"
    eval_checkpoints.main(checkpoints_argv(runs, explicit, "sft", "distill"))
    a, b = load_results(recorded), load_results(explicit)
    assert a["settings"] == b["settings"]
    assert a["settings"]["data.source"] == str(runs.data) and a["settings"]["task"] == "gsm8k"
    assert [entry_key(e) for e in a["results"]] == [
        ("sft", 1, 0),
        ("sft", 2, 0),
        ("distill", 1, 0),
        ("distill", 2, 0),
    ]
    assert [e["examples"] for e in a["results"]] == [e["examples"] for e in b["results"]]
    assert all("run_overrides" not in e for e in a["results"])

    one = tmp_path / "one.json"
    eval_checkpoints.main(["--path", str(runs.distill / "checkpoint-2"), "--output", str(one), *overrides])
    (entry,) = load_results(one)["results"]
    assert (entry_key(entry), entry["method"]) == (("distill", 2, 0), "few_shot_distillation")
    assert entry["examples"] == find_entry(a, "distill", 2)["examples"]
    folder = tmp_path / "folder.json"
    eval_checkpoints.main(
        ["--path", str(runs.sft), "--output", str(folder), *overrides, "--checkpoint_steps", "1"]
    )
    assert [entry_key(e) for e in load_results(folder)["results"]] == [("sft", 1, 0)]


def test_checkpoints_refuse_training_settings_they_were_not_trained_with(runs, tmp_path, monkeypatch, capsys):
    """A checkpoint is scored on the task, template and data it was trained with: another data source
    (the issue's 'trained on one task, scored on GSM8K without a word') is refused unless
    --override_run_settings asks for it, which each entry then records; runs trained on different tasks
    are refused together, naming the key; runs that differ on an evaluation setting need the command
    line to choose."""
    monkeypatch.setattr(
        generation, "generate_hf", lambda model, tok, prompt_ids, *a, **k: ["#### 1"] * len(prompt_ids)
    )
    out = tmp_path / "out.json"
    base = [
        "--base_dir",
        str(runs.base),
        "--output",
        str(out),
        f"eval.n_samples={N}",
        f"task.max_new_tokens={MAX_NEW}",
    ]
    other_data = [*base, f"data.source={GSM8K_DIR}", "--conditions", "sft"]
    err = user_error(eval_checkpoints.main, other_data, capsys)
    assert "sft step 1 was trained with other settings than the command line gives its evaluation" in err
    assert f"data.source: run has '{runs.data}', evaluation has '{GSM8K_DIR}'" in err
    assert "--override_run_settings" in err and not out.exists()
    err = user_error(
        eval_checkpoints.main, checkpoints_argv(runs, out, "sft", extra=[f"data.source={GSM8K_DIR}"]), capsys
    )
    assert "than --config gives its evaluation" in err and not out.exists()

    eval_checkpoints.main([*other_data, "--override_run_settings", "--checkpoint_steps", "2"])
    (entry,) = load_results(out)["results"]
    assert entry["run_overrides"] == {"data.source": {"run": str(runs.data), "evaluated": str(GSM8K_DIR)}}
    assert [ex["index"] for ex in entry["examples"]] == ev.subset_indices(1319, N)  # GSM8K's test rows

    together = tmp_path / "together"
    copy_run(runs.sft, together / "sft", "sft")
    copy_run(runs.sft, together / "quiz", "quiz", **{"task.question_template": "Quiz: {question}"})
    copy_run(runs.sft, together / "shorter", "shorter", **{"eval.n_samples": 3})
    base = ["--base_dir", str(together), "--output", str(tmp_path / "t.json")]
    err = user_error(eval_checkpoints.main, [*base, "--conditions", "sft", "quiz"], capsys)
    assert "trained with different tasks, templates, data or base models" in err
    assert "task.question_template: sft has 'Question: {question}', quiz has 'Quiz: {question}'" in err
    err = user_error(eval_checkpoints.main, [*base, "--conditions", "sft", "shorter"], capsys)
    assert "choose one value on the command line (eval.n_samples=...)" in err
    assert "eval.n_samples: sft has 16, shorter has 3" in err
    eval_checkpoints.main(
        [*base, "eval.n_samples=2", "task.max_new_tokens=4", "--conditions", "sft", "shorter"]
    )
    assert [e["n"] for e in load_results(tmp_path / "t.json")["results"]] == [2] * 4


def test_an_inherited_subset_larger_than_the_split_names_the_key(tmp_path, arithmetic_dir, capsys):
    small = tmp_path / "small"
    small.mkdir()
    for split in ("train", "test"):
        lines = (arithmetic_dir / f"{split}.jsonl").read_text().splitlines()[:10]
        (small / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    mine = tmp_path / "mine.yaml"  # my task on the tiny model config, which sets eval.n_samples: 16
    mine.write_text(f"inherit: {TINY / 'base.yaml'}\ndata:\n  source: {small}\n")
    argv = ["--config", str(mine), f"model.tokenizer={QWEN3_TOKENIZER}", "--output", str(tmp_path / "x.json")]
    err = user_error(eval_icl.main, argv, capsys)
    assert "eval.n_samples=16 (set in " in err  # the file that set it: the inherited model config
    assert "tiny/base.yaml) but the evaluated test split has 10 rows" in err
    assert "eval.n_samples=null (or --n_samples 10)" in err


# --------------------------------------------------------------------------------------------------
# 4. Teacher-forced metrics
# --------------------------------------------------------------------------------------------------


def test_teacher_forced_metrics_of_a_fresh_adapter(arithmetic_dir):
    from fsdistill.data.prompts import PromptBuilder, load_tokenizer

    overrides = [*OFFLINE_OVERRIDES, f"data.source={arithmetic_dir}", f"eval.n_samples={N}"]
    cfg, _ = load_config(str(TINY / "base.yaml"), None, overrides)
    tokenizer = load_tokenizer(cfg.model.tokenizer)
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    data = ev.load_eval_data(cfg, make_task(cfg), "test")
    model = loading.add_lora(loading.load_causal_lm(cfg.model), cfg.lora, False).eval()
    device = torch.device("cpu")

    def metrics(k: int) -> dict[str, list[float]]:
        seq = ev.encode_teacher_forced(prompts, data, k, cfg.fewshot.seed)
        return ev.teacher_forced_metrics(
            ev.hf_answer_logits(model, device),
            ev.hf_teacher_logits(model, device, adapter_off=model.disable_adapter),
            seq,
            tokenizer.pad_token_id,
            3,  # batches of 3 and 1: padding must not change anything
            device,
        )

    zero = metrics(0)
    assert max(zero["kl"]) < 1e-6  # B = 0: with the adapter on or off it is the same model

    # The training CE of the same examples, computed independently: the model's own forward on each
    # unpadded sequence and torch's cross_entropy on the shifted labels.
    expected = []
    with torch.no_grad():
        for example in data.examples:
            prompt, answer_ids, _ = prompts.encode_student(example)
            ids = torch.tensor([prompt + answer_ids])
            labels = ids.clone()
            labels[0, : len(prompt)] = -100
            logits = model(input_ids=ids).logits
            expected.append(
                torch.nn.functional.cross_entropy(
                    logits[0, :-1].float(), labels[0, 1:], ignore_index=-100
                ).item()
            )
    assert zero["nll"] == pytest.approx(expected, rel=1e-5, abs=1e-5)

    two = metrics(2)
    assert two["nll"] == pytest.approx(expected, rel=1e-5, abs=1e-5)  # NLL is the 0-shot model's
    assert min(two["kl"]) > 1e-4  # the 2-shot teacher sees exemplars

    # A trained adapter changes the model but not its teacher (the adapter is off for the teacher).
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5, generator=torch.Generator().manual_seed(0))
    assert min(metrics(0)["kl"]) > 1e-4


# --------------------------------------------------------------------------------------------------
# 5. End to end: a model that memorised 16 rows must score >= 90% on them
# --------------------------------------------------------------------------------------------------


def test_overfit_model_scores_high(overfit_run, arithmetic_dir, tmp_path):
    out = tmp_path / "overfit.json"
    eval_checkpoints.main(
        [
            "--config",
            str(TINY / "full_ft.yaml"),
            f"model.tokenizer={QWEN3_TOKENIZER}",
            f"data.source={arithmetic_dir}",
            "eval.n_samples=null",
            "task.max_new_tokens=32",
            "--base_dir",
            str(overfit_run.base),
            "--output",
            str(out),
            "--conditions",
            "overfit",
        ]
    )
    (entry,) = load_results(out)["results"]
    rows = arithmetic_rows()
    assert entry["step"] == OVERFIT_STEPS and entry["n"] == len(rows)
    assert [ex["index"] for ex in entry["examples"]] == list(range(len(rows)))
    assert [ex["gold"] for ex in entry["examples"]] == [gold_answer(r["answer"]) for r in rows]
    print(
        f"overfit: {OVERFIT_STEPS} steps in {overfit_run.seconds:.0f} s, accuracy {entry['accuracy']:.2%}; "
        f"predictions {[ex['prediction'] for ex in entry['examples'][:3]]}"
    )
    assert entry["accuracy"] >= 0.9, [(ex["prediction"], ex["gold"]) for ex in entry["examples"]]
