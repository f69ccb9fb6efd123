"""The teacher's context beyond exemplars (teacher.*): a teacher-only system text, shared context files (one,
or a seeded pool), a per-row field through the teacher template, the other-row control; what the student
sees (unchanged); its records (run.json, the teacher-cache key); its prefix reused whatever the exemplars.

Tokenizer-level tests use the real Qwen3 tokenizer (no default system turn) and, where the model folder is
present, the real SmolLM2 tokenizer (whose template inserts a default system turn).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import CONFIGS, OFFLINE_OVERRIDES, prepared_smollm2_dir, qwen_cfg
from helpers import (
    TEACHER_OVERRIDES,
    cli_argv,
    common_overrides,
    metrics,
    run_cli,
    student_and_teacher,
    train_online,
)

from fsdistill.config import ConfigError, load_config
from fsdistill.data.batch import build_training_batches, collate
from fsdistill.data.prompts import EncodedExample, PromptBuilder, load_tokenizer
from fsdistill.data.teacher_prompt import TeacherContext, context_donors
from fsdistill.distill.alignment import answer_positions
from fsdistill.distill.teacher_cache import cache_key
from fsdistill.errors import UserError
from fsdistill.methods import check_entry_point, distillation_method
from fsdistill.tasks.rows import DataError

LONG_SYSTEM = "You are a patient teacher. " + " ".join(
    f"Rule {i}: check every step twice." for i in range(20)
)


def tiny(*overrides: str):
    cfg, _ = load_config(
        str(CONFIGS / "tiny" / "online_v1.yaml"),
        overrides=[*OFFLINE_OVERRIDES, "data.max_train_examples=32", *overrides],
    )
    return cfg


def batches_of(cfg, tokenizer):
    return build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)


def encoded(batches, row: int):
    return batches.encode(row, 0, batches.order.step_rows(0))


# --------------------------------------------------------------------------------------------------
# The config refuses what cannot work, before anything loads
# --------------------------------------------------------------------------------------------------

BAD = {
    "both system texts": (["teacher.system=a", "teacher.system_file=x.txt"], "teacher.system"),
    "template without {question}": (["teacher.template=only {context}"], "{question}"),
    "{context} without a field": (["teacher.template={question} {context}"], "needs teacher.context_field"),
    "a field the template never shows": (
        ["teacher.context_field=answer", "teacher.template={question}"],
        "would never be shown",
    ),
    "control without a field": (["teacher.shuffle_context=true"], "teacher.context_field"),
    "teacher dtype without a model": (["teacher.dtype=float32"], "only read with teacher.model"),
    "vLLM teacher samples from another model": (
        ["teacher.model=some/model", "rollout.source=teacher", "rollout.backend=vllm"],
        "rollout.backend=hf",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_config_refuses(case):
    overrides, needle = BAD[case]
    with pytest.raises(ConfigError) as e:
        load_config(str(CONFIGS / "tiny" / "online_v1.yaml"), overrides=overrides)
    assert needle in str(e.value) and "the command line" in str(e.value)


def test_default_template_is_trl_layout_only_with_a_field():
    assert tiny().teacher.resolved_template() is None
    assert tiny("teacher.context_field=answer").teacher.resolved_template() == "{question}\n\n{context}"


# --------------------------------------------------------------------------------------------------
# What the teacher and the student see
# --------------------------------------------------------------------------------------------------


def test_system_text_follows_the_task_system_prompt_and_the_student_is_unchanged(qwen3_tokenizer, train_rows):
    example, shot = train_rows[0], train_rows[1]
    plain = PromptBuilder.from_config(qwen3_tokenizer, qwen_cfg("task.system_prompt=TASK RULES"))
    withctx = PromptBuilder.from_config(
        qwen3_tokenizer, qwen_cfg("task.system_prompt=TASK RULES", "teacher.system=TEACHER ONLY")
    )
    # The student's ids are the same with or without a teacher context.
    assert withctx.encode_student(example) == plain.encode_student(example)
    for shots in ([], [shot]):
        pair = withctx.encode_pair(example, shots)
        teacher = qwen3_tokenizer.decode(pair.teacher_ids)
        assert teacher.startswith("<|im_start|>system\nTASK RULES\n\nTEACHER ONLY<|im_end|>")
        assert "TEACHER ONLY" not in qwen3_tokenizer.decode(pair.student_ids)
        # The answer ids are identical (alignment by construction).
        assert pair.teacher_ids[pair.teacher_answer_start :] == pair.student_ids[pair.student_answer_start :]
        assert pair.teacher_ids != pair.student_ids


def smollm2_tokenizer():
    return load_tokenizer(str(prepared_smollm2_dir()))


def test_teacher_system_text_replaces_the_templates_default_system_turn(train_rows):
    """SmolLM2's template inserts its own system turn when a conversation has none: the student keeps it,
    the teacher's system text takes its place."""
    tokenizer = smollm2_tokenizer()
    default = "You are a helpful AI assistant named SmolLM"
    cfg = qwen_cfg("teacher.system=Add first, then multiply.")
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    pair = prompts.encode_pair(train_rows[0], [])
    student, teacher = tokenizer.decode(pair.student_ids), tokenizer.decode(pair.teacher_ids)
    assert default in student and "Add first" not in student
    assert default not in teacher and teacher.startswith("<|im_start|>system\nAdd first, then multiply.")


