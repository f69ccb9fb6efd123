"""What an evaluation scores, and the settings it scores it with (eval_checkpoints.py, chat.py).

A target is one model to score: a run's checkpoint, or a model folder (written by export_model.py, or
any transformers folder). Targets are named by

  --conditions NAME ... --base_dir DIR   the checkpoints of runs found by their run.json under DIR (a
                                         condition is a run's name)
  --path PATH                            one checkpoint-STEP/ folder, one run folder (its checkpoints) or
                                         one model folder

and labelled by what they are: a run's name and the checkpoint's step; a model folder's name (with the
step it was exported at, or none).

The evaluation's config, from which prompts, scoring, data and generation come:

  without --config  the config each target recorded (run.json, the checkpoint's config.yaml, export.json)
                    with the command line's `key=value` overrides on top. Targets scored into one result
                    file must agree on every setting the file's numbers depend on (results.result_settings);
                    where they differ the command line must say which value to use, or, for the settings
                    that define the training (TRAINING_DEFINING), they belong in separate files.
  with --config     that config, for every target (what the committed experiment scripts do).

Either way an evaluation may change evaluation settings (eval.*, the backend, the split, task.max_new_tokens,
task.stop_strings, model.dtype, batch sizes), but a target trained with another task, template, data source
or base model than the evaluation describes is refused, naming each difference, unless
--override_run_settings asks for it; each entry then records the differences (results: run_overrides).
The base model (model.name, init, architecture) of a checkpoint is never overridden: its adapter or
weights load on the base it was trained from.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from fsdistill.config import (
    Config,
    ModelConfig,
    config_identity,
    from_dict,
    identity_differences,
    load_recorded_config,
)
from fsdistill.errors import UserError
from fsdistill.eval.results import BASE, result_settings
from fsdistill.train.run_dir import is_our_run, list_checkpoints

# config_identity patterns keeping what defines a trained model's behaviour on its task: the base model,
# tokenizer and chat template, the task (its rows, user turn, system prompt and scoring; not its generation
# limits, which are evaluation settings), the data source. An evaluation may change these only on request.
TRAINING_DEFINING_MAY_DIFFER = (
    "*",
    "!model.name",
    "!model.init",
    "!model.architecture",
    "!model.tokenizer",
    "!model.chat_template",
    "!model.chat_template_kwargs",
    "!task.*",
    "task.max_new_tokens",
    "task.stop_strings",
    "!data.source",
    "!data.hub_config",
)
# What a checkpoint and the evaluation must always share: the base model its adapter or weights load on.
SAME_BASE_MAY_DIFFER = ("*", "!model.name", "!model.init", "!model.architecture")
# With --split validation, also what decides which training rows were held out (tasks.rows.training_rows),
# or rows the run trained on would be scored as "validation".
SAME_VALIDATION_MAY_DIFFER = (
    "*",
    "!data.source",
    "!data.hub_config",
    "!data.train_split",
    "!data.max_train_examples",
    "!data.validation_size",
    "!data.validation_split",
    "!training.seed",
)
# A model folder holds its own weights and architecture (config.json) and tokenizer.
FOLDER_MAY_DIFFER = ("model.architecture",)


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (a key of check_targets' result)
class Target:
    """One model to score.

    recorded: the config it was trained with, as recorded (a model folder's: export.json's, with the
    model pointed at the folder); None for a plain model folder, which records none. base_model: the model
    its training started from: the teacher of teacher-forced KL (None for a plain model folder: itself).
    """

    condition: str
    method: str
    step: int | None
    path: Path
    recorded: dict[str, Any] | None
    where: str
    folder: bool = False  # a model folder: whole weights loaded with from_pretrained (no adapter)
    base_model: ModelConfig | None = None

    @property
    def label(self) -> str:
        return self.condition if self.step is None else f"{self.condition} step {self.step}"

    def run_config(self) -> Config | None:
        """The config it was trained with (validated), or None for a plain model folder."""
        return None if self.recorded is None else from_dict(self.recorded, self.where)


# ------------------------------------------------------------------------------------------------
# Finding targets
# ------------------------------------------------------------------------------------------------


def find_runs(base_dir: Path) -> dict[str, list[Path]]:
    """run name -> run folders holding a run.json with that name."""
    if not base_dir.is_dir():
        raise UserError(f"--base_dir {base_dir}: no such folder")
    runs: dict[str, list[Path]] = {}
    for manifest in sorted(base_dir.rglob("run.json")):
        try:
            name = json.loads(manifest.read_text())["name"]
        except (json.JSONDecodeError, KeyError) as e:
            raise UserError(f"{manifest}: not a run manifest ({e})") from None
        runs.setdefault(name, []).append(manifest.parent)
    return runs


def resolve_condition(runs: dict[str, list[Path]], name: str) -> Path:
    found = runs.get(name, [])
    if len(found) == 1:
        return found[0]
    listing = (
        "\n    ".join(f"{n}: {', '.join(map(str, dirs))}" for n, dirs in sorted(runs.items())) or "(none)"
    )
    problem = "matches no run" if not found else f"is ambiguous ({len(found)} runs carry it)"
    raise UserError(f"condition '{name}' {problem}; runs found:\n    {listing}")


def run_checkpoints(run_dir: Path, steps: list[int] | None) -> list[tuple[int, Path]]:
    have = list_checkpoints(run_dir)
    if not have:
        raise UserError(
            f"{run_dir}: the run has no complete checkpoint (checkpoint-STEP/ with checkpoint.json)"
        )
    if steps is None:
        return have
    by_step = dict(have)
    missing = [s for s in steps if s not in by_step]
    if missing:
        raise UserError(f"{run_dir}: no checkpoint for steps {missing}; it has {sorted(by_step)}")
    return [(s, by_step[s]) for s in steps]


def _read_manifest(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    manifest = json.loads(path.read_text())
    missing = [k for k in ("name", "method", "config") if k not in manifest]
    if missing:
        raise UserError(f"{path}: not a run manifest (no {', '.join(missing)})")
    return manifest


def run_targets(run_dir: Path, steps_for: Callable[[str], list[int] | None]) -> list[Target]:
    """The checkpoints of one run folder (steps_for(run name): the steps to score, None for all)."""
    manifest = _read_manifest(run_dir)
    where = f"{run_dir / 'run.json'} (config)"
    from_dict(manifest["config"], where)  # a damaged record fails here, naming the file
    return [
        Target(manifest["name"], manifest["method"], step, path, manifest["config"], where)
        for step, path in run_checkpoints(run_dir, steps_for(manifest["name"]))
    ]


def checkpoint_target(path: Path) -> Target:
    """One checkpoint-STEP/ folder, with the config it carries (config.yaml) and its run's name."""
    try:
        meta = json.loads((path / "checkpoint.json").read_text())
        recorded = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
        name, method, step = meta["name"], meta["method"], int(meta["step"])
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError) as e:
        raise UserError(f"{path}: not a checkpoint this project wrote ({type(e).__name__}: {e})") from None
    where = str(path / "config.yaml")
    if not isinstance(recorded, dict):
        raise UserError(f"{where}: not the config this project writes")
    from_dict(recorded, where)
    return Target(name, method, step, path, recorded, where)


