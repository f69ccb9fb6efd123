"""Few-shot selection: the original's per-example rule, per_batch and fixed modes, shuffled answers."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from conftest import qwen_cfg

from fsdistill.data.batch import build_training_batches
from fsdistill.data.fewshot import FewShotError, ShotSampler
from fsdistill.errors import UserError
from fsdistill.tasks import Example

N_TRAIN = 7473


def original_shots(idx: int, k: int = 8, n: int = N_TRAIN, seed: int = 42) -> list[int]:
    """The original repository's rule, verbatim."""
    return random.Random(seed + idx).sample([j for j in range(n) if j != idx], k)


def original_shuffled_answers(idx: int, answers: list[str], seed: int = 42) -> list[str]:
    answers = list(answers)
    random.Random(seed + idx + 99999).shuffle(answers)
    return answers


def fake_examples(n: int) -> list[Example]:
    return [Example(row=i, question=f"q{i}", answer=f"a{i}\n#### {i}", gold=str(i)) for i in range(n)]


@pytest.fixture(scope="module")
def per_example_batches(qwen3_tokenizer):
    """The full train split under online_v1.yaml (k=8, per_example), 2 processes: G = 32."""
    return build_training_batches(qwen_cfg(), qwen3_tokenizer, with_teacher=True, num_processes=2)


# --------------------------------------------------------------------------------------------------
# per_example: the original's rule
# --------------------------------------------------------------------------------------------------


def test_per_example_shots_follow_the_original_rule_on_the_full_train_split(per_example_batches):
    shots = per_example_batches.shots
    assert shots.pool_rows == list(range(N_TRAIN)) and shots.k == 8
    rng = random.Random(0)
    rows = [0, 1, N_TRAIN - 1, *rng.sample(range(N_TRAIN), 150)]
    for row in rows:
        got = shots.shot_rows(row, step=rng.randrange(5000), step_rows=[])
        assert got == original_shots(row), row
        assert row not in got and len(set(got)) == 8


def test_per_example_shots_are_stable_across_epochs(per_example_batches, train_rows):
    order = per_example_batches.order
    g, n = order.global_batch, len(order.rows)
    steps_per_epoch = n // g
    # the rows of step 3 (epoch 0) turn up again in epochs 1 and 2, at other steps
    seen_at: dict[int, list[int]] = {}
    for step in [3, *range(steps_per_epoch, 3 * steps_per_epoch)]:
        for row in order.step_rows(step):
            seen_at.setdefault(row, []).append(step)
    rows = order.step_rows(3)
    for row in rows:
        steps = seen_at[row]
        assert len({s * g // n for s in steps}) >= 2  # met in different epochs
        shot_lists = [per_example_batches.shots.shot_rows(row, s, order.step_rows(s)) for s in steps]
        assert all(s == shot_lists[0] for s in shot_lists)
    # the cache cannot hide a difference: a fresh pipeline encodes the later occurrence identically
    row = rows[0]
    late = seen_at[row][-1]
    fresh = build_training_batches(qwen_cfg(), per_example_batches.prompts.tokenizer, True, 2)
    assert fresh.encode(row, late, order.step_rows(late)) == per_example_batches.encode(row, 3, rows)


def test_shots_never_contain_the_example_itself():
    pool = fake_examples(40)
    for selection in ("per_example", "per_batch", "fixed"):
        sampler = ShotSampler(pool, 8, selection, 42, False)
        train = [e.row for e in pool if e.row not in set(sampler.fixed_rows)]
        for step in range(30):
            step_rows = random.Random(step).sample(train, 4)
            for row in step_rows:
                assert row not in sampler.shot_rows(row, step, step_rows), (selection, row)


# --------------------------------------------------------------------------------------------------
# per_batch
# --------------------------------------------------------------------------------------------------


def test_per_batch_shots_are_shared_by_every_micro_batch_and_rank_of_a_step(qwen3_tokenizer):
    cfg = qwen_cfg("fewshot.selection=per_batch")
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=2)
    t = cfg.training
    per_step = []
    for step in (0, 1, 250, 777):
        step_rows = batches.order.step_rows(step)
        everyone = []
        for micro in range(t.grad_accum_steps):
            for rank in range(2):
                rows = batches.order.micro_rows(step, micro, rank, 2, t.per_device_batch_size)
                everyone += [batches.shots.shot_rows(r, step, step_rows) for r in rows]
        assert len(everyone) == 32
        assert all(s == everyone[0] for s in everyone)
        assert set(everyone[0]).isdisjoint(step_rows) and len(set(everyone[0])) == 8
        per_step.append(everyone[0])
        # what the teacher actually sees: the same exemplar turns before every example's own question
        prefixes = set()
        for row in step_rows[::5]:
            enc = batches.encode(row, step, step_rows)
            text = qwen3_tokenizer.decode(enc.teacher_ids[: enc.teacher_answer_start])
            own = text.rindex(f"Question: {batches.by_row[row].question}<|im_end|>")
            prefixes.add(text[:own])
        assert len(prefixes) == 1 and prefixes.pop().count("<|im_start|>assistant\n") == 8
    assert len({tuple(s) for s in per_step}) == len(per_step)  # a new draw each step


def test_per_batch_needs_rows_outside_the_step():
    pool = fake_examples(12)
    sampler = ShotSampler(pool, 4, "per_batch", 42, False)
    sampler.check_step_size(8)  # 12 - 8 = 4 rows left: enough
    with pytest.raises(FewShotError, match="leaving 3 to draw exemplars from"):
        sampler.check_step_size(9)


def test_per_batch_with_a_step_larger_than_the_pool_is_refused_at_build(qwen3_tokenizer):
    cfg = qwen_cfg("fewshot.selection=per_batch", "data.max_train_examples=20")
    with pytest.raises(UserError, match="per_batch"):
        build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)


