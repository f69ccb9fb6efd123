"""Prompts through the tokenizer's own chat template, and the prompt/answer boundary taken from it.

Turn structure (the original's): no system prompt of ours unless the task gives one (task.system_prompt,
then a system turn opens every conversation); each exemplar is a user turn (the task's, e.g.
`Question: {q}` for GSM8K) and an assistant turn with its worked answer; then the real question as a
user turn and, in training, its answer as the final assistant turn.

The template is the tokenizer's own chat template, or model.chat_template: `plain` (PLAIN_TEMPLATE, for
models without a chat template) or a Jinja template of the user's. Either way it is rendered by
transformers' apply_chat_template (its sandboxed Jinja environment), so one code path serves all.

The boundary is never hard-coded. We render the conversation twice, with the final assistant turn and
as a generation prompt without it, require the second to be a prefix of the first, and call the rest
the *answer part*: the answer plus whatever the template closes the turn with (Qwen3: its im_end token
and a newline; Llama 3: its eot_id token; Gemma 3: its end_of_turn token and a newline), i.e. what the
model must produce to stop. (No template token is written in this package's data code; a test checks.)

Prompt and answer part are tokenised separately and their ids concatenated. Retokenising the joined
text could merge BPE tokens across the boundary and make the student's and teacher's answer ids differ.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

from fsdistill.config import Config, TeacherConfig
from fsdistill.data.teacher_prompt import TeacherContext
from fsdistill.errors import UserError
from fsdistill.tasks import Example, Task, make_task

Message = dict[str, str]


class TemplateError(UserError):
    """The chat template does not render a conversation as a prompt followed by an answer part."""


# model.chat_template: plain. Plain text for a model without a chat template: an optional system text
# and a blank line; each user turn, a newline and "Answer:"; each answer after one space, closed by the
# tokenizer's eos token (what the model learns to stop with) and a blank line. The space belongs to the
# answer part, so the prompt never ends in a space (BPE tokenizers write " 42" as one token).
PLAIN_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{ message['content'] }}{{ '\n\n' }}"
    "{%- elif message['role'] == 'user' %}{{ message['content'] }}{{ '\nAnswer:' }}"
    "{%- else %}{{ ' ' + message['content'] + eos_token + '\n\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
)


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one training example for the student (0-shot) and the teacher (k-shot).

    student_ids[student_answer_start:] == teacher_ids[teacher_answer_start:] == answer_ids (by
    construction: the same list is appended to both prompts).
    """

    row: int
    student_ids: list[int]
    teacher_ids: list[int]
    student_answer_start: int
    teacher_answer_start: int

    @property
    def answer_len(self) -> int:
        return len(self.student_ids) - self.student_answer_start


