"""Prompts from the tokenizer's chat template, with the real Qwen3 tokenizer and with Llama-3- and
Gemma-3-style templates: the think block, the answer part, and ids equal to the template's full text."""

from __future__ import annotations

import copy
import datetime
import random
from pathlib import Path

import pytest
from conftest import REPO, qwen_cfg

from fsdistill.data.batch import IGNORE_INDEX, build_training_batches
from fsdistill.data.prompts import PromptBuilder, TemplateError

THINK, END_THINK = 151667, 151668  # Qwen3's <think> and </think>
IM_START, IM_END, NEWLINE = 151644, 151645, 198
NO_THINK_SUFFIX = "<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.fixture(scope="module")
def qwen_prompts(qwen3_tokenizer):
    cfg = qwen_cfg()
    return PromptBuilder.from_config(qwen3_tokenizer, cfg)


def conversation(shots, question, answer=None):
    """The original's turns, written out here independently of PromptBuilder (shots: Examples)."""
    msgs = []
    for shot in shots:
        msgs += [
            {"role": "user", "content": f"Question: {shot.question}"},
            {"role": "assistant", "content": shot.answer},
        ]
    msgs.append({"role": "user", "content": f"Question: {question}"})
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


# --------------------------------------------------------------------------------------------------
# Qwen3: enable_thinking=False reaches the template; labels never hold the think block
# --------------------------------------------------------------------------------------------------


def test_generation_prompt_ends_with_the_empty_think_block(qwen3_tokenizer, qwen_prompts, train_rows):
    ex, shot = train_rows[0], train_rows[1]
    for shots in ([], [shot]):
        ids = qwen_prompts.generation_prompt_ids(ex, shots)
        text = qwen3_tokenizer.decode(ids)
        assert text.endswith(f"Question: {ex.question}<|im_end|>\n" + NO_THINK_SUFFIX)
        assert ids[-7:] == [IM_START, 77091, NEWLINE, THINK, 271, END_THINK, 271]
    # The control: the same template without the argument, or with it hidden in chat_template_kwargs
    # (the original's defect), opens the assistant turn with thinking on.
    msgs = conversation([], ex.question)
    for kwargs in ({}, {"chat_template_kwargs": {"enable_thinking": False}}):
        plain = qwen3_tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=True, **kwargs
        )
        assert plain.endswith("<|im_start|>assistant\n") and "<think>" not in plain


def test_answer_part_is_the_answer_and_the_end_of_turn(qwen3_tokenizer, qwen_prompts, train_rows):
    ex = train_rows[5]
    prompt, answer_part = qwen_prompts.split_prompt_answer([qwen_prompts.user_turn(ex)], ex.answer, "t")
    assert prompt.endswith(NO_THINK_SUFFIX)
    assert answer_part == ex.answer + "<|im_end|>\n"
    _, answer_ids, text = qwen_prompts.encode_student(ex)
    assert text == answer_part
    assert answer_ids[-2:] == [IM_END, NEWLINE]
    assert qwen3_tokenizer.decode(answer_ids) == answer_part


def test_labels_never_contain_the_think_tokens(qwen3_tokenizer):
    cfg = qwen_cfg("fewshot.k=3")
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)
    for step in range(3):
        for micro in range(cfg.training.grad_accum_steps):
            b = batches.micro_batch(step, micro, 0, 1, cfg.training.per_device_batch_size).batch
            labelled = b.labels[b.labels != IGNORE_INDEX]
            assert labelled.numel() > 0
            assert not set(labelled.tolist()) & {THINK, END_THINK}
            # the block is there, in every student's prompt, just before the labels
            for i in range(b.size):
                start = int(b.student_answer_start[i])
                assert b.student_ids[i, start - 4 : start].tolist() == [THINK, 271, END_THINK, 271]
                assert (
                    b.labels[i, start - 1] == IGNORE_INDEX and b.labels[i, start] == b.student_ids[i, start]
                )
                # a teacher's exemplar answers carry no think block: only its final turn has one
                teacher = b.teacher_ids[i, : int(b.teacher_mask[i].sum())].tolist()
                assert teacher.count(THINK) == 1 and teacher.count(END_THINK) == 1


