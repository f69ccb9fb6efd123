"""The config schema: shipped configs, composition (inherit, --base_config, overrides), error reporting
through the real CLIs, and the generated reference docs/config.md."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import CONFIGS, REPO

from fsdistill.config import ConfigError, load_config, schema_fields, valid_keys

# Task configs (configs/tasks/) are fragments that model configs inherit: they name no model.
# configs/accelerate/ holds accelerate launch files, not training configs (tests/test_launch.py).
TASK_CONFIGS = sorted((CONFIGS / "tasks").glob("*.yaml"))
ALL_CONFIGS = sorted(
    set(CONFIGS.rglob("*.yaml")) - set(TASK_CONFIGS) - set(CONFIGS.glob("accelerate/*.yaml"))
)
SHOW_CONFIG = REPO / "scripts" / "show_config.py"
TRAIN_ONLINE = REPO / "src" / "training" / "train_online_v1.py"
CLI_SECONDS = 5.0

# --------------------------------------------------------------------------------------------------
# Every shipped config, against the reference recipe (shared/reference/original-method.md)
# --------------------------------------------------------------------------------------------------

QWEN17 = "Qwen/Qwen3-1.7B"
QWEN8 = "Qwen/Qwen3-8B"
LLAMA = "meta-llama/Llama-3.2-3B-Instruct"
GEMMA = "google/gemma-3-270m"

# Recipe of the original: LoRA r16 alpha32, lr 2e-4, 1000 steps, per-device 4 x accumulation 4,
# lambda 0.5, top-256, 8 shots. SFT configs carry the schema's (unused) fewshot/distill defaults,
# which are the paper's values too.
REF = dict(
    use_lora=True, r=16, alpha=32, lr=2e-4, max_steps=1000, per_device=4, accum=4,
    k=8, shuffle=False, weight=0.5, top_k=256, grad_ckpt=False,
)  # fmt: skip
TINY = dict(REF, r=8, alpha=16, lr=2e-3, max_steps=8, per_device=2, accum=2)

EXPECTED: dict[str, dict] = {
    "base.yaml": dict(REF, name=QWEN17),
    "online_v1.yaml": dict(REF, name=QWEN17),
    "ablation_zeroshot_teacher.yaml": dict(REF, name=QWEN17, k=0),
    "ablation_shuffled_answers.yaml": dict(REF, name=QWEN17, shuffle=True),
    "qwen8b.yaml": dict(REF, name=QWEN8, per_device=2, accum=8, grad_ckpt=True),
    "qwen8b_distill.yaml": dict(REF, name=QWEN8, per_device=2, accum=8, grad_ckpt=True),
    "qwen8b_ablation_zeroshot.yaml": dict(REF, name=QWEN8, per_device=2, accum=8, grad_ckpt=True, k=0),
    "llama3b.yaml": dict(REF, name=LLAMA),
    "online_v1_llama.yaml": dict(REF, name=LLAMA),
    "gemma270m.yaml": dict(REF, name=GEMMA, use_lora=False, lr=5e-5),
    "gemma270m_distill.yaml": dict(REF, name=GEMMA, use_lora=False, lr=5e-5),
    "gemma270m_ablation_zeroshot.yaml": dict(REF, name=GEMMA, use_lora=False, lr=5e-5, k=0),
    "tiny/base.yaml": dict(TINY, name=None),
    "tiny/online_v1.yaml": dict(TINY, name=None, k=2, top_k=16),
    "tiny/ablation_zeroshot_teacher.yaml": dict(TINY, name=None, k=0, top_k=16),
    "tiny/ablation_shuffled_answers.yaml": dict(TINY, name=None, k=2, top_k=16, shuffle=True),
    "tiny/full_ft.yaml": dict(TINY, name=None, use_lora=False, lr=1e-3),
    "tiny/full_ft_distill.yaml": dict(TINY, name=None, use_lora=False, lr=1e-3, k=2, top_k=16),
}


def resolved(cfg) -> dict:
    return dict(
        name=cfg.model.name,
        use_lora=cfg.training.use_lora,
        r=cfg.lora.r,
        alpha=cfg.lora.alpha,
        lr=cfg.training.lr,
        max_steps=cfg.training.max_steps,
        per_device=cfg.training.per_device_batch_size,
        accum=cfg.training.grad_accum_steps,
        k=cfg.fewshot.k,
        shuffle=cfg.fewshot.shuffle_answers,
        weight=cfg.distill.weight,
        top_k=cfg.distill.top_k,
        grad_ckpt=cfg.model.gradient_checkpointing,
    )


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_yaml_under_configs_loads_and_validates(path):
    cfg, source = load_config(str(path))
    assert source, "a shipped config sets at least one key"
    assert all(key in valid_keys() or key == "model.architecture" for key in source)
    assert cfg.training.max_steps >= 1


def test_the_table_covers_every_top_level_and_tiny_config():
    shipped = {str(p.relative_to(CONFIGS)) for p in [*CONFIGS.glob("*.yaml"), *CONFIGS.glob("tiny/*.yaml")]}
    assert shipped == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_config_matches_the_reference_recipe(name):
    cfg, _ = load_config(str(CONFIGS / name))
    got = resolved(cfg)
    want = EXPECTED[name]
    assert got == {k: want[k] for k in got}, name
    if not name.startswith("tiny/"):
        # 2 processes x per-device x accumulation = 32, stated where the launch checks it.
        assert cfg.training.global_batch_size == 32 == 2 * got["per_device"] * got["accum"]
        assert cfg.training.warmup_steps == 50 and cfg.training.save_every == 200
        assert cfg.lora.dropout == 0.05 and cfg.training.weight_decay == 0.01
        assert cfg.data.max_teacher_len == 4096 and cfg.data.max_student_len == 512
        assert cfg.fewshot.selection == "per_example" and cfg.fewshot.seed == 42
        assert cfg.distill.loss == "topk_logit_mse"
        assert set(cfg.lora.target_modules) == {
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        }
    if name.startswith("gemma"):
        assert cfg.model.dtype == "float32" and cfg.training.mixed_precision == "bf16"


# --------------------------------------------------------------------------------------------------
# Errors through the real command lines
# --------------------------------------------------------------------------------------------------


def run_cli(script: Path, *args: str, cwd: Path = REPO) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )
    return proc, time.perf_counter() - start


def cli_args(script: Path, tmp_path: Path, config: Path, *overrides: str) -> list[str]:
    args = ["--config", str(config)]
    if script == TRAIN_ONLINE:
        args += ["--output_dir", str(tmp_path / "run")]
    return [*args, *overrides]


def assert_user_error(proc: subprocess.CompletedProcess, seconds: float) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: config error"), proc.stderr
    assert seconds < CLI_SECONDS, f"a config mistake took {seconds:.1f} s to report"
    return proc.stderr


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


ONLINE = CONFIGS / "online_v1.yaml"
SCRIPTS = pytest.mark.parametrize(
    "script", [SHOW_CONFIG, TRAIN_ONLINE], ids=["show_config", "train_online_v1"]
)


@SCRIPTS
def test_unknown_key_in_a_file_names_key_file_and_nearest_valid_key(script, tmp_path):
    bad = write(
        tmp_path / "typo.yaml",
        f"""\
        inherit: {ONLINE}
        distill:
          wieght: 0.3
        """,
    )
    proc, seconds = run_cli(script, *cli_args(script, tmp_path, bad))
    err = assert_user_error(proc, seconds)
    assert f"{bad}: unknown key 'distill.wieght'; did you mean 'distill.weight'?" in err


@SCRIPTS
def test_unknown_override_names_the_command_line(script, tmp_path):
    proc, seconds = run_cli(script, *cli_args(script, tmp_path, ONLINE, "training.learning_rate=1e-4"))
    err = assert_user_error(proc, seconds)
    assert "the command line: unknown key 'training.learning_rate'; did you mean 'training.lr'?" in err


@SCRIPTS
def test_wrong_type_is_reported_with_key_and_value(script, tmp_path):
    proc, seconds = run_cli(script, *cli_args(script, tmp_path, ONLINE, "training.max_steps=lots"))
    err = assert_user_error(proc, seconds)
    assert "the command line: 'training.max_steps' has a wrong type or value ('lots')" in err


@SCRIPTS
def test_missing_model_name_is_required(script, tmp_path):
    bare = write(tmp_path / "no_model.yaml", "training:\n  lr: 1.0e-4\n")
    proc, seconds = run_cli(script, *cli_args(script, tmp_path, bare))
    err = assert_user_error(proc, seconds)
    assert "'model.name' is required but has no value" in err


OUT_OF_RANGE = [
    ("distill.weight=-0.5", "'distill.weight' (lambda) must be a finite number >= 0, got -0.5"),
    ("distill.top_k=0", "'distill.top_k' must be >= 1 or null, got 0"),
    ("fewshot.k=-1", "'fewshot.k' must be >= 0 (a shot count), got -1"),
    ("training.lr=0", "'training.lr' must be a finite number > 0, got 0.0"),
    ("training.grad_accum_steps=0", "'training.grad_accum_steps' must be >= 1, got 0"),
]


@SCRIPTS
@pytest.mark.parametrize("override, message", OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_out_of_range_value(script, override, message, tmp_path):
    proc, seconds = run_cli(script, *cli_args(script, tmp_path, ONLINE, override))
    err = assert_user_error(proc, seconds)
    assert f"the command line: {message}" in err
    assert "config error (1)" in err


@SCRIPTS
def test_several_mistakes_are_all_reported_in_one_run(script, tmp_path):
    bad = write(
        tmp_path / "many.yaml",
        """\
        model:
          dtype: bfloat16
        fewshot:
          shuffle_answer: true
        training:
          warmup_steps: ten
        """,
    )
    overrides = [o for o, _ in OUT_OF_RANGE] + ["lora.rank=8"]
    proc, seconds = run_cli(script, *cli_args(script, tmp_path, bad, *overrides))
    err = assert_user_error(proc, seconds)
    expected = [
        f"{bad}: unknown key 'fewshot.shuffle_answer'; did you mean 'fewshot.shuffle_answers'?",
        f"{bad}: 'training.warmup_steps' has a wrong type or value ('ten')",
        "the command line: unknown key 'lora.rank'; did you mean 'lora.r'?",
        "'model.name' is required but has no value",
        *(f"the command line: {m}" for _, m in OUT_OF_RANGE),
    ]
    for line in expected:
        assert line in err, (line, err)
    assert f"config errors ({len(expected)}):" in err


def test_validation_never_imports_torch():
    """A failing and a valid config are checked, and the CLI's composition runs, without torch."""
    code = textwrap.dedent(
        f"""
        import sys
        from fsdistill.cli import add_config_args, config_from_args
        from fsdistill.config import ConfigError, load_config
        import argparse
        for path in {[str(p) for p in ALL_CONFIGS]!r}:
            load_config(path)
        parser = argparse.ArgumentParser(); add_config_args(parser)
        config_from_args(parser.parse_args(["--config", {str(ONLINE)!r}, "training.lr=1e-4"]))
        try:
            load_config({str(ONLINE)!r}, overrides=["training.lr=0", "bogus.key=1"])
        except ConfigError:
            pass
        heavy = sorted(m for m in ("torch", "transformers", "peft", "accelerate", "datasets") if m in sys.modules)
        print("heavy:", heavy)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "heavy: []" in proc.stdout


# --------------------------------------------------------------------------------------------------
# Composition: inherit chains, --base_config, --output_dir, overrides
# --------------------------------------------------------------------------------------------------


def test_inherit_relative_paths_and_a_three_level_chain(tmp_path):
    write(
        tmp_path / "a" / "grand.yaml",
        "model:\n  name: grand/model\ntraining:\n  lr: 1.0e-3\n  max_steps: 10\n",
    )
    write(
        tmp_path / "b" / "parent.yaml",
        "inherit: ../a/grand.yaml\ntraining:\n  lr: 2.0e-3\nfewshot:\n  k: 3\n",
    )
    child = write(tmp_path / "b" / "c" / "child.yaml", "inherit: ../parent.yaml\nfewshot:\n  k: 5\n")
    cfg, source = load_config(str(child))
    assert cfg.model.name == "grand/model"  # from the grandparent
    assert cfg.training.max_steps == 10
    assert cfg.training.lr == 2e-3  # parent over grandparent
    assert cfg.fewshot.k == 5  # child over parent
    assert source["model.name"].endswith("grand.yaml")
    assert source["training.lr"].endswith("parent.yaml")
    assert source["fewshot.k"].endswith("child.yaml")
    assert "inherit" not in source


def test_inherit_is_relative_to_the_file_not_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path / "cfg" / "base.yaml", "model:\n  name: x/y\n")
    child = write(tmp_path / "cfg" / "child.yaml", "inherit: base.yaml\n")
    monkeypatch.chdir(tmp_path)  # base.yaml does not exist here
    cfg, _ = load_config("cfg/child.yaml")
    assert cfg.model.name == "x/y"
    assert child.exists()


def test_inherit_cycle_is_refused_naming_the_files(tmp_path):
    a = write(tmp_path / "a.yaml", "inherit: b.yaml\nmodel:\n  name: a\n")
    b = write(tmp_path / "b.yaml", "inherit: c.yaml\n")
    c = write(tmp_path / "c.yaml", "inherit: a.yaml\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(a))
    msg = str(e.value)
    assert "inherit cycle" in msg
    for path in (a, b, c):
        assert str(path.resolve()) in msg
    me = write(tmp_path / "self.yaml", "inherit: self.yaml\n")
    with pytest.raises(ConfigError, match="inherit cycle"):
        load_config(str(me))


def test_inherit_a_list_later_entries_winning_and_a_shared_base_applied_once(tmp_path):
    """`inherit: [model.yaml, task.yaml]`: my task over an existing model config, in one file. A base
    that two entries inherit is applied once, at its first place, so it cannot undo the first entry's
    changes when the second is read."""
    write(tmp_path / "shared.yaml", "training:\n  lr: 1.0e-3\n  max_steps: 10\ntask:\n  name: shared\n")
    write(tmp_path / "model.yaml", "inherit: shared.yaml\nmodel:\n  name: m/x\ntraining:\n  lr: 2.0e-3\n")
    write(tmp_path / "task.yaml", "inherit: shared.yaml\ntask:\n  name: mine\n  scoring: last_number\n")
    mine = write(tmp_path / "mine.yaml", "inherit: [model.yaml, task.yaml]\ntraining:\n  max_steps: 3\n")
    cfg, source = load_config(str(mine))
    assert (cfg.model.name, cfg.task.name, cfg.task.scoring) == ("m/x", "mine", "last_number")
    assert cfg.training.lr == 2e-3  # model.yaml's, not shared.yaml's re-applied after it
    assert cfg.training.max_steps == 3 and source["training.max_steps"].endswith("mine.yaml")
    assert source["task.name"].endswith("task.yaml") and source["training.lr"].endswith("model.yaml")
    # The same composition from the command line: --base_config, then --config.
    again, _ = load_config(
        str(tmp_path / "task.yaml"), str(tmp_path / "model.yaml"), ["training.max_steps=3"]
    )
    assert again == cfg
    bad = write(tmp_path / "bad.yaml", "inherit: {a: 1}\n")
    with pytest.raises(ConfigError, match="'inherit' must be a path or a list of paths"):
        load_config(str(bad))
    cycle = write(tmp_path / "cycle.yaml", "inherit: [model.yaml, cycle.yaml]\n")
    with pytest.raises(ConfigError, match="inherit cycle"):
        load_config(str(cycle))


def test_missing_inherited_file_is_named(tmp_path):
    child = write(tmp_path / "child.yaml", "inherit: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml: cannot read config file"):
        load_config(str(child))


def test_base_config_then_config_then_output_dir_then_overrides(tmp_path):
    base = write(
        tmp_path / "base.yaml",
        "model:\n  name: base/model\ntraining:\n  lr: 1.0e-3\n  max_steps: 7\noutput:\n  dir: from_base\n",
    )
    config = write(tmp_path / "config.yaml", "training:\n  lr: 3.0e-3\n  warmup_steps: 2\n")
    cfg, source = load_config(str(config), base_config=str(base))
    assert (cfg.model.name, cfg.training.max_steps) == ("base/model", 7)  # base_config's keys survive
    assert cfg.training.lr == 3e-3  # --config after --base_config
    assert source["training.lr"].endswith("config.yaml")
    assert cfg.output.dir == "from_base"

    cfg, source = load_config(
        str(config), str(base), ["training.lr=5e-3", "output.dir=from_override"], "from_flag"
    )
    assert cfg.training.lr == 5e-3 and source["training.lr"] == "the command line"
    assert cfg.output.dir == "from_override"  # overrides come last, even after --output_dir
    cfg, source = load_config(str(config), str(base), [], "from_flag")
    assert cfg.output.dir == "from_flag" and "--output_dir" in source["output.dir"]
    # Two overrides of one key: the last wins.
    cfg, _ = load_config(str(config), str(base), ["fewshot.k=1", "fewshot.k=4"])
    assert cfg.fewshot.k == 4


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = write(tmp_path / "broken.yaml", "model:\n  name: x\ntraining:\n  lr: [1, 2\n  max_steps: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(bad))
    msg = str(e.value)
    assert str(bad) in msg and "not valid YAML" in msg
    assert "line 5" in msg  # where the parser found the unclosed list


def test_config_file_must_be_a_mapping(tmp_path):
    bad = write(tmp_path / "list.yaml", "- model\n- training\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(str(bad))


def test_architecture_fields_merge_across_files_and_overrides(tmp_path):
    child = write(
        tmp_path / "child.yaml",
        f"inherit: {CONFIGS / 'tiny' / 'base.yaml'}\nmodel:\n  architecture:\n    num_hidden_layers: 3\n",
    )
    cfg, source = load_config(str(child), overrides=["model.architecture.hidden_size=32"])
    arch = cfg.model.architecture
    assert arch["model_type"] == "qwen3" and arch["vocab_size"] == 151936  # kept from tiny/base.yaml
    assert arch["num_hidden_layers"] == 3 and arch["hidden_size"] == 32
    assert source["model.architecture"] == "the command line"


def test_string_overrides_keep_their_text():
    cfg, _ = load_config(
        str(ONLINE),
        overrides=[
            "task.question_template=Q: {question}",
            "model.chat_template_kwargs.date_string=2024-07-26",
            "output.name=007",
        ],
    )
    assert cfg.task.question_template == "Q: {question}"
    assert cfg.model.chat_template_kwargs == {"enable_thinking": False, "date_string": "2024-07-26"}
    assert cfg.output.name == "007"


def test_date_like_value_in_a_file_is_a_string(tmp_path):
    path = write(
        tmp_path / "date.yaml",
        f"inherit: {ONLINE}\nmodel:\n  chat_template_kwargs:\n    date_string: 2024-07-26\n",
    )
    cfg, _ = load_config(str(path))
    assert cfg.model.chat_template_kwargs["date_string"] == "2024-07-26"


def test_duplicate_keys_are_refused_naming_file_and_line(tmp_path):
    """PyYAML would keep the second `training:` section and silently drop every setting of the first."""
    path = write(
        tmp_path / "dup.yaml",
        f"inherit: {ONLINE}\ntraining:\n  lr: 1.0e-3\nfewshot:\n  k: 2\ntraining:\n  max_steps: 5\n",
    )
    with pytest.raises(ConfigError) as e:
        load_config(str(path))
    assert f"{path} line 6: not valid YAML (duplicate key 'training' (also at line 2)" in str(e.value)
    nested = write(tmp_path / "nested.yaml", f"inherit: {ONLINE}\ntraining:\n  lr: 1.0e-3\n  lr: 2.0e-3\n")
    with pytest.raises(ConfigError, match=r"nested\.yaml line 4: not valid YAML \(duplicate key 'lr'"):
        load_config(str(nested))


def test_empty_section_sets_nothing(tmp_path):
    path = write(tmp_path / "empty.yaml", f"inherit: {ONLINE}\nfewshot:\neval: {{}}\n")
    cfg, _ = load_config(str(path))
    assert cfg.fewshot.k == 8


def test_section_given_a_scalar_is_refused():
    with pytest.raises(ConfigError, match="'training' must be a section of keys"):
        load_config(str(ONLINE), overrides=["training=5"])


def test_missing_value_does_not_hide_range_errors(tmp_path):
    bare = write(tmp_path / "bare.yaml", "fewshot:\n  k: -2\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(bare))
    assert len(e.value.problems) == 2
    assert "'model.name' is required" in str(e.value) and "'fewshot.k' must be >= 0" in str(e.value)


def test_non_finite_values_are_refused():
    with pytest.raises(ConfigError) as e:
        load_config(str(ONLINE), overrides=["training.lr=.inf", "distill.weight=.nan"])
    assert len(e.value.problems) == 2


# --------------------------------------------------------------------------------------------------
# docs/config.md, generated from the schema
# --------------------------------------------------------------------------------------------------


def test_config_docs_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_config_docs.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr


def test_config_docs_list_every_schema_key_with_its_help():
    text = (REPO / "docs" / "config.md").read_text()
    for field in schema_fields():
        assert f"| `{field.key}` |" in text, field.key
        assert field.help.replace("|", "/") in text, field.key


def test_config_docs_check_detects_a_stale_file(tmp_path, monkeypatch):
    from fsdistill.tools import config_docs as gen

    stale = tmp_path / "config.md"
    stale.write_text(gen.render().replace("`training.lr`", "`training.learning_rate`"))
    monkeypatch.setattr(gen, "DOC", stale)
    with pytest.raises(SystemExit) as e:
        gen.main(["--check"])
    assert e.value.code == 1
    gen.main([])  # rewrites it
    gen.main(["--check"])


SERVED = ["teacher.model=served-model", "teacher.server=http://127.0.0.1:8000", "distill.loss=forward_kl"]
SAMPLED = [
    "distill.loss=sampled_token",
    "distill.top_k=null",
    "distill.topk_from=teacher",
    "rollout.source=student",
]


@pytest.mark.parametrize(
    "overrides, key, message",
    [
        (["distill.loss=topk_logit_mse"], "distill.loss", "topk_logit_mse needs raw logits"),
        *[
            (
                [*SAMPLED, refused],
                key,
                "gives sampled_token the log-probability of the answer's own token at temperature 1",
            )
            for refused, key in [
                ("distill.baseline=true", "distill.baseline"),
                ("distill.token_weighting=top_fraction", "distill.token_weighting"),
                ("distill.temperature=2.0", "distill.temperature"),
            ]
        ],
        (["distill.top_k=null"], "distill.top_k", "must be set with teacher.server"),
        (
            ["distill.topk_from=student"],
            "distill.topk_from",
            "student needs the teacher's logits at the student",
        ),
        (["distill.topk_from=union"], "distill.topk_from", "union needs the teacher's logits at the student"),
        (
            ["distill.topk_support=tail_bucket", "distill.temperature=2.0"],
            "distill.temperature",
            "the tail bucket at a temperature other than 1",
        ),
        (["rollout.source=teacher"], "rollout.source", "teacher rollouts"),
        (["rollout.source=mixed"], "rollout.source", "teacher rollouts"),
        (["teacher.cache=memory"], "teacher.cache", "not available with teacher.server"),
        (["teacher.dtype=bfloat16"], "teacher.dtype", "vllm serve --dtype"),
        (["teacher.model=null"], "teacher.model", "must name the model teacher.server serves"),
        (["teacher.server=127.0.0.1:8000"], "teacher.server", "must be an http:// or https:// URL"),
    ],
)
def test_a_served_teacher_refuses_what_it_cannot_give(overrides, key, message):
    """A vLLM server returns top-K log-probabilities at temperature 1 only: each loss or setting needing more
    is refused at config time, naming the key (exit 2 from the CLIs)."""
    with pytest.raises(ConfigError) as e:
        load_config(str(CONFIGS / "twostep" / "distill.yaml"), overrides=[*SERVED, *overrides])
    assert f"'{key}'" in str(e.value) or key in str(e.value)
    assert message in str(e.value)


def test_a_served_teacher_accepts_the_kl_family_at_temperature_1_and_sampled_token_and_server_settings_need_a_server():
    for loss, support in [
        ("forward_kl", "tail_bucket"),
        ("reverse_kl", "renormalize"),
        ("generalized_jsd", "tail_bucket"),
    ]:
        load_config(
            str(CONFIGS / "twostep" / "distill.yaml"),
            overrides=[*SERVED, f"distill.loss={loss}", f"distill.topk_support={support}"],
        )
    # sampled_token reads log p_teacher(answer's own token) only, which the server gives (clipped or not)
    for more in ([], ["distill.clip=1.0"]):
        load_config(str(CONFIGS / "twostep" / "on_policy.yaml"), overrides=[*SERVED, *SAMPLED, *more])
    with pytest.raises(ConfigError, match="is only read with teacher.server"):
        load_config(str(CONFIGS / "twostep" / "distill.yaml"), overrides=["teacher.server_retries=5"])