def test_per_row_field_fills_the_template_and_missing_fields_fail_at_load(qwen3_tokenizer, tmp_path):
    rows = [
        {"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}", "hint": f"hint {i}"}
        for i in range(6)
    ]
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    questions_only = [{"question": r["question"], "answer": r["answer"]} for r in rows[:2]]  # no hint
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in questions_only))
    overrides = [f"data.source={data}", "data.max_train_examples=null", "fewshot.k=0", "eval.n_samples=null"]
    cfg = tiny(
        *overrides, "teacher.context_field=answer", "teacher.template={question}\nHint: {hint}\n{context}"
    )
    b = batches_of(cfg, qwen3_tokenizer)
    enc = encoded(b, 3)
    teacher = qwen3_tokenizer.decode(enc.teacher_ids[: enc.teacher_answer_start])
    assert "Question: What is 3 + 1?\nHint: hint 3\n3 + 1 = 4\n#### 4<|im_end|>" in teacher
    # The same rows without the field: refused when the rows load, naming file and line.
    del rows[2]["hint"]
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"train.jsonl:3: the teacher reads field 'hint'"):
        batches_of(cfg, qwen3_tokenizer)
    # Evaluation without the teacher reads those rows: the teacher's field is not needed there.
    from fsdistill.eval.evaluate import load_eval_data

    load_eval_data(cfg, PromptBuilder.from_config(qwen3_tokenizer, cfg).task, "test")


def test_shared_context_file_and_pool_drawn_per_row(qwen3_tokenizer, tmp_path):
    files = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.txt"
        path.write_text(f"NOTES {name.upper()}: add before you multiply.\n")
        files.append(str(path))
    one = batches_of(tiny(f"teacher.context_files=[{files[0]}]"), qwen3_tokenizer)
    pool = batches_of(
        tiny(f"teacher.context_files=[{','.join(files)}]", "teacher.context_seed=3"), qwen3_tokenizer
    )
    seen = set()
    for row in one.order.rows:
        text = qwen3_tokenizer.decode(encoded(one, row).teacher_ids)
        assert "NOTES A: add before you multiply." in text.split("<|im_end|>")[0]  # in the system turn
        drawn = qwen3_tokenizer.decode(encoded(pool, row).teacher_ids).split("<|im_end|>")[0]
        letter = [n for n in "ABC" if f"NOTES {n}" in drawn]
        assert len(letter) == 1
        assert pool.prompts.teacher.shared_for(row).path == files["ABC".index(letter[0])]
        seen.add(letter[0])
    assert seen == {"A", "B", "C"}  # the pool is drawn from, per row
    # Seeded: the same draw again, another draw with another seed.
    again = TeacherContext.from_config(
        tiny(f"teacher.context_files=[{','.join(files)}]", "teacher.context_seed=3").teacher
    )
    other = TeacherContext.from_config(
        tiny(f"teacher.context_files=[{','.join(files)}]", "teacher.context_seed=4").teacher
    )
    rows = list(range(40))
    assert [again.shared_for(r).path for r in rows] == [pool.prompts.teacher.shared_for(r).path for r in rows]
    assert [other.shared_for(r).path for r in rows] != [again.shared_for(r).path for r in rows]
    # Each file's sha256 is recorded.
    identity = pool.prompts.teacher.identity()
    assert set(identity["context_files"]) == set(files) and all(
        len(h) == 64 for h in identity["context_files"].values()
    )


