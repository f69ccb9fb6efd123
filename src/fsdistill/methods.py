"""The training methods, as data: one table that entry points, run records and result files read.

A method is SFT (cross-entropy only) or CE + λ·distillation from a teacher; the causal controls are the
same distillation with one setting changed. `settings` are the config values that make a config that
method (what train_ablation.py --condition applies); a config describes the first teacher method whose
settings all hold (the 0-shot-teacher control only for the plain teacher: the student's own base without
a teacher context), else context_distillation when the teacher has a context (teacher.system, context
files, a per-row field, a template), model_distillation for another model seeing the bare question, else
few_shot_distillation.
"""

from __future__ import annotations

from dataclasses import dataclass

from fsdistill.config import Config, ConfigError, parse_override


@dataclass(frozen=True)
class Method:
    name: str  # what run.json, checkpoints and result files record
    teacher: bool  # distils from a teacher (else cross-entropy only)
    entry_point: str  # the README's training script that runs it
    condition: str | None  # train_ablation.py --condition value
    settings: tuple[str, ...]  # key=value overrides that make a distillation config this method
    description: str
    plain_teacher_only: bool = False  # holds only for the student's own base without a teacher context


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sft", False, "train_baseline.py", None, (), "cross-entropy on the answer tokens only"),
        Method(
            "few_shot_distillation",
            True,
            "train_online_v1.py",
            "few_shot",
            (),
            "CE + λ·D to the same frozen model with k exemplars in its prompt",
        ),
        Method(
            "zero_shot_teacher",
            True,
            "train_ablation.py",
            "zero_shot_teacher",
            ("fewshot.k=0",),
            "control: the teacher sees no exemplars (its input equals the student's)",
            plain_teacher_only=True,
        ),
        Method(
            "shuffled_answers",
            True,
            "train_ablation.py",
            "shuffled_answers",
            ("fewshot.shuffle_answers=true",),
            "control: exemplar answers moved among the exemplar questions (fewshot.shuffle_mode: a derangement, "
            "or the original's plain permutation)",
        ),
        Method(
            "other_row_context",
            True,
            "train_ablation.py",
            "other_row_context",
            ("teacher.shuffle_context=true",),
            "control: each row's teacher sees another row's per-row context (teacher.context_field; a derangement)",
        ),
        Method(
            "context_distillation",
            True,
            "train_online_v1.py",
            None,
            (),
            "CE + λ·D to a teacher that sees a context the student lacks (teacher.system, teacher.context_files, "
            "teacher.context_field, teacher.template), with fewshot.k exemplars",
        ),
        Method(
            "model_distillation",
            True,
            "train_online_v1.py",
            None,
            (),
            "CE + λ·D to another model (teacher.model) seeing the bare question (fewshot.k = 0, no teacher context)",
        ),
    )
}
CONDITIONS: dict[str, Method] = {m.condition: m for m in METHODS.values() if m.condition}


def _holds(cfg: Config, setting: str) -> bool:
    key, value = parse_override(setting)
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name) == value


def distillation_method(cfg: Config) -> Method:
    """The distillation method (or control) a config describes."""
    t = cfg.teacher
    plain = not t.has_context and t.model is None
    for method in METHODS.values():
        if method.teacher and method.settings and all(_holds(cfg, s) for s in method.settings):
            if plain or not method.plain_teacher_only:
                return method
    if t.has_context:
        return METHODS["context_distillation"]
    if cfg.fewshot.k == 0:
        return METHODS["model_distillation"]
    return METHODS["few_shot_distillation"]


def check_entry_point(
    entry_point: str, cfg: Config, source: dict[str, str], condition: str | None = None
) -> Method:
    """The method `entry_point` runs for this config; settings it would ignore or a control run through
    the wrong script are refused (ConfigError naming the key and where it was set)."""
    if entry_point == "train_baseline.py":
        ignored = {
            k: w for k, w in source.items() if k.split(".")[0] in ("fewshot", "distill", "teacher", "rollout")
        }
        if ignored:
            raise ConfigError(
                [
                    f"{where}: '{key}' would be ignored by train_baseline.py (CE only); use train_online_v1.py or "
                    "train_ablation.py for a teacher, or remove it"
                    for key, where in sorted(ignored.items())
                ]
            )
        return METHODS["sft"]
    method = distillation_method(cfg)
    if entry_point == "train_online_v1.py" and method.entry_point != entry_point:
        key = parse_override(method.settings[0])[0]
        raise ConfigError(
            [
                f"{source.get(key, 'the schema default')}: '{key}' makes this the {method.name} control; "
                "run it with train_ablation.py"
            ]
        )
    # few_shot is "the method itself", which with a teacher context or another model is named after it.
    itself = condition == "few_shot" and method.condition is None
    if condition is not None and CONDITIONS[condition] is not method and not itself:
        raise ConfigError(
            [
                f"--condition {condition} conflicts with the config, which describes {method.name} "
                "(fewshot.k=0, fewshot.shuffle_answers=true and teacher.shuffle_context=true are three "
                "different controls)"
            ]
        )
    if cfg.fewshot.shuffle_answers and cfg.teacher.shuffle_context:
        raise ConfigError(
            [
                f"{source.get('teacher.shuffle_context', 'the schema default')}: 'teacher.shuffle_context' and "
                f"'fewshot.shuffle_answers' (from {source.get('fewshot.shuffle_answers', 'the schema default')}) "
                "are both true: two controls at once control nothing; keep one"
            ]
        )
    if cfg.fewshot.shuffle_answers and cfg.fewshot.k == 0:
        where = source.get("fewshot.shuffle_answers", "the schema default")
        raise ConfigError(
            [
                f"{where}: 'fewshot.shuffle_answers' is true with fewshot.k=0 (from "
                f"{source.get('fewshot.k', 'the schema default')}): there are no exemplar answers to shuffle, "
                "and the 0-shot-teacher and shuffled-answers controls cannot both hold"
            ]
        )
    return method