# --------------------------------------------------------------------------------------------------
# fixed
# --------------------------------------------------------------------------------------------------


def test_fixed_rows_are_removed_from_training_and_never_in_the_order(qwen3_tokenizer):
    cfg = qwen_cfg("fewshot.selection=fixed", "data.max_train_examples=300", "fewshot.k=5")
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)
    fixed = batches.shots.fixed_rows
    assert fixed == random.Random(42).sample(range(300), 5) and len(set(fixed)) == 5
    assert set(fixed).isdisjoint(batches.order.rows) and set(fixed).isdisjoint(batches.by_row)
    assert sorted([*batches.order.rows, *fixed]) == list(range(300))
    stream = Counter(r for s in range(3 * 295 // 16 + 1) for r in batches.order.step_rows(s))
    assert set(stream).isdisjoint(fixed)
    for step in (0, 10, 40):
        step_rows = batches.order.step_rows(step)
        for row in step_rows:
            assert batches.shots.shot_rows(row, step, step_rows) == fixed


# --------------------------------------------------------------------------------------------------
# Shuffled answers
# --------------------------------------------------------------------------------------------------


def test_shuffled_answers_follow_the_original_rule(qwen3_tokenizer, train_rows):
    cfg = qwen_cfg("fewshot.shuffle_mode=permutation", config="ablation_shuffled_answers.yaml")
    assert cfg.fewshot.shuffle_answers and cfg.fewshot.k == 8
    batches = build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=2)
    moved = 0
    for row in random.Random(1).sample(range(N_TRAIN), 100):
        rows = original_shots(row)
        shots = batches.shots.shots(row, 0, [])
        questions = [e.question for e in shots]
        answers = [e.answer for e in shots]
        assert questions == [train_rows[j].question for j in rows]  # questions stay in sampled order
        true_answers = [train_rows[j].answer for j in rows]
        assert Counter(answers) == Counter(true_answers)  # a permutation: the same multiset
        assert answers == original_shuffled_answers(row, true_answers)
        moved += sum(a != t for a, t in zip(answers, true_answers))
    assert moved > 500  # most answers sit with another question


def test_shuffled_answers_in_every_mode_are_a_permutation():
    pool = fake_examples(60)
    by_row = {e.row: e for e in pool}
    for selection in ("per_example", "per_batch", "fixed"):
        plain = ShotSampler(pool, 6, selection, 42, False)
        shuffled = ShotSampler(pool, 6, selection, 42, True)
        changed = 0
        for step in range(20):
            step_rows = [r for r in range(60) if r not in plain.fixed_rows][step : step + 4]
            row = step_rows[0]
            a = [(e.question, e.answer) for e in plain.shots(row, step, step_rows)]
            b = [(e.question, e.answer) for e in shuffled.shots(row, step, step_rows)]
            assert [q for q, _ in a] == [q for q, _ in b]
            assert sorted(x for _, x in a) == sorted(x for _, x in b)
            assert all(by_row[int(q[1:])].answer == x for q, x in a)  # unshuffled: answers match
            changed += [x for _, x in a] != [x for _, x in b]
            # deterministic: asking again gives the same permutation
            assert [(e.question, e.answer) for e in shuffled.shots(row, step, step_rows)] == b
        assert changed >= 15, selection


def test_derangement_moves_every_answer_in_every_mode():
    pool = fake_examples(40)
    by_row = {e.row: e for e in pool}
    for k in (2, 3, 8):
        for selection in ("per_example", "per_batch", "fixed"):
            sampler = ShotSampler(pool, k, selection, 42, True)  # derangement: the default mode
            assert sampler.shuffle_mode == "derangement"
            for row in [r for r in range(40) if r not in sampler.fixed_rows][:25]:
                shots = sampler.shots(row, row, [row])
                own = [by_row[int(e.question[1:])].answer for e in shots]
                assert sorted(e.answer for e in shots) == sorted(own)  # the same answers, moved
                assert all(e.answer != a for e, a in zip(shots, own)), (k, selection, row)


def test_derangement_is_uniform_and_permutation_keeps_the_original_rule():
    pool = fake_examples(400)
    # k = 3 has two derangements (the two cyclic shifts): each should come up about half the time.
    sampler = ShotSampler(pool, 3, "per_example", 42, True, "derangement")
    shifts = Counter()
    for row in range(400):
        rows = sampler.shot_rows(row, 0, [])
        answers = [e.answer for e in sampler.shots(row, 0, [])]
        shifts[tuple(answers.index(f"a{r}\n#### {r}") for r in rows)] += 1
    assert set(shifts) == {(1, 2, 0), (2, 0, 1)}
    assert 160 <= shifts[(1, 2, 0)] <= 240  # 200 expected; a fixed rule would give 0 or 400
    # The original's plain permutation at k = 2 leaves both answers in place about half the time.
    plain = ShotSampler(pool, 2, "per_example", 42, True, "permutation")
    unchanged = sum(
        [e.answer for e in plain.shots(row, 0, [])] == [pool[r].answer for r in plain.shot_rows(row, 0, [])]
        for row in range(400)
    )
    assert 150 <= unchanged <= 250
    for row in range(50):
        rows = plain.shot_rows(row, 0, [])
        expected = original_shuffled_answers(row, [pool[r].answer for r in rows])
        assert [e.answer for e in plain.shots(row, 0, [])] == expected


# --------------------------------------------------------------------------------------------------
# Pool size
# --------------------------------------------------------------------------------------------------


def test_k_larger_than_the_pool_raises():
    pool = fake_examples(5)
    ShotSampler(pool, 4, "per_example", 42, False)  # 4 others: enough
    for selection in ("per_example", "per_batch", "fixed"):
        with pytest.raises(FewShotError, match="fewshot.k=5 needs at least 6 training rows, the pool has 5"):
            ShotSampler(pool, 5, selection, 42, False)
    assert issubclass(FewShotError, UserError)


def test_k_larger_than_the_training_subset_raises_at_build(qwen3_tokenizer):
    cfg = qwen_cfg("data.max_train_examples=6")
    with pytest.raises(FewShotError, match="fewshot.k=8"):
        build_training_batches(cfg, qwen3_tokenizer, with_teacher=True, num_processes=1)


def test_zero_shots_means_no_exemplars():
    pool = fake_examples(10)
    for selection in ("per_example", "per_batch", "fixed"):
        sampler = ShotSampler(pool, 0, selection, 42, True)
        assert sampler.shot_rows(3, 0, [3]) == [] and sampler.shots(3, 0, [3]) == []
        assert sampler.fixed_rows == []
