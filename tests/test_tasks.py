"""Tasks by config: row formats and file formats, templates, system prompts, scoring rules (a callable
only from the command line's config), questions-only rows with an exemplar pool, the plain template, and
the shipped task configs (GSM8K = the defaults; twostep with its generator)."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from conftest import CONFIGS, OFFLINE_OVERRIDES, QWEN3_TOKENIZER, REPO

from fsdistill.config import ConfigError, TaskConfig, from_dict, load_config, to_dict
from fsdistill.errors import UserError
from fsdistill.files import sha256_file
from fsdistill.tasks import ConfiguredTask, Scored, make_task
from fsdistill.tasks.rows import DataError
from fsdistill.tasks.scoring import make_scoring, normalize_text
from fsdistill.tools import twostep


def task_of(**settings) -> ConfiguredTask:
    s = TaskConfig(**settings)
    return ConfiguredTask(s, make_scoring(s))


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config_file(tmp_path: Path, text: str, name: str = "task.yaml") -> Path:
    """A config on the tiny model (its own Qwen3 tokenizer, offline) with a task section of `text`."""
    path = tmp_path / name
    path.write_text(f"inherit: {CONFIGS / 'tiny' / 'online_v1.yaml'}\n{text}")
    return path


# --------------------------------------------------------------------------------------------------
# Row formats
# --------------------------------------------------------------------------------------------------


def test_fields_with_any_template_field_and_a_gold_field(tmp_path):
    task = task_of(
        question_template="Topic: {topic}. {question}",
        gold_field="final",
        scoring="last_number",
        answer_field="worked",
    )
    path = write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"question": "2 + 2?", "worked": "2 + 2 = 4", "final": 4, "topic": "sums"},
            {"question": "3 + 3?", "final": "6", "topic": 7},  # questions only: no worked answer
        ],
    )
    rows = task.load(str(path), "train", "main")
    assert [(e.question, e.answer, e.gold) for e in rows] == [
        ("2 + 2?", "2 + 2 = 4", "4"),
        ("3 + 3?", None, "6"),
    ]
    assert task.user_turn(rows[0]) == "Topic: sums. 2 + 2?"
    assert task.user_turn(rows[1]) == "Topic: 7. 3 + 3?"


def test_messages_and_prompt_completion_rows(tmp_path):
    msgs = task_of(row_format="messages", question_template="{question}", scoring="exact")
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris."},
                ]
            },
            {"messages": [{"role": "user", "content": "Capital of Spain?"}]},
        ],
    )
    rows = msgs.load(str(path), "x", "main")
    assert [(e.question, e.answer, e.gold) for e in rows] == [
        ("Capital of France?", "Paris.", "paris"),
        ("Capital of Spain?", None, None),
    ]
    pc = task_of(row_format="prompt_completion", question_template="Q: {question}", scoring="exact")
    path = write_jsonl(
        tmp_path / "pc.jsonl",
        [
            {"prompt": "Say hi", "completion": "Hi"},
            {
                "prompt": [{"role": "user", "content": "Say bye"}],
                "completion": [{"role": "assistant", "content": "Bye"}],
            },
        ],
    )
    rows = pc.load(str(path), "x", "main")
    assert [(e.question, e.answer) for e in rows] == [("Say hi", "Hi"), ("Say bye", "Bye")]
    assert pc.user_turn(rows[1]) == "Q: Say bye"


def test_malformed_chat_rows_are_named_by_line(tmp_path):
    task = task_of(row_format="messages", question_template="{question}", scoring="exact")
    path = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "q"}]},
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "again"},
                ]
            },
            {"text": "no messages"},
        ],
    )
    with pytest.raises(DataError) as e:
        task.load(str(path), "x", "main")
    message = str(e.value)
    assert "3 malformed lines" in message
    assert f"{path}:1: field 'messages' must hold a user message" in message
    assert f"{path}:2: field 'messages' must be [user] or [user, assistant] messages" in message
    assert f"{path}:3: missing field 'messages'" in message


@pytest.mark.parametrize("fmt", ["json", "csv", "parquet"])
def test_json_csv_and_parquet_files_through_datasets(tmp_path, fmt):
    import datasets

    records = [
        {"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}", "final": str(i + 1)}
        for i in range(5)
    ]
    records[3] = {"question": "What is 3 + 1?", "answer": None, "final": None}  # questions only, no gold
    ds = datasets.Dataset.from_list(records)
    path = tmp_path / f"test.{fmt}"
    {"json": ds.to_json, "csv": ds.to_csv, "parquet": ds.to_parquet}[fmt](
        str(path), **({"lines": False} if fmt == "json" else {})
    )
    task = task_of(gold_field="final", scoring="last_number")
    rows = task.load(str(tmp_path), "test", "main")  # a folder: {split}.json / .csv / .parquet found
    assert [e.gold for e in rows] == ["1", "2", "3", None, "5"]
    assert rows[3].answer is None
    with pytest.raises(DataError, match=rf"test\.{fmt} row 4: missing field 'final' \(task.gold_field\)"):
        task.load(str(path), "test", "main", ("gold",))


def test_a_template_field_the_rows_lack_is_named_with_file_line_and_key(tmp_path):
    task = task_of(question_template="{question} ({subject})")
    rows = [{"question": "q", "answer": "#### 1"}, {"question": "q2", "answer": "#### 2", "subject": "maths"}]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(
        DataError,
        match=rf"{path}:1: task.question_template uses {{subject}}, but the row has no field 'subject'",
    ):
        task.load(str(path), "t", "main")


@pytest.mark.parametrize(
    "settings, key",
    [
        ({}, "task.question_field"),
        ({"question_field": "problem", "gold_field": "final", "scoring": "last_number"}, "task.gold_field"),
        (
            {
                "question_template": "{question} ({subject})",
                "question_field": "problem",
                "answer_field": "solution",
            },
            "task.question_template",
        ),
        ({"row_format": "messages"}, "task.messages_field"),
    ],
)
def test_a_field_no_row_has_is_one_error_naming_the_key_and_the_rows_fields(tmp_path, settings, key):
    """A wrong task.*_field makes every row lack the field: one error naming the key to change and the
    fields the first row has, not one line per row."""
    task = task_of(**settings)
    rows = [{"problem": f"What is {i} + 1?", "solution": f"#### {i + 1}"} for i in range(30)]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    with pytest.raises(DataError) as e:
        task.load(str(path), "t", "main", ("gold",))
    message = str(e.value)
    assert message.startswith(f"{path}: no row has the field ") and key in message, message
    assert (
        "(all 30 rows lack it)" in message and "the first row's fields are ['problem', 'solution']" in message
    )
    assert message.count("\n") == 0 and ":2:" not in message  # once, not per line
    records = tmp_path / "t.json"  # the same through datasets (JSON, CSV, Parquet)
    records.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=rf"{records}: no row has the field .*{key}"):
        task.load(str(records), "t", "main", ("gold",))


def test_what_a_use_needs_is_refused_by_line_when_missing(tmp_path):
    task = task_of(gold_field="final", scoring="last_number")
    path = write_jsonl(
        tmp_path / "q.jsonl", [{"question": "q1", "final": "3"}, {"question": "q2", "answer": "so 4"}]
    )
    assert [e.gold for e in task.load(str(path), "q", "main")] == ["3", None]
    with pytest.raises(DataError) as e:
        task.load(str(path), "q", "main", ("answer", "gold"))
    assert f"{path}:1: missing field 'answer' (training on gold answers" in str(e.value)
    assert f"{path}:2: missing field 'final' (task.gold_field)" in str(e.value)


# --------------------------------------------------------------------------------------------------
# Scoring rules
# --------------------------------------------------------------------------------------------------


def test_last_number_scoring():
    task = task_of(scoring="last_number")
    assert task.scoring.gold_from_answer("7 + 18 = 25, 25 * 10 = 250. Answer: 250") == "250"
    assert task.score("so 25 * 10 = 250. Answer: 250.", "250") == Scored("250", True)
    assert task.score("Answer: 250 (or 25)", "250") == Scored("25", False)
    assert task.score("#### 250 then 3", "250") == Scored("3", False)  # no '####' rule: the last number
    assert task.score("no idea", "4") == Scored(None, False)
    with pytest.raises(ValueError, match="no number"):
        task.scoring.gold_from_answer("none")


def test_exact_scoring_normalises():
    task = task_of(scoring="exact")
    assert normalize_text("  The  Eiffel\nTower. ") == "the eiffel tower"
    assert task.score("the eiffel TOWER!", task.scoring.normalize_gold("The Eiffel Tower")).correct
    assert not task.score("the eiffel", "the eiffel tower").correct
    assert task.score("   ", "x") == Scored(None, False)


@pytest.mark.parametrize(
    ("generation", "letter"),
    [
        ("The answer is (C).", "C"),
        ("A good guess: answer: b", "B"),
        ("(D)", "D"),
        ("I pick E.", "E"),
        ("Apples are red", None),
        ("A cat and B dog; the answer is A", "A"),
    ],
)
def test_choice_scoring_reads_the_letter(generation, letter):
    task = task_of(scoring="choice")
    assert task.score(generation, "C") == Scored(letter, letter == "C")


def test_choice_gold_must_be_a_letter():
    task = task_of(scoring="choice")
    assert task.scoring.normalize_gold(" (b) ") == "B"
    with pytest.raises(ValueError, match="not a choice letter"):
        task.scoring.normalize_gold("2")


def test_regex_scoring_takes_the_group_of_the_last_match():
    task = task_of(scoring="regex", scoring_regex=r"Final: (\w+)")
    assert task.score("Final: cat ... Final: Dog.", "dog") == Scored("dog", True)
    assert task.score("no marker", "dog") == Scored(None, False)
    assert task.scoring.gold_from_answer("Final: Cat") == "cat"


def test_callable_scoring_from_the_command_line_config(tmp_path):
    path = config_file(tmp_path, "task:\n  scoring: callable\n  scoring_callable: 'scorers:same_parity'\n")
    cfg, _ = load_config(str(path), overrides=OFFLINE_OVERRIDES)
    task = make_task(cfg)
    assert task.score("it is 7", "3") == Scored("7", True)
    assert task.score("it is 8", "3") == Scored("8", False)
    cfg_bool, _ = load_config(
        str(path), overrides=[*OFFLINE_OVERRIDES, "task.scoring_callable=scorers:says_yes"]
    )
    assert make_task(cfg_bool).score("Yes", "1") == Scored(None, True)


def test_a_callable_is_never_imported_from_a_recorded_config(tmp_path):
    path = config_file(tmp_path, "task:\n  scoring: callable\n  scoring_callable: 'scorers:same_parity'\n")
    cfg, _ = load_config(str(path), overrides=OFFLINE_OVERRIDES)
    recorded = from_dict(to_dict(cfg), "run.json (config)")  # what evaluation rebuilds from a run folder
    with pytest.raises(
        UserError,
        match="comes from a recorded config .* code is imported only from the config given on the command line",
    ):
        make_task(recorded)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz' (ModuleNotFoundError"),
        ("scorers:missing", "module 'scorers' has no attribute 'missing'"),
        ("scorers:NOT_CALLABLE", "is not callable (a int)"),
    ],
)
def test_an_import_path_that_does_not_resolve_is_named_with_file_and_key(tmp_path, path, message):
    cfg_path = config_file(tmp_path, f"task:\n  scoring: callable\n  scoring_callable: '{path}'\n")
    cfg, _ = load_config(str(cfg_path), overrides=OFFLINE_OVERRIDES)
    with pytest.raises(UserError) as e:
        make_task(cfg)
    assert str(e.value).startswith(f"{cfg_path.name}: 'task.scoring_callable'") or str(cfg_path) in str(
        e.value
    )
    assert message in str(e.value)


def test_a_callable_with_a_wrong_return_type_fails_loudly(tmp_path):
    cfg_path = config_file(tmp_path, "task:\n  scoring: callable\n  scoring_callable: 'scorers:broken'\n")
    cfg, _ = load_config(str(cfg_path), overrides=OFFLINE_OVERRIDES)
    with pytest.raises(
        UserError,
        match="'task.scoring_callable' scorers:broken returned 'not a verdict'.* must return a bool or",
    ):
        make_task(cfg).score("x", "y")


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            "  scoring: regex\n  scoring_regex: 'Answer: \\d+'\n",
            "'task.scoring_regex' must have exactly one group (the answer)",
        ),
        ("  scoring: regex\n  scoring_regex: '(a)(b)'\n", "has 2"),
        ("  scoring: regex\n  scoring_regex: '(unclosed'\n", "'task.scoring_regex' is not a valid regex"),
        ("  scoring: regex\n", "'task.scoring' is 'regex', which needs task.scoring_regex"),
        ("  scoring: callable\n", "'task.scoring' is 'callable', which needs task.scoring_callable"),
        ("  scoring: callable\n  scoring_callable: 'not a path'\n", "must be 'package.module:function'"),
        ("  scoring_regex: '(x)'\n", "is only read with task.scoring=regex"),
        ("  question_template: 'Q: {question.__class__}'\n", "may only name fields as {name}"),
        ("  question_template: 'Q: {question'\n", "is not a valid template"),
        ("  question_template: 'Q: {text}'\n", "must contain the placeholder {question}"),
        ("  scoring: fuzzy\n", "'task.scoring' must be one of"),
    ],
)
def test_bad_task_configs_fail_naming_file_and_key_before_anything_loads(tmp_path, lines, message):
    path = config_file(tmp_path, "task:\n" + lines)
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert message in str(e.value)
    assert f"{path.name}" in str(e.value) or str(path) in str(e.value)


def test_shuffling_fewer_than_two_exemplars_is_refused(tmp_path):
    from fsdistill.methods import check_entry_point

    shuffled = str(CONFIGS / "tiny" / "ablation_shuffled_answers.yaml")
    with pytest.raises(ConfigError, match="'fewshot.shuffle_answers' needs fewshot.k >= 2, got k=1"):
        load_config(shuffled, overrides=["fewshot.k=1"])
    cfg, source = load_config(shuffled, overrides=["fewshot.k=0"])  # no exemplars: two controls at once
    with pytest.raises(
        ConfigError, match="'fewshot.shuffle_answers' is true with fewshot.k=0 .* cannot both hold"
    ):
        check_entry_point("train_ablation.py", cfg, source)


def test_a_config_saved_before_shuffle_modes_reads_as_the_original_permutation():
    cfg, _ = load_config(str(CONFIGS / "ablation_shuffled_answers.yaml"))
    assert cfg.fewshot.shuffle_mode == "derangement"  # the default for new configs
    saved = to_dict(cfg)
    del saved["fewshot"]["shuffle_mode"]  # what a run.json of an earlier version holds
    assert from_dict(saved, "old run.json").fewshot.shuffle_mode == "permutation"
    saved["fewshot"]["shuffle_answers"] = False
    assert from_dict(saved, "old run.json").fewshot.shuffle_mode == "derangement"


# --------------------------------------------------------------------------------------------------
# Prompts: system prompt, the plain template
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    if not QWEN3_TOKENIZER.exists():
        pytest.skip(f"{QWEN3_TOKENIZER} not found")
    from fsdistill.data.prompts import load_tokenizer

    return load_tokenizer(str(QWEN3_TOKENIZER))


def test_the_system_prompt_opens_student_teacher_and_generation_prompts(tokenizer):
    from fsdistill.data.prompts import PromptBuilder

    cfg, _ = load_config(
        str(CONFIGS / "tiny" / "online_v1.yaml"),
        overrides=[*OFFLINE_OVERRIDES, "task.system_prompt=You add numbers."],
    )
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    task = make_task(cfg)
    q, shot = (
        task.parser()({"question": t, "answer": f"#### {i}"}, i, "x") for i, t in enumerate(["A?", "B?"])
    )
    pair = prompts.encode_pair(q, [shot])
    for ids in (pair.student_ids, pair.teacher_ids, prompts.generation_prompt_ids(q, [])):
        text = tokenizer.decode(ids)
        assert text.count("You add numbers.") == 1
        assert text.index("You add numbers.") < text.index("Question: ")


def test_plain_template_for_a_tokenizer_without_a_chat_template(tokenizer, monkeypatch):
    from fsdistill.data.prompts import PromptBuilder

    monkeypatch.setattr(tokenizer, "chat_template", None)
    cfg, _ = load_config(
        str(CONFIGS / "tiny" / "online_v1.yaml"), overrides=[*OFFLINE_OVERRIDES, "model.chat_template=plain"]
    )
    prompts = PromptBuilder.from_config(tokenizer, cfg)
    task = make_task(cfg)
    q = task.parser()({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}, 0, "x")
    shot = task.parser()({"question": "What is 1 + 1?", "answer": "#### 2"}, 1, "x")
    prompt_ids, answer_ids, answer_part = prompts.encode_student(q)
    assert tokenizer.decode(prompt_ids) == "Question: What is 2 + 2?\nAnswer:"
    assert answer_part == f" 2 + 2 = 4\n#### 4{tokenizer.eos_token}\n\n"
    assert prompts.end_of_turn_ids() == [tokenizer.eos_token_id]
    teacher = tokenizer.decode(prompts.encode_pair(q, [shot]).teacher_ids)
    assert teacher.startswith(
        f"Question: What is 1 + 1?\nAnswer: #### 2{tokenizer.eos_token}\n\nQuestion: What is 2 + 2?"
    )


# --------------------------------------------------------------------------------------------------
# Questions-only training rows and the exemplar pool
# --------------------------------------------------------------------------------------------------


def test_questions_only_training_rows_are_refused_for_gold_answer_training_naming_the_line(
    tmp_path, tokenizer
):
    from fsdistill.data.batch import build_training_batches

    data = tmp_path / "data"
    write_jsonl(
        data / "train.jsonl",
        [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(6)] + [{"question": "q6"}],
    )
    cfg, _ = load_config(
        str(CONFIGS / "tiny" / "base.yaml"),
        overrides=[f"model.tokenizer={QWEN3_TOKENIZER}", f"data.source={data}"],
    )
    with pytest.raises(
        DataError, match=rf"{data}/train.jsonl:7: missing field 'answer' \(training on gold answers"
    ):
        build_training_batches(cfg, tokenizer, with_teacher=False, num_processes=1)


def test_exemplars_from_a_separate_pool(tmp_path, tokenizer):
    from fsdistill.data.batch import build_training_batches
    from fsdistill.eval.evaluate import load_eval_data

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", [{"question": f"train q{i}", "answer": f"#### {i}"} for i in range(8)])
    write_jsonl(data / "test.jsonl", [{"question": f"test q{i}", "answer": f"#### {i}"} for i in range(4)])
    write_jsonl(
        data / "worked.jsonl", [{"question": f"pool q{i}", "answer": f"pool #### {i}"} for i in range(3)]
    )
    common = [
        f"model.tokenizer={QWEN3_TOKENIZER}",
        f"data.source={data}",
        "fewshot.pool=worked",
        "fewshot.k=2",
        "eval.n_samples=null",
    ]
    for selection in ("per_example", "fixed", "per_batch"):
        cfg, _ = load_config(
            str(CONFIGS / "tiny" / "online_v1.yaml"), overrides=[*common, f"fewshot.selection={selection}"]
        )
        batches = build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)
        assert sorted(batches.by_row) == list(range(8))  # no training row removed: the pool is elsewhere
        for row in range(8):
            shots = batches.shots.shots(row, 0, batches.order.step_rows(0))
            assert len(shots) == 2 and all(s.question.startswith("pool q") for s in shots)
    data_eval = load_eval_data(cfg, make_task(cfg), "test")
    assert all(e.question.startswith("pool q") for e in data_eval.train)
    cfg, _ = load_config(str(CONFIGS / "tiny" / "online_v1.yaml"), overrides=[*common, "fewshot.k=4"])
    with pytest.raises(UserError, match="fewshot.k=4 needs at least 4 rows in fewshot.pool, it has 3"):
        build_training_batches(cfg, tokenizer, with_teacher=True, num_processes=1)


def test_a_validation_split_serves_every_training_seed(tmp_path, tokenizer):
    from fsdistill.eval.evaluate import load_eval_data

    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", [{"question": f"q{i}", "answer": f"#### {i}"} for i in range(8)])
    write_jsonl(data / "dev.jsonl", [{"question": f"dev q{i}", "answer": f"#### {i}"} for i in range(3)])
    for seed in (1, 2):
        cfg, _ = load_config(
            str(CONFIGS / "tiny" / "base.yaml"),
            overrides=[
                f"model.tokenizer={QWEN3_TOKENIZER}",
                f"data.source={data}",
                "data.validation_split=dev",
                f"training.seed={seed}",
                "eval.n_samples=null",
            ],
        )
        data_eval = load_eval_data(cfg, make_task(cfg), "validation")
        assert [e.question for e in data_eval.examples] == ["dev q0", "dev q1", "dev q2"]
        assert len(data_eval.train) == 8
    with pytest.raises(
        ConfigError, match="data.validation_split' and data.validation_size=2 both name a validation set"
    ):
        load_config(
            str(CONFIGS / "tiny" / "base.yaml"),
            overrides=["data.validation_split=dev", "data.validation_size=2"],
        )


# --------------------------------------------------------------------------------------------------
# Shipped task configs
# --------------------------------------------------------------------------------------------------


def test_the_gsm8k_task_config_states_the_schema_defaults():
    import yaml

    from fsdistill.config import DataConfig

    shipped = yaml.safe_load((CONFIGS / "tasks" / "gsm8k.yaml").read_text())
    assert shipped["task"] == {k: v for k, v in to_dict_section(TaskConfig()).items() if k in shipped["task"]}
    assert shipped["data"] == {k: v for k, v in to_dict_section(DataConfig()).items() if k in shipped["data"]}
    for config in ("base.yaml", "tiny/base.yaml", "smollm2/sft.yaml"):
        assert load_config(str(CONFIGS / config))[0].task.name == "gsm8k"


def to_dict_section(section) -> dict:
    import dataclasses

    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)}


def test_twostep_data_is_disjoint_deterministic_and_scores_its_own_answers(tmp_path):
    paths = twostep.write_splits(tmp_path / "a", seed=0)
    again = twostep.write_splits(tmp_path / "b", seed=0)
    assert all(paths[s].read_bytes() == again[s].read_bytes() for s in paths)
    cfg, _ = load_config(
        str(CONFIGS / "twostep" / "distill.yaml"), overrides=[f"data.source={tmp_path / 'a'}"]
    )
    task = make_task(cfg)
    splits = {s: task.load(cfg.data.source, s, "main", ("answer", "gold")) for s in twostep.SPLITS}
    assert {s: len(r) for s, r in splits.items()} == twostep.SPLITS
    questions = [{e.question for e in rows} for rows in splits.values()]
    assert sum(map(len, questions)) == len(set().union(*questions)) == 1200  # disjoint, no duplicates
    for e in random.Random(0).sample(splits["test"], 50):
        a, b, c = twostep_operands(e.question)
        assert e.gold == str((a + b) * c)
        assert task.score(e.answer, e.gold) == Scored(e.gold, True)
    user = task.user_turn(splits["test"][0])
    assert user.endswith("? Answer in one short line ending with 'Answer:' and the number.")
    assert twostep.make_splits(seed=1)["test"] != twostep.make_splits(seed=0)["test"]
    recorded = json.loads((tmp_path / "a" / twostep.VERSION_FILE).read_text())
    assert recorded["version"] == twostep.VERSION == 2 and recorded["seed"] == 0
    assert recorded["files"]["test.jsonl"]["sha256"] == sha256_file(paths["test"])


def twostep_operands(question: str) -> tuple[int, int, int]:
    """(a, b, c) of a twostep question, read from its text."""
    a, b, c = re.fullmatch(r"What is \((\d+) \+ (\d+)\) \* (\d+)\?", question).groups()
    return int(a), int(b), int(c)


def twins_across_files(folder: Path) -> dict[tuple[str, str], int]:
    """{(split, other): problems of split whose swapped-operand twin (b + a) * c is in other}, read from
    the written files' questions (what the model sees), not from the generator's own grouping."""
    problems = {
        split: {twostep_operands(json.loads(line)["question"]) for line in open(folder / f"{split}.jsonl")}
        for split in twostep.SPLITS
    }
    return {
        (s, o): sum((b, a, c) in problems[o] for a, b, c in problems[s] if a != b)
        for s in problems
        for o in problems
        if o != s
    }


def test_twostep_twins_never_cross_splits(tmp_path):
    """Data version 2 keeps each problem and its swapped-operand twin (same answer) in one split, at the
    same sizes; version 1 (the first results' layout, kept by a flag) leaks them, as the issue counted."""
    for seed in (0, 1):
        twostep.main(["--out", str(tmp_path / f"v2_{seed}"), "--seed", str(seed)])
        assert set(twins_across_files(tmp_path / f"v2_{seed}").values()) == {0}
    twostep.main(["--out", str(tmp_path / "v1"), "--version", "1"])
    leaked = twins_across_files(tmp_path / "v1")
    assert (leaked["test", "train"], leaked["test", "validation"], leaked["validation", "train"]) == (
        217,
        86,
        75,
    )
    # Shared by design in both versions: most test problems have a training problem with their (a + b, c).
    assert twostep.shared_sum_and_multiplier(twostep.make_splits(0)) > 0.5


def test_twostep_answers_are_read_for_their_first_step_and_format():
    row = twostep.problem(7, 18, 10)
    assert twostep.first_step_right(row["answer"], row) and twostep.is_two_step(row["answer"])
    assert twostep.first_step_right("18 + 7 = 25, 25 * 10 = 350. Answer: 350", row)  # a wrong product
    assert not twostep.first_step_right("7 + 18 = 24, 24 * 10 = 240. Answer: 240", row)
    assert not twostep.first_step_right("The answer is 250.", row)
    assert twostep.is_two_step("3 + 4 = 8, 8 * 2 = 16. Answer: 16")  # the format, whatever the numbers
    assert not twostep.is_two_step("3 + 4 = 7. Answer: 7") and not twostep.is_two_step("(3 + 4) * 2 = 14")


def test_twostep_version_1_is_rewritten_byte_identically_for_the_results_measured_on_it(tmp_path):
    """--version 1 writes exactly the files the first results were measured on (their provenance hashes)."""
    recorded = json.loads((REPO / "experiments" / "twostep" / "v1" / "test_eval.json").read_text())
    hashes = recorded["provenance"]["data_sha256"]
    paths = twostep.main(["--out", str(tmp_path), "--version", "1"])
    assert {f"data/twostep/{p.name}": sha256_file(p) for s, p in paths.items() if s != "validation"} == hashes
    assert json.loads((tmp_path / twostep.VERSION_FILE).read_text())["version"] == 1


def test_result_files_name_the_task_and_its_settings():
    from fsdistill.eval.evaluate import result_settings

    cfg, _ = load_config(str(CONFIGS / "twostep" / "distill.yaml"))
    settings = result_settings(cfg, "eval_icl", "test")
    assert settings["task"] == "twostep"
    assert settings["task.scoring"] == "last_number" and settings["task.gold_field"] == "final"
    assert settings["task.question_template"].endswith("ending with 'Answer:' and the number.")
    # The training seed draws nothing when the validation rows are a split of their own, so seeds share files.
    other_seed, _ = load_config(str(CONFIGS / "twostep" / "distill.yaml"), overrides=["training.seed=2"])
    assert result_settings(other_seed, "eval_icl", "test") == settings
    # Nor does how a vLLM engine runs: files written before the vllm section existed stay resumable.
    eager, _ = load_config(str(CONFIGS / "twostep" / "distill.yaml"), overrides=["vllm.enforce_eager=true"])
    assert result_settings(eager, "eval_icl", "test") == settings
    assert not any(key.startswith("vllm.") for key in settings)
    held_out = [f"data.source={CONFIGS}", "data.validation_split=null", "data.validation_size=10"]
    a, _ = load_config(str(CONFIGS / "twostep" / "distill.yaml"), overrides=held_out)
    b, _ = load_config(str(CONFIGS / "twostep" / "distill.yaml"), overrides=[*held_out, "training.seed=2"])
    assert result_settings(a, "eval_icl", "test") != result_settings(b, "eval_icl", "test")