def folder_target(path: Path) -> Target:
    """A model folder: one export_model.py wrote (export.json: its run's config, method and step, the model
    pointed at the folder, which holds the merged weights and the tokenizer with the run's template), or
    any transformers folder (evaluated as a base model, with --config)."""
    name = path.resolve().name
    record_path = path / "export.json"
    if not record_path.is_file():
        return Target(name, BASE, None, path, None, str(path), folder=True)
    try:
        record = json.loads(record_path.read_text())
        run_config, method, step, dtype = (record[k] for k in ("run_config", "method", "step", "dtype"))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(
            f"{record_path}: not an export record of this version ({type(e).__name__}: {e}); export the "
            "checkpoint again with export_model.py"
        ) from None
    where = str(record_path)
    recorded = copy.deepcopy(run_config)
    recorded["model"] = {
        **recorded.get("model", {}),
        "name": str(path),
        "init": "pretrained",
        "architecture": {},
        "tokenizer": str(path),
        "dtype": dtype,
    }
    base = from_dict(run_config, f"{where} (run_config)").model
    return Target(name, method, step, path, recorded, where, folder=True, base_model=base)


def targets_at(path: Path, steps_for: Callable[[str], list[int] | None]) -> list[Target]:
    """--path: a checkpoint folder, a run folder (its checkpoints) or a model folder."""
    if (path / "checkpoint.json").is_file():
        return [checkpoint_target(path)]
    if is_our_run(path):
        return run_targets(path, steps_for)
    if (path / "config.json").is_file():
        return [folder_target(path)]
    raise UserError(
        f"--path {path}: not a checkpoint folder (checkpoint.json), a run folder (run.json) or a model folder "
        "(config.json)"
    )


