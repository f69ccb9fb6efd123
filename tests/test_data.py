"""GSM8K loading and validation, length limits, the training order and micro-batches."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from conftest import CONFIGS, OFFLINE_OVERRIDES, gsm8k_parser

from fsdistill.config import load_config
from fsdistill.data.batch import IGNORE_INDEX, ExampleOrder, build_training_batches, collate
from fsdistill.errors import UserError
from fsdistill.tasks import rows
from fsdistill.tasks.rows import DataError, split_train_validation


def load_split(source: str, split: str):
    """A split read as GSM8K rows."""
    return rows.load_split(source, split, "main", gsm8k_parser())


GOOD = {"question": "Tom has 3 apples and buys 2 more. How many?", "answer": "3+2=<<3+2=5>>5\n#### 5"}


def tiny_cfg(*overrides: str, config: str = "tiny/online_v1.yaml"):
    cfg, _ = load_config(str(CONFIGS / config), overrides=[*OFFLINE_OVERRIDES, *overrides])
    return cfg


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def test_load_split_from_the_local_folder(gsm8k_dir):
    train = load_split(str(gsm8k_dir), "train")
    test = load_split(str(gsm8k_dir), "test")
    assert (len(train), len(test)) == (7473, 1319)
    assert [e.row for e in train] == list(range(7473))
    assert train[0].question.startswith("Natalia sold clips to 48 of her friends in April")
    assert train[0].answer.endswith("#### 72")  # the raw answer, annotations and final line kept
    assert "<<48/2=24>>" in train[0].answer
    assert all(e.answer.rsplit("\n", 1)[-1].startswith("#### ") for e in train + test)


def test_a_single_file_and_a_missing_split(gsm8k_dir, tmp_path):
    rows = load_split(str(gsm8k_dir / "test.jsonl"), "anything")
    assert len(rows) == 1319
    with pytest.raises(DataError, match=r"no validation\.jsonl for split 'validation'"):
        load_split(str(gsm8k_dir), "validation")
    with pytest.raises(DataError, match="no such file or folder"):
        load_split(str(tmp_path / "nothing.jsonl"), "train")


def write_jsonl(path, lines: list[str]):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


BAD_ROWS = {
    "bad_json": ('{"question": "q", "answer": ', "not valid JSON"),
    "missing_field": (json.dumps({"question": "q"}), "missing field 'answer'"),
    "non_string_field": (
        json.dumps({"question": 7, "answer": GOOD["answer"]}),
        "field 'question' must be a string",
    ),
    "non_string_answer": (json.dumps({"question": "q", "answer": 5}), "field 'answer' must be a string"),
    "no_final_answer": (
        json.dumps({"question": "q", "answer": "It is 5."}),
        "no valid '#### N' final answer",
    ),
    "final_not_a_number": (
        json.dumps({"question": "q", "answer": "x\n#### five"}),
        "no valid '#### N' final answer",
    ),
    "not_an_object": (json.dumps(["q", "a"]), "must be a JSON object"),
    "empty_question": (json.dumps({"question": "  ", "answer": GOOD["answer"]}), "field 'question' is empty"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_malformed_row_fails_naming_file_and_line(case, tmp_path):
    line, message = BAD_ROWS[case]
    path = write_jsonl(
        tmp_path / "train.jsonl", [json.dumps(GOOD), "", json.dumps(GOOD), line, json.dumps(GOOD)]
    )
    with pytest.raises(DataError) as e:
        load_split(str(tmp_path), "train")
    assert str(e.value).startswith(f"{path}:4: ")  # line 4: blank lines count
    assert message in str(e.value)
    assert isinstance(e.value, UserError)  # the CLIs print it without a traceback


def test_every_bad_line_is_reported_at_once(tmp_path):
    """A damaged file (bytes that are not UTF-8, torn JSON, rows the task refuses) names every bad line in
    one error, so it is mended in one pass; past 20 lines the rest are counted."""
    path = tmp_path / "train.jsonl"
    good = json.dumps(GOOD).encode()
    path.write_bytes(
        b"\n".join([good, b'{"question": "caf\xe9", "answer": "#### 1"}', good, b'{"question": ', good])
        + b"\n"
        + json.dumps({"question": "q"}).encode()
        + b"\n"
    )
    with pytest.raises(DataError) as e:
        load_split(str(tmp_path), "train")
    message = str(e.value)
    assert message.startswith(f"{path}: 3 malformed lines:")
    assert f"{path}:2: not UTF-8 text (byte 17" in message
    assert f"{path}:4: not valid JSON" in message
    assert f"{path}:6: missing field 'answer'" in message
    write_jsonl(path, [json.dumps(GOOD)] + [json.dumps({"question": "q"})] * 25)  # not every row: per line
    with pytest.raises(DataError, match=r"25 malformed lines:(.|\n)*:21: missing(.|\n)*\.\.\. and 5 more$"):
        load_split(str(tmp_path), "train")


def test_good_rows_keep_their_line_position(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", [json.dumps(GOOD), "", json.dumps({**GOOD, "question": "second"})])
    rows = load_split(str(tmp_path), "train")
    assert [(e.row, e.question) for e in rows] == [(0, GOOD["question"]), (2, "second")]


def test_empty_file_is_refused(tmp_path):
    (tmp_path / "train.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_split(str(tmp_path), "train")


def test_validation_split_is_seeded_and_disjoint(gsm8k_dir):
    rows = load_split(str(gsm8k_dir), "train")[:500]
    train, val = split_train_validation(rows, 50, seed=42)
    again, val2 = split_train_validation(rows, 50, seed=42)
    _, other = split_train_validation(rows, 50, seed=43)
    assert len(val) == 50 and len(train) == 450 and val == val2 and train == again
    assert {e.row for e in train}.isdisjoint(e.row for e in val)
    assert {e.row for e in val} != {e.row for e in other}
    with pytest.raises(DataError, match="leaves no training rows"):
        split_train_validation(rows, 500, seed=42)


def test_validation_rows_are_never_trained_on_nor_exemplars(qwen3_tokenizer):
    cfg = tiny_cfg("data.validation_size=40", "fewshot.k=3")
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)
    rows = load_split(cfg.data.source, "train")[:256]
    _, val = split_train_validation(rows, 40, cfg.training.seed)
    held = {e.row for e in val}
    assert held.isdisjoint(batches.order.rows) and held.isdisjoint(batches.shots.pool_rows)
    assert len(batches.order.rows) == 216


# --------------------------------------------------------------------------------------------------
# Length limits: drop, never truncate
# --------------------------------------------------------------------------------------------------


def test_too_long_examples_are_dropped_not_truncated(qwen3_tokenizer):
    cfg = tiny_cfg("data.max_teacher_len=420", "training.per_device_batch_size=4")
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)
    dropped, kept = [], 0
    for step in range(6):
        step_rows = batches.order.step_rows(step)
        for micro in range(cfg.training.grad_accum_steps):
            mb = batches.micro_batch(step, micro, 0, 1, 4)
            rows = batches.micro_rows(step, micro, 0, 1, 4)  # length-grouped by default
            full = {r: batches.encode(r, step, step_rows) for r in rows}
            assert sorted(mb.dropped_rows) == sorted(r for r in rows if len(full[r].teacher_ids) > 420)
            dropped += mb.dropped_rows
            b = mb.batch
            for i, row in enumerate(b.rows.tolist()):
                if row < 0:
                    continue
                kept += 1
                enc = full[row]
                # kept examples are whole: every token of both sequences, the full answer part
                assert b.student_mask[i].sum() == len(enc.student_ids)
                assert b.teacher_mask[i].sum() == len(enc.teacher_ids) <= 420
                assert b.student_ids[i, : len(enc.student_ids)].tolist() == enc.student_ids
                assert b.teacher_ids[i, : len(enc.teacher_ids)].tolist() == enc.teacher_ids
                assert (b.labels[i] != IGNORE_INDEX).sum() == enc.answer_len == b.answer_len[i]
    assert dropped and kept  # the limit bites on some examples and not all


def test_an_all_dropped_micro_batch_is_one_padding_row_without_labels(qwen3_tokenizer):
    cfg = tiny_cfg("data.max_student_len=8", "data.max_teacher_len=8")
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)
    mb = batches.micro_batch(0, 0, 0, 1, 2)
    assert sorted(mb.dropped_rows) == sorted(batches.micro_rows(0, 0, 0, 1, 2))
    b = mb.batch
    pad = qwen3_tokenizer.pad_token_id
    assert b.size == 1 and b.rows.tolist() == [-1]
    assert b.student_ids.tolist() == [[pad]] and b.teacher_ids.tolist() == [[pad]]
    assert (b.labels == IGNORE_INDEX).all() and b.num_answer_tokens == 0


def test_collate_right_pads_and_labels_only_the_answer_part(qwen3_tokenizer):
    cfg = tiny_cfg()
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)
    step_rows = batches.order.step_rows(0)
    encoded = [batches.encode(r, 0, step_rows) for r in step_rows]
    b = collate(encoded, qwen3_tokenizer.pad_token_id)
    assert b.size == len(encoded)
    for i, e in enumerate(encoded):
        n, t = len(e.student_ids), len(e.teacher_ids)
        assert b.student_mask[i].tolist() == [1] * n + [0] * (b.student_ids.shape[1] - n)
        assert b.teacher_mask[i].tolist() == [1] * t + [0] * (b.teacher_ids.shape[1] - t)
        assert (b.student_ids[i, n:] == qwen3_tokenizer.pad_token_id).all()
        labels = b.labels[i].tolist()
        assert labels[: e.student_answer_start] == [IGNORE_INDEX] * e.student_answer_start
        assert labels[e.student_answer_start : n] == e.student_ids[e.student_answer_start :]
        assert set(labels[n:]) <= {IGNORE_INDEX}
        assert b.teacher_answer_start[i] == e.teacher_answer_start
        assert b.rows[i] == e.row


# --------------------------------------------------------------------------------------------------
# ExampleOrder
# --------------------------------------------------------------------------------------------------


def test_each_epoch_visits_every_row_once_reshuffled():
    rows = list(range(100, 197))  # 97 rows, G = 8 does not divide it: steps straddle epochs
    order = ExampleOrder(rows, seed=42, global_batch=8)
    stream = [r for s in range(3 * 97 // 8 + 1) for r in order.step_rows(s)]
    epochs = [stream[i * 97 : (i + 1) * 97] for i in range(3)]
    for e, visited in enumerate(epochs):
        assert sorted(visited) == rows, e
        assert list(order.epoch_order(e)) == visited
    assert epochs[0] != epochs[1] != epochs[2] and epochs[0] != rows


def test_micro_batches_of_a_step_are_disjoint_and_cover_the_step():
    order = ExampleOrder(list(range(1000)), seed=7, global_batch=2 * 3 * 4)  # 2 processes x 3 x accum 4
    for step in (0, 5, 41, 83):  # 83 straddles the first epoch boundary (1000 / 24)
        parts = [order.micro_rows(step, m, r, 2, 3) for m in range(4) for r in range(2)]
        assert all(len(p) == 3 for p in parts)
        flat = [x for p in parts for x in p]
        assert flat == order.step_rows(step)
        assert len(set(flat)) == 24


def test_a_steps_rows_depend_only_on_seed_step_and_global_batch():
    rows = list(range(300))
    a = ExampleOrder(rows, seed=3, global_batch=16)
    b = ExampleOrder(rows, seed=3, global_batch=16)
    late_first = {s: b.step_rows(s) for s in (100, 57, 3, 0)}  # another object, another query order
    assert all(a.step_rows(s) == late_first[s] for s in late_first)
    assert ExampleOrder(rows, seed=4, global_batch=16).step_rows(3) != a.step_rows(3)
    # resuming needs nothing but the step: no state carried from earlier steps
    assert ExampleOrder(rows, seed=3, global_batch=16).step_rows(57) == a.step_rows(57)


def test_training_stream_of_a_config_is_reproducible(qwen3_tokenizer):
    cfg = tiny_cfg()
    one = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=2)
    two = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=2)
    assert one.order.global_batch == 2 * 2 * 2
    for step in (0, 9, 40):
        for micro in range(2):
            for rank in range(2):
                x = one.micro_batch(step, micro, rank, 2, 2).batch
                y = two.micro_batch(step, micro, rank, 2, 2).batch
                assert x.rows.tolist() == y.rows.tolist()
                assert x.teacher_ids.equal(y.teacher_ids) and x.labels.equal(y.labels)
    counts = Counter(r for s in range(256 // 8) for r in one.order.step_rows(s))
    assert set(counts.values()) == {1} and len(counts) == 256  # one epoch of the 256-row subset
