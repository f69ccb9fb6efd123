"""Where the student's and the teacher's logits for each answer token are read (no model involved).

Hand-built batches: the expected positions are written out below, not derived from the code under
test, and the losses on hand-set logits are recomputed with plain Python arithmetic.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import pytest
import torch
from helpers import TINY

from fsdistill.config import load_config
from fsdistill.data.batch import IGNORE_INDEX, collate
from fsdistill.data.prompts import EncodedExample
from fsdistill.distill.alignment import AlignmentError, answer_positions
from fsdistill.distill.objective import target_spec
from fsdistill.distill.teacher import LiveTeacher
from fsdistill.train.step import micro_batch_losses

PAD = 0


def example(row, student_prompt, teacher_prompt, answer, teacher_answer=None) -> EncodedExample:
    teacher_answer = answer if teacher_answer is None else teacher_answer
    return EncodedExample(
        row=row,
        student_ids=student_prompt + answer,
        teacher_ids=teacher_prompt + teacher_answer,
        student_answer_start=len(student_prompt),
        teacher_answer_start=len(teacher_prompt),
    )


# Row 7: student prompt of 3 tokens, teacher prompt of 8 (5 exemplar tokens, then the same 3), answer 3.
# Row 9: student prompt of 2, teacher prompt of 4, answer 2 (shorter: padded on the right).
A = example(7, [11, 12, 13], [1, 2, 3, 4, 5, 11, 12, 13], [21, 22, 23])
B = example(9, [14, 15], [6, 7, 14, 15], [24, 25])


def test_answer_positions_by_hand():
    batch = collate([A, B], PAD)
    pos = answer_positions(batch)
    # Answer tokens sit at student indices 3,4,5 (row 7) and 2,3 (row 9); the logits predicting a token
    # are one position earlier. In the teacher they sit at 8,9,10 and 4,5.
    assert pos.batch_index.tolist() == [0, 0, 0, 1, 1]
    assert pos.student_positions.tolist() == [2, 3, 4, 1, 2]
    assert pos.teacher_positions.tolist() == [7, 8, 9, 3, 4]
    assert pos.targets.tolist() == [21, 22, 23, 24, 25]
    assert pos.count == batch.num_answer_tokens == 5
    # Teacher positions = student positions + the teacher's extra prefix (5 for row 7, 2 for row 9).
    extra = torch.tensor([5, 2])[pos.batch_index]
    assert torch.equal(pos.teacher_positions, pos.student_positions + extra)


def test_student_positions_are_the_shifted_cross_entropy_positions():
    """The usual causal-LM loss reads logits[:, :-1] against labels[:, 1:]: the same (row, position)s."""
    batch = collate([A, B], PAD)
    pos = answer_positions(batch)
    shifted = batch.labels[:, 1:]
    rows, positions = (shifted != IGNORE_INDEX).nonzero(as_tuple=True)
    assert torch.equal(rows, pos.batch_index)
    assert torch.equal(positions, pos.student_positions)
    assert torch.equal(shifted[rows, positions], pos.targets)
    # and the token a student position predicts is the next input token
    assert torch.equal(batch.student_ids[pos.batch_index, pos.student_positions + 1], pos.targets)
    assert torch.equal(batch.teacher_ids[pos.batch_index, pos.teacher_positions + 1], pos.targets)


def test_teacher_with_other_answer_ids_raises_naming_the_row():
    wrong = example(9, [14, 15], [6, 7, 14, 15], [24, 25], teacher_answer=[24, 26])
    with pytest.raises(AlignmentError, match=r"rows \[9\]"):
        answer_positions(collate([A, wrong], PAD))


def test_teacher_shorter_than_its_answer_raises():
    """A truncated teacher must fail, even when the missing position is beyond the padded width or
    lands on padding whose id equals the answer's last token (Llama pads with <|eot_id|>)."""
    cut = example(9, [14, 15], [6, 7, 14, 15], [24, 25], teacher_answer=[24])
    with pytest.raises(AlignmentError, match=r"rows \[9\]"):
        answer_positions(collate([cut], PAD))  # position 5 does not exist in a width-5 teacher
    pad_is_last = example(9, [14, 15], [6, 7, 14, 15], [24, PAD], teacher_answer=[24])
    with pytest.raises(AlignmentError, match=r"rows \[9\]"):
        answer_positions(collate([A, pad_is_last], PAD))  # reads a pad token that equals the target


# ------------------------------------------------------------------------------------------------
# Losses on hand-set logits, read at the aligned positions
# ------------------------------------------------------------------------------------------------

V = 6
STUDENT_TABLE = torch.randn(2, 6, V, generator=torch.Generator().manual_seed(1))  # (row, position, V)
TEACHER_TABLE = torch.randn(2, 11, V, generator=torch.Generator().manual_seed(2))