def folder_model_overrides(path: Path) -> list[str]:
    """Overrides pointing a --config at a model folder: its weights and, when it holds one, its tokenizer."""
    tokenizer = [f"model.tokenizer={path}"] if (path / "tokenizer_config.json").is_file() else []
    return [f"model.name={path}", "model.init=pretrained", *tokenizer]


# ------------------------------------------------------------------------------------------------
# The evaluation's config, and what targets may differ on
# ------------------------------------------------------------------------------------------------


def recorded_evaluation_config(
    targets: list[Target], overrides: list[str], script: str, split: str
) -> tuple[Config, dict[str, str]]:
    """The config of an evaluation without --config: the first target's recorded config with the
    overrides on top. Every target must give the same result settings under the same overrides: targets
    trained on another task, template, data or base model are refused (they belong in another file), and
    a difference in an evaluation setting asks the command line to choose. Returns (config, sources)."""
    if any(t.recorded is None for t in targets):
        plain = next(t for t in targets if t.recorded is None)
        raise UserError(
            f"{plain.path} is a model folder without a record of its task (no export.json): give --config "
            "with the task, data and template to score it on"
        )
    configs = [load_recorded_config(t.recorded, t.where, overrides) for t in targets]
    first = targets[0]
    training_diffs, eval_diffs = [], []
    for target, (cfg, _) in zip(targets[1:], configs[1:]):
        for line in identity_differences(
            result_settings(configs[0][0], script, split),
            result_settings(cfg, script, split),
            first.condition,
            target.condition,
        ):
            key = line.split(":", 1)[0]
            defining = key in config_identity(cfg, TRAINING_DEFINING_MAY_DIFFER)
            found = training_diffs if defining else eval_diffs
            if line not in found:  # each run's checkpoints share its config: name a difference once
                found.append(line)
    if training_diffs:
        raise UserError(
            "the targets were trained with different tasks, templates, data or base models, so their scores do "
            "not belong in one result file; evaluate them separately:\n    " + "\n    ".join(training_diffs)
        )
    if eval_diffs:
        keys = sorted({line.split(":", 1)[0] for line in eval_diffs})
        raise UserError(
            "the targets' recorded configs differ on settings the result file records; choose one value on "
            f"the command line ({' '.join(f'{k}=...' for k in keys)}) or evaluate them separately:\n    "
            + "\n    ".join(eval_diffs)
        )
    return configs[0]


