"""Whether another model can teach this student: the two must mean the same token by the same id.

Distillation compares the teacher's and the student's logits id by id, on the student's token ids, so a
teacher that is another model (teacher.model) needs the student's vocabulary. Models of one family share a
tokenizer but may differ in embedding rows: Qwen3 pads its embeddings to 151,936 rows for a tokenizer of
151,669 tokens, and a model resized or exported elsewhere may pad differently. So the check is on the
tokenizers: identical id -> token maps below the smaller `len(tokenizer)` (what TRL's DistillationTrainer
refuses to do without); logits are then compared on those ids only (the padding rows past them carry no
token). Anything else is an error naming both sizes and the first differing token.

A standalone function of two tokenizers, so a teacher run elsewhere (a served engine) reuses it.
"""

from __future__ import annotations

from typing import Optional

from fsdistill.errors import UserError


class VocabularyMismatch(UserError):
    """The teacher's and the student's tokenizers give some id different tokens."""


def _tokens_by_id(tokenizer, n: int) -> list[Optional[str]]:
    """[token of id 0, ..., token of id n-1] from get_vocab() (added tokens included); None for an unused id."""
    tokens: list[Optional[str]] = [None] * n
    for token, i in tokenizer.get_vocab().items():
        if i < n:
            tokens[i] = token
    return tokens


def shared_vocabulary(student_tokenizer, teacher_tokenizer) -> int:
    """The number n of ids whose logits are compared: min(len(student), len(teacher)), after checking that
    both tokenizers map every id below n to the same token (VocabularyMismatch otherwise, naming both sizes
    and the first id whose tokens differ)."""
    s, t = len(student_tokenizer), len(teacher_tokenizer)
    n = min(s, t)
    student, teacher = _tokens_by_id(student_tokenizer, n), _tokens_by_id(teacher_tokenizer, n)
    for i, (a, b) in enumerate(zip(student, teacher)):
        if a != b:
            raise VocabularyMismatch(
                f"the teacher's tokenizer ({teacher_tokenizer.name_or_path}, {t:,} tokens) and the student's "
                f"({student_tokenizer.name_or_path}, {s:,} tokens) differ at id {i:,}: the student's token is "
                f"{a!r}, the teacher's {b!r}. Distillation compares logits id by id, so teacher.model needs the "
                f"student's vocabulary on every id below the smaller size ({n:,})"
            )
    return n


def check_rows(what: str, rows: int, needed: int, why: str) -> None:
    """A model's embedding or head has at least `needed` rows (UserError naming both sizes otherwise)."""
    if rows < needed:
        raise VocabularyMismatch(f"{what} has {rows:,} rows, fewer than the {needed:,} {why}")