def test_unreadable_context_file_is_refused_naming_the_key(qwen3_tokenizer, tmp_path):
    with pytest.raises(UserError, match="'teacher.context_files': cannot read"):
        batches_of(tiny(f"teacher.context_files=[{tmp_path / 'absent.txt'}]"), qwen3_tokenizer)
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(UserError, match="'teacher.system_file'.*is empty"):
        batches_of(tiny(f"teacher.system_file={empty}"), qwen3_tokenizer)


def test_other_row_control_is_a_seeded_derangement(qwen3_tokenizer):
    cfg = tiny("fewshot.k=0", "teacher.context_field=answer", "teacher.shuffle_context=true")
    b = batches_of(cfg, qwen3_tokenizer)
    assert b.donors == context_donors(b.order.rows, 0)
    assert sorted(b.donors.values()) == sorted(b.order.rows)
    assert all(row != donor for row, donor in b.donors.items())
    own = batches_of(tiny("fewshot.k=0", "teacher.context_field=answer"), qwen3_tokenizer)
    for row in b.order.rows[:8]:
        control = qwen3_tokenizer.decode(encoded(b, row).teacher_ids)
        assert b.by_row[b.donors[row]].answer in control  # another row's worked answer in the user turn
        assert b.by_row[row].question in control  # still its own question
        mine = qwen3_tokenizer.decode(encoded(own, row).teacher_ids)
        assert mine.count(b.by_row[row].answer) == 2  # its own worked answer, then the answer part
    assert context_donors(b.order.rows, 1) != b.donors


def test_over_long_teacher_prompts_are_dropped_and_counted(qwen3_tokenizer, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 900)
    cfg = tiny(f"teacher.context_files=[{big}]", "fewshot.k=0", "data.max_teacher_len=800")
    b = batches_of(cfg, qwen3_tokenizer)
    mb = b.micro_batch(0, 0, 0, 1, 2)
    assert len(mb.dropped_rows) == 2 and mb.batch.num_answer_tokens == 0  # dropped, never cut


# --------------------------------------------------------------------------------------------------
# Methods, records, the cache key
# --------------------------------------------------------------------------------------------------


def test_methods_name_the_teacher():
    assert distillation_method(tiny("fewshot.k=0")).name == "zero_shot_teacher"
    assert distillation_method(tiny("fewshot.k=0", "teacher.system=x")).name == "context_distillation"
    assert distillation_method(tiny("teacher.system=x")).name == "context_distillation"
    assert distillation_method(tiny("fewshot.k=0", "teacher.model=x")).name == "model_distillation"
    assert distillation_method(tiny("teacher.model=x")).name == "few_shot_distillation"
    control = tiny("teacher.context_field=answer", "teacher.shuffle_context=true")
    assert distillation_method(control).name == "other_row_context"
    with pytest.raises(ConfigError, match="run it with train_ablation.py"):
        check_entry_point("train_online_v1.py", control, {"teacher.shuffle_context": "the command line"})
    both = tiny(
        "teacher.context_field=answer", "teacher.shuffle_context=true", "fewshot.shuffle_answers=true"
    )
    with pytest.raises(ConfigError, match="two controls at once"):
        check_entry_point("train_ablation.py", both, {})