def check_targets(
    cfg: Config, targets: list[Target], described_by: str, split: str, allow_overrides: bool
) -> dict[Target, dict[str, dict[str, Any]]]:
    """Refuse targets the evaluation config does not fit; returns {target: run_overrides} (the
    training-defining settings the evaluation changes, allowed by --override_run_settings).

    Always refused: targets trained with different training-defining settings from one another, a
    checkpoint on another base model, and with --split validation a run that held out other rows.
    """
    first = targets[0]
    for target in targets[1:]:
        diffs = _differences(first, target, TRAINING_DEFINING_MAY_DIFFER)
        if diffs:
            raise UserError(
                f"{first.label} and {target.label} were trained with different tasks, templates, data or base "
                "models; evaluate them into separate result files:\n    " + "\n    ".join(diffs)
            )
    changed = {}
    for target in targets:
        run_cfg = target.run_config()
        if run_cfg is None:  # a plain model folder: the evaluation config is all it has
            changed[target] = {}
            continue
        if not target.folder:
            _refuse(
                cfg,
                run_cfg,
                SAME_BASE_MAY_DIFFER,
                f"{target.path} was trained from another base model than {described_by} describes",
            )
        if split == "validation":
            # training.seed draws the held-out rows only when they are held out of the training split.
            seed = () if cfg.data.validation_size else ("training.seed",)
            _refuse(
                cfg,
                run_cfg,
                SAME_VALIDATION_MAY_DIFFER + seed,
                f"{target.path} held out other rows than {described_by} describes, so its training rows could "
                "be scored as validation (--split validation)",
            )
        may_differ = TRAINING_DEFINING_MAY_DIFFER + (FOLDER_MAY_DIFFER if target.folder else ())
        run, now = config_identity(run_cfg, may_differ), config_identity(cfg, may_differ)
        changed[target] = {
            k: {"run": run.get(k), "evaluated": now.get(k)} for k in sorted(run) if run[k] != now.get(k)
        }
        if changed[target] and not allow_overrides:
            raise UserError(
                f"{target.label} was trained with other settings than {described_by} gives its evaluation "
                "(task, template, data source or model); it is scored with what it was trained with unless you "
                "ask otherwise: drop the differing settings, or pass --override_run_settings to score it so "
                "anyway (each entry then records the differences):\n    "
                + "\n    ".join(identity_differences(run, now, "run", "evaluation"))
            )
    return changed


def _differences(a: Target, b: Target, may_differ: tuple[str, ...]) -> list[str]:
    cfg_a, cfg_b = a.run_config(), b.run_config()
    if cfg_a is None or cfg_b is None:
        return []
    if a.folder or b.folder:
        may_differ = may_differ + FOLDER_MAY_DIFFER + ("model.name", "model.init", "model.tokenizer")
    return identity_differences(
        config_identity(cfg_a, may_differ), config_identity(cfg_b, may_differ), a.label, b.label
    )


def _refuse(cfg: Config, run_cfg: Config, may_differ: tuple[str, ...], problem: str) -> None:
    diffs = identity_differences(
        config_identity(run_cfg, may_differ), config_identity(cfg, may_differ), "run", "evaluation"
    )
    if diffs:
        raise UserError(f"{problem}:\n    " + "\n    ".join(diffs))


def teacher_model(target: Target, cfg: Config) -> ModelConfig:
    """The model a target's training started from (the k-shot teacher of teacher-forced KL): its run's
    base; a plain model folder is its own."""
    if target.base_model is not None:
        return target.base_model
    run_cfg = target.run_config()
    if run_cfg is not None:
        return run_cfg.model
    return replace(cfg.model, name=str(target.path), init="pretrained", architecture={})


def model_label(cfg: Config) -> tuple[str, str, int | None]:
    """(condition, method, step) of the model a config names, for eval_icl.py: "base" for a base model,
    but a model folder export_model.py wrote is labelled by its folder's name, its run's method and step,
    so a trained model is never filed as the base model."""
    folder = Path(cfg.model.name).expanduser() if cfg.model.name else None
    if folder is not None and cfg.model.init == "pretrained" and (folder / "export.json").is_file():
        target = folder_target(folder)
        return target.condition, target.method, target.step
    return BASE, BASE, None