class PromptBuilder:
    """Renders and tokenises a task's conversations with one tokenizer's chat template.

    `chat_template_kwargs` (model.chat_template_kwargs) are passed to the template directly: Qwen3 reads
    `enable_thinking` that way (passing it inside a `chat_template_kwargs` dict, as the original did, is
    silently ignored); a null value is not passed at all. `teacher_settings` (teacher.*) say what the
    teacher sees besides the exemplars (data/teacher_prompt.py); its files are read on first use.
    """

    def __init__(
        self,
        tokenizer,
        task: Task | None,
        chat_template_kwargs: dict,
        chat_template: str | None = None,
        teacher_settings: TeacherConfig | None = None,
    ):
        self.chat_template = PLAIN_TEMPLATE if chat_template == "plain" else chat_template
        if self.chat_template is None and getattr(tokenizer, "chat_template", None) is None:
            raise TemplateError(
                f"tokenizer {tokenizer.name_or_path!r} has no chat template; set model.chat_template: plain (a "
                "plain-text format) or give a Jinja template there"
            )
        self.tokenizer = tokenizer
        self.task = task
        self.template_kwargs = {k: v for k, v in chat_template_kwargs.items() if v is not None}
        system = task.system_prompt() if task is not None else None  # None: the template alone (for_template)
        self.opening: list[Message] = [] if system is None else [{"role": "system", "content": system}]
        self.teacher_settings = teacher_settings

    @classmethod
    def from_config(cls, tokenizer, cfg: Config) -> PromptBuilder:
        """The config's task (task.*) rendered with model.chat_template (or the tokenizer's) and
        model.chat_template_kwargs; the teacher's context from teacher.*."""
        return cls(
            tokenizer, make_task(cfg), cfg.model.chat_template_kwargs, cfg.model.chat_template, cfg.teacher
        )

    @functools.cached_property
    def teacher(self) -> Optional[TeacherContext]:
        """The teacher's context (its files read and hashed now), or None: only the exemplars."""
        return None if self.teacher_settings is None else TeacherContext.from_config(self.teacher_settings)

    @classmethod
    def for_template(cls, tokenizer, cfg: Config) -> PromptBuilder:
        """The config's chat template alone, without its task (no rows, no scoring rule): what reading
        the template's end-of-turn token or rendering a bare conversation needs."""
        return cls(tokenizer, None, cfg.model.chat_template_kwargs, cfg.model.chat_template)

    def template_text(self) -> str:
        """The Jinja source of the template in use (model.chat_template's, else the tokenizer's)."""
        return self.chat_template or self.tokenizer.chat_template

    # -- text ------------------------------------------------------------------------------------
    def user_turn(self, example: Example) -> Message:
        return {"role": "user", "content": self.task.user_turn(example)}

    def conversation(self, shots: list[Example], example: Example) -> list[Message]:
        """The messages before an answer: the system turn (if any), the exemplars, the question."""
        return [*self.opening, *self.exemplar_turns(shots), self.user_turn(example)]

    def without_teacher_context(self) -> PromptBuilder:
        """This builder with no teacher context: its 'teacher' sees the exemplars only (k-shot ICL)."""
        return PromptBuilder(
            self.tokenizer, self.task, self.template_kwargs, self.chat_template, teacher_settings=None
        )

    def teacher_conversation(
        self, shots: list[Example], example: Example, donor: Example | None = None
    ) -> list[Message]:
        """The teacher's messages before an answer (data/teacher_prompt.py): its system turn, the exemplars,
        its user turn; `donor` is the row whose per-row context it reads (teacher.shuffle_context)."""
        context = self.teacher
        if context is None:
            return self.conversation(shots, example)
        system = context.system_text(self.task.system_prompt(), example.row)
        opening = [] if system is None else [{"role": "system", "content": system}]
        user = context.user_turn(self.task.user_turn(example), example, donor or example)
        return [*opening, *self.exemplar_turns(shots), {"role": "user", "content": user}]

    def teacher_differs(self, shots: list[Example]) -> bool:
        """Whether the teacher's prompt differs from the student's (exemplars or a teacher context)."""
        return bool(shots) or self.teacher is not None

    def exemplar_turns(self, shots: list[Example]) -> list[Message]:
        """Exemplars as alternating user/assistant turns."""
        turns: list[Message] = []
        for shot in shots:
            turns += [self.user_turn(shot), {"role": "assistant", "content": shot.answer}]
        return turns

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            chat_template=self.chat_template,
            **self.template_kwargs,
        )

    def split_prompt_answer(self, history: list[Message], answer: str, where: str) -> tuple[str, str]:
        """(prompt text, answer part) of `history` followed by an assistant turn `answer`."""
        prompt = self.render(history, add_generation_prompt=True)
        full = self.render([*history, {"role": "assistant", "content": answer}], add_generation_prompt=False)
        if not full.startswith(prompt):
            raise TemplateError(
                f"{where}: the chat template's generation prompt is not a prefix of the rendered conversation, "
                f"so the answer span cannot be found.\n  prompt ends: {prompt[-80:]!r}\n  full has:     "
                f"{full[len(prompt) - 80 : len(prompt) + 20]!r}"
            )
        return prompt, full[len(prompt) :]

    def end_of_turn_ids(self) -> list[int]:
        """The token ids the template closes an assistant turn with (Qwen3: <|im_end|>; Llama 3: <|eot_id|>):
        what a chat model emits to stop. Read off the template itself: the answer part of a rendered
        conversation after the answer's own text, first token. [] for a template that adds nothing."""
        sentinel = "fsdistill-end-of-turn-probe"
        history = [*self.opening, {"role": "user", "content": "?"}]
        _, part = self.split_prompt_answer(history, sentinel, "the end-of-turn probe")
        tail = part[part.index(sentinel) + len(sentinel) :]
        ids = self.encode(tail) if tail.strip() else []
        return ids[:1]

    # -- ids -------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        # The template text already holds any BOS token: adding special tokens would double it.
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generation_prompt_ids(self, example: Example, shots: list[Example]) -> list[int]:
        """Ids of a k-shot (k = len(shots)) generation prompt for evaluation."""
        return self.encode(self.render(self.conversation(shots, example), add_generation_prompt=True))

    def encode_student(self, example: Example) -> tuple[list[int], list[int], str]:
        """(prompt ids, answer-part ids, answer-part text) of the 0-shot conversation."""
        if example.answer is None:
            raise UserError(
                f"row {example.row} has no worked answer (task.answer_field) to train on or to score "
                "teacher-forced; questions-only rows serve generation-based evaluation only"
            )
        prompt, answer_part = self.split_prompt_answer(
            self.conversation([], example), example.answer, f"row {example.row}"
        )
        return self.encode(prompt), self.encode(answer_part), answer_part

    def encode_prompts(
        self, example: Example, shots: list[Example], donor: Example | None = None
    ) -> EncodedExample:
        """The student's (0-shot) and teacher's (k-shot, with its context) generation prompts of a row with
        an empty answer part: what a rollout is sampled from and then appended to (train/rollouts.py); rows
        without a worked answer too. The same prompt ids as encode_pair's (the same render, tokenised alone)."""
        student = self.encode(self.render(self.conversation([], example), add_generation_prompt=True))
        teacher = (
            self.encode(
                self.render(self.teacher_conversation(shots, example, donor), add_generation_prompt=True)
            )
            if self.teacher_differs(shots)
            else student
        )
        return EncodedExample(example.row, student, teacher, len(student), len(teacher))

    def encode_pair(
        self,
        example: Example,
        shots: list[Example],
        student: tuple[list[int], list[int], str] | None = None,
        donor: Example | None = None,
    ) -> EncodedExample:
        """Student and teacher ids of one example; `student` reuses encode_student's result (a cache);
        `donor` is the row whose per-row context the teacher reads (teacher.shuffle_context)."""
        student_prompt, answer_ids, answer_part = student or self.encode_student(example)
        if self.teacher_differs(shots):
            history = self.teacher_conversation(shots, example, donor)
            teacher_prompt_text, teacher_answer_part = self.split_prompt_answer(
                history, example.answer, f"row {example.row} (teacher, {len(shots)} shots)"
            )
            if teacher_answer_part != answer_part:
                raise TemplateError(
                    f"row {example.row}: the template renders the answer differently after exemplars "
                    f"({teacher_answer_part[:60]!r} vs {answer_part[:60]!r}); teacher and student cannot be aligned"
                )
            teacher_prompt = self.encode(teacher_prompt_text)
        else:
            teacher_prompt = student_prompt
        return EncodedExample(
            row=example.row,
            student_ids=student_prompt + answer_ids,
            teacher_ids=teacher_prompt + answer_ids,
            student_answer_start=len(student_prompt),
            teacher_answer_start=len(teacher_prompt),
        )


def load_tokenizer(name_or_path: str):
    """The tokenizer with a pad token (its own, else eos: padding is masked out everywhere)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except OSError as e:
        raise UserError(
            f"tokenizer '{name_or_path}' could not be loaded ({e}). Offline, point model.tokenizer at a local folder."
        ) from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