class TableLM(torch.nn.Module):
    """The AnswerLogitsLM interface over a table: the "hidden state" at (example, position) is the table's
    row, and the head is the identity, so logits[i] = table[batch_index[i], positions[i]]."""

    def __init__(self, table: torch.Tensor, trainable: bool):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone(), requires_grad=trainable)

    def forward(self, computation):
        return computation(self)

    def hidden_at(self, input_ids, attention_mask, batch_index, positions):
        return self.table[batch_index, positions]

    def head(self, hidden):
        return hidden


def TableStudent():  # noqa: N802 - reads as the class it stands for
    return TableLM(STUDENT_TABLE, trainable=True)


class TableTeacher(LiveTeacher):
    """The real LiveTeacher reduction (top-K per chunk) over TEACHER_TABLE instead of a model."""

    def __init__(self, cfg):
        super().__init__(TableLM(TEACHER_TABLE, trainable=False), None, target_spec(cfg), chunk_size=2)


# The answer tokens' (row, student position, teacher position, target), written out by hand.
HAND = [(0, 2, 7, 21), (0, 3, 8, 22), (0, 4, 9, 23), (1, 1, 3, 24), (1, 2, 4, 25)]


def tokens_in_vocab(e: EncodedExample) -> EncodedExample:
    """The same example with ids reduced mod V so they index the 6-entry tables."""
    return EncodedExample(
        row=e.row,
        student_ids=[i % V for i in e.student_ids],
        teacher_ids=[i % V for i in e.teacher_ids],
        student_answer_start=e.student_answer_start,
        teacher_answer_start=e.teacher_answer_start,
    )


def hand_losses(student_shift: int = 0, top_k: int = 3) -> tuple[float, float]:
    """CE and top-k logit MSE sums with plain floats; student_shift=1 is the original's misalignment."""
    ce = mse = 0.0
    for b, s_pos, t_pos, target in HAND:
        s = STUDENT_TABLE[b, s_pos + student_shift].tolist()
        t = TEACHER_TABLE[b, t_pos].tolist()
        ce += math.log(sum(math.exp(x) for x in s)) - s[target % V]
        top = sorted(range(V), key=lambda i: -t[i])[:top_k]
        mse += sum((t[i] - s[i]) ** 2 for i in top) / top_k
    return ce, mse


def hand_forward_kl(student_shift: int = 0) -> float:
    total = 0.0
    for b, s_pos, t_pos, _ in HAND:
        s = STUDENT_TABLE[b, s_pos + student_shift].tolist()
        t = TEACHER_TABLE[b, t_pos].tolist()
        ps = [math.exp(x) / sum(math.exp(y) for y in s) for x in s]
        pt = [math.exp(x) / sum(math.exp(y) for y in t) for x in t]
        total += sum(p * math.log(p / q) for p, q in zip(pt, ps))
    return total


def tiny_cfg(*overrides: str):
    cfg, _ = load_config(str(TINY / "online_v1.yaml"), overrides=list(overrides))
    return cfg


@pytest.mark.parametrize("loss", ["topk_logit_mse", "forward_kl"])
def test_distillation_reads_the_aligned_positions(loss):
    top_k = "distill.top_k=3" if loss == "topk_logit_mse" else "distill.top_k=null"
    cfg = tiny_cfg("fewshot.k=2", f"distill.loss={loss}", top_k)
    batch = collate([tokens_in_vocab(A), tokens_in_vocab(B)], PAD)
    losses = micro_batch_losses(cfg, TableStudent(), TableTeacher(cfg), batch, nullcontext)
    ce, mse = hand_losses()
    dist = mse if loss == "topk_logit_mse" else hand_forward_kl()
    assert losses.tokens == 5
    assert losses.ce_sum.item() == pytest.approx(ce, rel=1e-5)
    assert losses.dist_sum.item() == pytest.approx(dist, rel=1e-5)
    # Reading the student one position later (the original's distillation bug) gives another value.
    shifted_ce, shifted_mse = hand_losses(student_shift=1)
    shifted = shifted_mse if loss == "topk_logit_mse" else hand_forward_kl(student_shift=1)
    assert abs(shifted - dist) > 1e-2 * dist
    assert abs(shifted_ce - ce) > 1e-2 * ce


def test_gradient_reaches_only_the_aligned_student_positions():
    cfg = tiny_cfg("fewshot.k=2", "distill.top_k=3")
    student = TableStudent()
    batch = collate([tokens_in_vocab(A), tokens_in_vocab(B)], PAD)
    losses = micro_batch_losses(cfg, student, TableTeacher(cfg), batch, nullcontext)
    (losses.ce_sum + losses.dist_sum).backward()
    touched = sorted({(b, p) for b, p in (student.table.grad.abs().sum(-1) > 0).nonzero().tolist()})
    assert touched == sorted({(b, s) for b, s, _, _ in HAND})