# --------------------------------------------------------------------------------------------------
# 200 random training examples of each few-shot mode: ids == tokenisation of the template's full text
# --------------------------------------------------------------------------------------------------

MODES = [
    ("per_example", False),
    ("per_batch", False),
    ("fixed", False),
    ("per_example", True),
    ("per_batch", True),
    ("fixed", True),
]


def check_examples(tokenizer, batches, picks) -> int:
    """Assert ids equal the full conversation's tokenisation; returns the count of boundary merges."""
    merges = 0
    for step, slot in picks:
        step_rows = batches.order.step_rows(step)
        row = step_rows[slot]
        ex = batches.by_row[row]
        enc = batches.encode(row, step, step_rows)
        shots = batches.shots.shots(row, step, step_rows)
        assert len(shots) == batches.shots.k
        student_text = tokenizer.apply_chat_template(
            conversation([], ex.question, ex.answer), tokenize=False, enable_thinking=False
        )
        teacher_text = tokenizer.apply_chat_template(
            conversation(shots, ex.question, ex.answer), tokenize=False, enable_thinking=False
        )
        answer_part = ex.answer + "<|im_end|>\n"
        for text, ids, start in (
            (student_text, enc.student_ids, enc.student_answer_start),
            (teacher_text, enc.teacher_ids, enc.teacher_answer_start),
        ):
            whole = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert text.endswith(answer_part)
            if whole != ids:  # the joined text tokenises differently: a BPE merge across the boundary
                merges += 1
                continue
            assert tokenizer.decode(ids[start:]) == answer_part
            assert tokenizer.decode(ids[:start]) == text[: -len(answer_part)]
        assert enc.student_ids[enc.student_answer_start :] == enc.teacher_ids[enc.teacher_answer_start :]
        assert enc.answer_len == len(enc.teacher_ids) - enc.teacher_answer_start
    return merges


@pytest.mark.parametrize(
    "selection, shuffle", MODES, ids=[f"{s}{'-shuffled' if sh else ''}" for s, sh in MODES]
)
def test_ids_equal_the_template_text_for_200_random_examples(qwen3_tokenizer, selection, shuffle):
    k = 3 if shuffle else 2
    cfg = qwen_cfg(f"fewshot.k={k}", f"fewshot.selection={selection}", f"fewshot.shuffle_answers={shuffle}")
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=2)
    rng = random.Random(f"{selection}:{shuffle}")
    g = batches.order.global_batch
    picks = [(rng.randrange(1000), rng.randrange(g)) for _ in range(200)]  # 1000 steps: > 4 epochs
    merges = check_examples(qwen3_tokenizer, batches, picks)
    assert merges == 0, f"{merges} of 200 examples tokenise differently across the prompt/answer boundary"


@pytest.mark.parametrize("selection", ["per_example", "per_batch", "fixed"])
def test_ids_equal_the_template_text_with_eight_shots(qwen3_tokenizer, selection):
    cfg = qwen_cfg(f"fewshot.selection={selection}", "fewshot.shuffle_answers=true")
    assert cfg.fewshot.k == 8
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=2)
    rng = random.Random(selection)
    picks = [(rng.randrange(1000), rng.randrange(batches.order.global_batch)) for _ in range(6)]
    assert check_examples(qwen3_tokenizer, batches, picks) == 0


def test_teacher_without_shots_equals_the_student(qwen3_tokenizer):
    cfg = qwen_cfg(config="ablation_zeroshot_teacher.yaml")
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)
    rows = batches.order.step_rows(0)
    for row in rows:
        enc = batches.encode(row, 0, rows)
        assert enc.teacher_ids == enc.student_ids and enc.teacher_answer_start == enc.student_answer_start


# --------------------------------------------------------------------------------------------------
# Other chat templates, written here, applied to a copy of the Qwen3 tokenizer
# --------------------------------------------------------------------------------------------------