def test_cache_key_holds_the_context_texts(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("first version")
    cfg = tiny(f"teacher.context_files=[{notes}]")
    first = cache_key(cfg)
    assert first["teacher_context"]["context_files"][str(notes)]
    notes.write_text("second version")
    assert cache_key(cfg) != first  # an edited file is another cache
    assert cache_key(tiny(f"teacher.context_files=[{notes}]", "teacher.template={question}!")) != cache_key(
        cfg
    )


def test_run_records_the_teacher_context(tmp_path, short_gsm8k):
    system = tmp_path / "system.txt"
    system.write_text("Show your work.")
    out = train_online(
        tmp_path / "run",
        short_gsm8k,
        "fewshot.k=0",
        f"teacher.system_file={system}",
        "teacher.context_field=answer",
        "training.max_steps=1",
        "training.save_every=1",
    )
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["method"] == "context_distillation"
    recorded = manifest["identity"]["teacher_context"]
    assert recorded["system"] == {str(system): hashlib.sha256(b"Show your work.").hexdigest()}
    assert recorded["template"] == "{question}\n\n{context}" and recorded["context_field"] == "answer"


def test_show_batch_shows_the_teacher_context_and_where_each_part_comes_from(capsys):
    from fsdistill.tools.inspect import show_batch

    argv = [
        "--config", str(CONFIGS / "tiny" / "online_v1.yaml"), *OFFLINE_OVERRIDES, "fewshot.k=0",
        "teacher.system=TEACHER RULES", "teacher.context_field=answer", "teacher.template={question} REF: {context}",
    ]  # fmt: skip
    show_batch(argv)
    out = capsys.readouterr().out
    assert "# teacher context: system text: inline (teacher.system), sha256 " in out
    assert "# teacher context: per-row context: field 'answer' of this row" in out
    assert "# teacher context: user-turn template: '{question} REF: {context}'" in out
    student, teacher = out.split("===== TEACHER")
    student = student.split("===== STUDENT")[1]
    assert "TEACHER RULES" not in student and "REF: " not in student
    assert "<|im_start|>system\nTEACHER RULES<|im_end|>" in teacher and " REF: " in teacher
    # The other-row control names the row whose context the teacher reads.
    show_batch([*argv, "teacher.shuffle_context=true"])
    assert "(teacher.shuffle_context)" in capsys.readouterr().out


def test_the_plain_template_places_the_teacher_context_too(qwen3_tokenizer):
    """model.chat_template=plain: the teacher's system text is the first paragraph and its template the
    question line; the student's prompt is the bare question."""
    cfg = tiny(
        "model.chat_template=plain",
        "fewshot.k=0",
        "teacher.system=TEACHER RULES",
        "teacher.context_field=answer",
        "teacher.template={question} REF: {context}",
    )
    b = batches_of(cfg, qwen3_tokenizer)
    row = b.order.rows[0]
    example, pair = b.by_row[row], encoded(b, row)
    student = qwen3_tokenizer.decode(pair.student_ids[: pair.student_answer_start])
    teacher = qwen3_tokenizer.decode(pair.teacher_ids[: pair.teacher_answer_start])
    assert student == f"Question: {example.question}\nAnswer:"
    assert teacher == f"TEACHER RULES\n\nQuestion: {example.question} REF: {example.answer}\nAnswer:"
    assert pair.teacher_ids[pair.teacher_answer_start :] == pair.student_ids[pair.student_answer_start :]


def test_result_files_record_the_teacher_context_and_refuse_an_edited_file(tmp_path, short_gsm8k):
    """Teacher-forced metrics depend on what the teacher reads: a result file records its template and each
    text's sha256, and refuses to take entries measured under an edited file."""
    from fsdistill.eval.icl import main

    system = tmp_path / "system.txt"
    system.write_text("Show your work.")
    out = tmp_path / "eval.json"
    argv = [
        "--config", str(CONFIGS / "tiny" / "online_v1.yaml"), *OFFLINE_OVERRIDES, f"data.source={short_gsm8k}",
        "eval.generate=false", "eval.teacher_forced=true", "eval.n_samples=2", f"teacher.system_file={system}",
        "--output", str(out),
    ]  # fmt: skip
    assert run_cli(main, [*argv, "--shots", "0"]) == 0
    settings = json.loads(out.read_text())["settings"]
    recorded = settings["teacher"]["teacher_context"]
    assert recorded["system"] == {str(system): hashlib.sha256(b"Show your work.").hexdigest()}
    assert settings["teacher.system_file"] == str(system)
    system.write_text("Show your work twice.")
    assert run_cli(main, [*argv, "--shots", "2"]) == 2  # another teacher: refused, exit 2


def test_resume_under_an_edited_context_file_is_refused(tmp_path, short_gsm8k, capsys):
    from fsdistill.train.entry import train_online_v1

    notes = tmp_path / "notes.txt"
    notes.write_text(LONG_SYSTEM)
    overrides = [*common_overrides(short_gsm8k), *TEACHER_OVERRIDES, f"teacher.context_files=[{notes}]"]
    run = tmp_path / "run"
    assert run_cli(train_online_v1, cli_argv("online_v1.yaml", run, *overrides, "training.stop_after=2")) == 0
    notes.write_text(LONG_SYSTEM + " One more rule.")
    capsys.readouterr()
    assert run_cli(train_online_v1, cli_argv("online_v1.yaml", run, *overrides, flags=("--resume",))) == 2
    err = capsys.readouterr().err
    assert "is not this run" in err and "teacher_context" in err


# --------------------------------------------------------------------------------------------------
# The shared prefix: computed once per run whatever the exemplar selection, exact
# --------------------------------------------------------------------------------------------------


def rollout_like(batch_encoded: list[EncodedExample], pad_id: int, seed: int):
    """Prompts + arbitrary 'sampled' ids, appended verbatim to both prompts (what train/rollouts.py does)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for e in batch_encoded:
        ids = torch.randint(100, 5000, (7,), generator=gen).tolist()
        s, t = e.student_ids[: e.student_answer_start], e.teacher_ids[: e.teacher_answer_start]
        out.append(EncodedExample(e.row, s + ids, t + ids, len(s), len(t)))
    return collate(out, pad_id)


@pytest.mark.parametrize("shots", [["fewshot.k=0"], ["fewshot.k=2", "fewshot.selection=per_example"]])
def test_system_prefix_is_computed_once_and_exact(qwen3_tokenizer, shots):
    overrides = [
        *shots,
        f"teacher.system={LONG_SYSTEM}",
        "distill.top_k=16",
        "training.per_device_batch_size=2",
    ]
    cfg, plain_cfg = tiny(*overrides), tiny(*overrides, "teacher.prefix_cache=false")
    b = batches_of(cfg, qwen3_tokenizer)
    gold = [b.micro_batch(step, 0, 0, 1, 2) for step in range(3)]
    batches = [mb.batch for mb in gold] + [
        rollout_like(mb.encoded, qwen3_tokenizer.pad_token_id, i) for i, mb in enumerate(gold)
    ]
    pair = student_and_teacher(cfg)
    plain = student_and_teacher(plain_cfg)
    assert pair.teacher.prefix is not None and plain.teacher.prefix is None
    pair.student.eval()
    plain.student.eval()
    for batch in batches:
        pos = answer_positions(batch)
        got, want = pair.teacher.targets(batch, pos), plain.teacher.targets(batch, pos)
        assert torch.equal(got.topk_indices, want.topk_indices)
        assert torch.allclose(got.topk_values, want.topk_values, atol=1e-4, rtol=1e-4)
    assert pair.teacher.prefix.computed == 1  # once for the run, gold and sampled answers alike
    assert pair.teacher.prefix.reused == len(batches) - 1
    assert pair.teacher.prefix.stored.ids.numel() >= 64


def test_no_prefix_cache_without_a_shared_prefix():
    cfg = tiny("fewshot.k=0", "teacher.context_field=answer")
    assert student_and_teacher(cfg).teacher.prefix is None


def test_context_distillation_trains_end_to_end(tmp_path, short_gsm8k):
    """k = 0 with a teacher-only system text runs through train_online_v1 (not refused as the 0-shot
    control), with a non-zero distillation term from the first step (the teacher's input differs)."""
    out = train_online(
        tmp_path / "run",
        short_gsm8k,
        "fewshot.k=0",
        f"teacher.system={LONG_SYSTEM}",
        "training.max_steps=2",
        "training.save_every=2",
    )
    first = metrics(out)[0]
    assert first["train/dist_loss"] > 0
    assert Path(out / "checkpoint-2").is_dir()
