"""Where the student's and the teacher's logits for each answer token live. The next-token shift is done
here, once.

Logits at position p predict token p + 1. An answer token at student position q (labels[b, q] != -100)
is therefore predicted by the student's logits at q - 1, and the same token, at teacher position
q - student_answer_start + teacher_answer_start, by the teacher's logits one position earlier. The
cross-entropy and the distillation loss read the SAME student positions (the original read the
distillation logits one position later than the CE logits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fsdistill.data.batch import IGNORE_INDEX, Batch


class AlignmentError(RuntimeError):
    """Student and teacher answer tokens differ: the batch was built wrong; training must not go on."""


@dataclass
class AnswerPositions:
    """N = answer tokens in the batch, in (example, position) order.

    batch_index: (N,) example of each answer token.
    student_positions: (N,) student positions whose logits predict the token (label index - 1).
    teacher_positions: (N,) teacher positions whose logits predict the same token.
    targets: (N,) the answer token ids.
    """

    batch_index: torch.Tensor
    student_positions: torch.Tensor
    teacher_positions: torch.Tensor
    targets: torch.Tensor

    @property
    def count(self) -> int:
        return self.targets.numel()


def answer_positions(batch: Batch) -> AnswerPositions:
    """Map every labelled answer token to its predicting positions in student and teacher; check the ids.

    Raises AlignmentError, naming the example rows, when a teacher's tokens at the mapped positions are
    not the answer ids: a different token, a position past the teacher's length or in its padding (a pad
    id may equal the answer's last token, e.g. Llama's <|eot_id|>), or an answer that starts at 0.
    """
    batch_index, label_pos = (batch.labels != IGNORE_INDEX).nonzero(as_tuple=True)
    student_start = batch.student_answer_start[batch_index]
    offset = label_pos - student_start
    teacher_label_pos = batch.teacher_answer_start[batch_index] + offset
    targets = batch.labels[batch_index, label_pos]
    width = batch.teacher_ids.shape[1]
    inside = (teacher_label_pos >= 1) & (teacher_label_pos < width)
    safe_pos = teacher_label_pos.clamp(0, width - 1)
    teacher_tokens = batch.teacher_ids[batch_index, safe_pos]
    in_mask = batch.teacher_mask[batch_index, safe_pos].bool()
    bad = ~inside | ~in_mask | (teacher_tokens != targets) | (offset < 0) | (student_start < 1)
    if bad.any():
        rows = sorted({int(batch.rows[b]) for b in batch_index[bad].tolist()})
        raise AlignmentError(
            f"answer tokens of the student and teacher sequences differ for example rows {rows}: "
            "the teacher must end with exactly the student's answer ids"
        )
    return AnswerPositions(
        batch_index=batch_index,
        student_positions=label_pos - 1,
        teacher_positions=teacher_label_pos - 1,
        targets=targets,
    )