# Modelled on Llama 3.1 / 3.2 Instruct's template (tools left out): a system header with the knowledge
# cutoff and today's date, taken from strftime_now unless date_string is passed.
LLAMA3_TEMPLATE = r"""{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

# Modelled on Gemma 3's template: <bos>, user/model turns, the system prompt folded into the first user turn.
GEMMA3_TEMPLATE = r"""{{- bos_token -}}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{- raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") -}}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{- '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") -}}
    {{- message['content'] | trim -}}
    {{- '<end_of_turn>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\n' -}}
{%- endif -%}
"""

TEMPLATES = {
    "llama3": dict(
        template=LLAMA3_TEMPLATE,
        specials=["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        bos="<|begin_of_text|>",
        end_of_turn="<|eot_id|>",
        prompt_end="<|start_header_id|>assistant<|end_header_id|>\n\n",
        config="online_v1_llama.yaml",
    ),
    "gemma3": dict(
        template=GEMMA3_TEMPLATE,
        specials=["<bos>", "<start_of_turn>", "<end_of_turn>"],
        bos="<bos>",
        end_of_turn="<end_of_turn>\n",
        prompt_end="<start_of_turn>model\n",
        config="gemma270m_distill.yaml",
    ),
}


def templated_tokenizer(qwen3_tokenizer, spec):
    tok = copy.deepcopy(qwen3_tokenizer)
    tok.add_special_tokens({"additional_special_tokens": spec["specials"]})
    tok.bos_token = spec["bos"]
    tok.chat_template = spec["template"]
    for s in spec["specials"]:
        assert len(tok(s, add_special_tokens=False)["input_ids"]) == 1, s
    return tok


@pytest.fixture(scope="module")
def templated(qwen3_tokenizer):
    return {name: templated_tokenizer(qwen3_tokenizer, spec) for name, spec in TEMPLATES.items()}


@pytest.fixture(params=sorted(TEMPLATES))
def other_template(request, templated):
    return request.param, TEMPLATES[request.param], templated[request.param]


def test_other_templates_answer_part_and_ids(other_template, train_rows):
    name, spec, tok = other_template
    cfg = qwen_cfg(config=spec["config"])
    prompts = PromptBuilder.from_config(tok, cfg)
    rng = random.Random(name)
    merges = 0
    bos_id = tok.convert_tokens_to_ids(spec["bos"])
    end_ids = tok(spec["end_of_turn"], add_special_tokens=False)["input_ids"]
    for _ in range(25):
        ex = train_rows[rng.randrange(len(train_rows))]
        shots = rng.sample(train_rows, 2)
        enc = prompts.encode_pair(ex, shots)
        answer_part = ex.answer.strip() + spec["end_of_turn"]
        for msgs, ids, start in (
            (conversation([], ex.question, ex.answer), enc.student_ids, enc.student_answer_start),
            (conversation(shots, ex.question, ex.answer), enc.teacher_ids, enc.teacher_answer_start),
        ):
            text = tok.apply_chat_template(msgs, tokenize=False, **cfg.model.chat_template_kwargs)
            assert text.startswith(spec["bos"]) and text.count(spec["bos"]) == 1
            assert text.endswith(answer_part)
            prompt = text[: -len(answer_part)]
            assert prompt.endswith(spec["prompt_end"])
            merges += tok(text, add_special_tokens=False)["input_ids"] != ids
            assert tok.decode(ids[start:]) == answer_part
            assert ids[-len(end_ids) :] == end_ids
            assert ids.count(bos_id) == 1 and ids[0] == bos_id  # the template's BOS, not doubled
        assert enc.student_ids[enc.student_answer_start :] == enc.teacher_ids[enc.teacher_answer_start :]
    assert merges == 0
    assert prompts.end_of_turn_ids() == end_ids[:1]  # what a chat model emits to stop, read off the template


def test_llama_prompt_carries_the_pinned_date_not_todays(templated, train_rows):
    tok = templated["llama3"]
    today = datetime.datetime.now().strftime("%d %b %Y")
    ex = train_rows[0]
    for overrides, pinned in (
        ([], "26 Jul 2024"),
        (["model.chat_template_kwargs.date_string=01 Jan 2001"], "01 Jan 2001"),
    ):
        cfg = qwen_cfg(*overrides, config="online_v1_llama.yaml")
        assert cfg.model.chat_template_kwargs["date_string"] == pinned
        prompts = PromptBuilder.from_config(tok, cfg)
        text = tok.decode(prompts.generation_prompt_ids(ex, []))
        assert f"Cutting Knowledge Date: December 2023\nToday Date: {pinned}\n\n<|eot_id|>" in text
        assert today not in text
        enc = prompts.encode_pair(ex, [train_rows[1]])
        for ids in (enc.student_ids, enc.teacher_ids):
            assert f"Today Date: {pinned}\n" in tok.decode(ids)
    # The control: without date_string, this template does write today's date.
    unpinned = tok.apply_chat_template(
        conversation([], ex.question), tokenize=False, add_generation_prompt=True
    )
    assert f"Today Date: {today}\n" in unpinned


def test_template_whose_generation_prompt_is_not_a_prefix_is_refused(
    qwen3_tokenizer, train_rows, monkeypatch
):
    tok = qwen3_tokenizer
    monkeypatch.setattr(
        tok,
        "chat_template",
        "{%- for m in messages %}{{- m['role'] + ': ' + m['content'] + '\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- 'assistant (thinking): ' }}{%- endif %}",
    )
    prompts = PromptBuilder.from_config(tok, qwen_cfg())
    with pytest.raises(TemplateError, match="not a prefix"):
        prompts.encode_student(train_rows[0])


def test_template_that_renders_the_answer_differently_after_exemplars_is_refused(
    qwen3_tokenizer, train_rows, monkeypatch
):
    tok = qwen3_tokenizer
    monkeypatch.setattr(
        tok,
        "chat_template",
        "{%- for m in messages %}{{- m['role'] + ': ' + m['content'] }}"
        "{%- if m['role'] == 'assistant' %}{{- ' [turn ' + loop.index|string + ']' }}{%- endif %}"
        "{{- '\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- 'assistant: ' }}{%- endif %}",
    )
    prompts = PromptBuilder.from_config(tok, qwen_cfg())
    with pytest.raises(TemplateError, match="renders the answer differently"):
        prompts.encode_pair(train_rows[0], [train_rows[1]])


def test_tokenizer_without_a_chat_template_is_refused(qwen3_tokenizer, monkeypatch):
    tok = qwen3_tokenizer
    monkeypatch.setattr(tok, "chat_template", None)
    with pytest.raises(TemplateError, match="has no chat template"):
        PromptBuilder.from_config(tok, qwen_cfg())


# --------------------------------------------------------------------------------------------------
# No template token is hard-coded in the data code
# --------------------------------------------------------------------------------------------------

TEMPLATE_TOKENS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>",
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<bos>", "<start_of_turn>", "<end_of_turn>", "151643", "151644", "151645", "151667", "151668",
]  # fmt: skip


def code_strings(path: Path) -> list[str]:
    """The string literals of a module's code, docstrings left out (they may name tokens to explain)."""
    import ast

    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_no_template_token_is_written_in_the_package_code():
    """Prompts, answer spans and stop tokens come from each tokenizer's own template, never from a token
    written in our code. Exempt: config.py (help texts explain Qwen3's think block) and the SmolLM2
    conversion tool (it builds that one model's generation config)."""
    package = REPO / "src" / "fsdistill"
    exempt = {package / "config.py", package / "tools" / "smollm2.py"}
    files = [p for p in sorted(package.rglob("*.py")) if p not in exempt]
    assert {p.name for p in files} >= {"prompts.py", "batch.py", "fewshot.py", "generation.py", "gsm8k.py"}
    for path in files:
        for text in code_strings(path):
            for token in TEMPLATE_TOKENS:
                assert token not in text, f"{path.relative_to(package)} hard-codes {token!r}"
