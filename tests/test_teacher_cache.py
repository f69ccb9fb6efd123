"""The teacher top-K cache: training with it equals training without it (fp32), and a stale one is refused.

The runs use one example per micro-batch, so the live teacher sees the very same input shapes at every
visit and the comparison can be exact (bit-identical losses and weights). With padding the cached
targets of a first visit can differ from a later live run by rounding only (another padded width); the
padded test checks that bound.
"""

from __future__ import annotations

import json

import pytest
from helpers import TEACHER_OVERRIDES, TINY, cli_argv, column, common_overrides, metrics, run_cli

from fsdistill.distill.precompute import main as precompute_teacher
from fsdistill.train.entry import train_online_v1 as train_online

CONFIG = TINY / "online_v1.yaml"
# G = 1 x 1 x 2 = 2 of 6 rows per step: 3 steps an epoch, 6 steps = every example seen twice.
TWO_EPOCHS = [
    "data.max_train_examples=6",
    "data.validation_size=0",
    "training.per_device_batch_size=1",
    "training.grad_accum_steps=2",
    "training.max_steps=6",
    "training.save_every=6",
]


@pytest.fixture(scope="module")
def settings(short_gsm8k) -> list[str]:
    return [*common_overrides(short_gsm8k), *TEACHER_OVERRIDES, *TWO_EPOCHS]


def train(folder, settings, *overrides: str):
    assert run_cli(train_online, cli_argv("online_v1.yaml", folder, *settings, *overrides)) == 0
    return folder


def precompute(settings, *overrides: str) -> int:
    return run_cli(precompute_teacher, ["--config", str(CONFIG), *settings, *overrides])


def digest(run_dir) -> str:
    return json.loads((run_dir / "ranks" / "rank0.json").read_text())["trainable_parameters_sha256"]


def same_training(a, b) -> None:
    for key in ("train/ce_loss", "train/dist_loss", "train/grad_norm"):
        assert column(a, key) == column(b, key), key
    assert digest(a) == digest(b)


@pytest.fixture(scope="module")
def live_run(tmp_path_factory, settings):
    return train(tmp_path_factory.mktemp("live") / "live", settings)


def test_memory_cache_gives_identical_losses_and_weights(tmp_path, settings, live_run):
    cached = train(tmp_path / "memory", settings, "teacher.cache=memory")
    same_training(cached, live_run)
    hit_rate = column(cached, "train/teacher_cache_hit_rate")
    assert hit_rate[2] == 0.0 and hit_rate[-1] == 0.5  # epoch 1: all misses; epoch 2: all hits
    assert column(live_run, "train/dist_loss")[0] > 0


def test_disk_cache_from_precompute_gives_identical_training(tmp_path, settings, live_run):
    cache = tmp_path / "cache"
    disk = ["teacher.cache=disk", f"teacher.cache_dir={cache}"]
    assert precompute(settings, *disk, "--batch_size", "1") == 0
    meta = json.loads((cache / "meta.json").read_text())
    assert (meta["examples"], meta["top_k"], meta["values_dtype"]) == (6, 8, "float32")
    assert meta["key"]["fewshot.k"] == 2 and not (tmp_path / "cache.tmp").exists()
    run = train(tmp_path / "disk", settings, *disk)
    same_training(run, live_run)
    assert column(run, "train/teacher_cache_hit_rate")[-1] == 1.0
    # Refused without --overwrite; nothing is touched.
    before = (cache / "ids.npy").stat().st_mtime_ns
    assert precompute(settings, *disk) == 2
    assert (cache / "ids.npy").stat().st_mtime_ns == before


def test_overwrite_replaces_the_caches_own_files_only_and_never_through_a_link(tmp_path, settings, capsys):
    """--overwrite: the cache's files are replaced, a user's file in its folder stays there (not moved
    aside with the old cache); a cache_dir that is a link is refused before any work, nothing touched."""
    cache = tmp_path / "cache"
    disk = ["teacher.cache=disk", f"teacher.cache_dir={cache}"]
    assert precompute(settings, *disk) == 0
    old_index = (cache / "index.npy").stat().st_mtime_ns
    (cache / "notes.txt").write_text("a user's notes")
    assert precompute(settings, *disk, "--overwrite") == 0
    assert (cache / "notes.txt").read_text() == "a user's notes"
    assert (cache / "index.npy").stat().st_mtime_ns != old_index and json.loads(
        (cache / "meta.json").read_text()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no .tmp or .old folder left beside it
    (tmp_path / "link").symlink_to(cache)
    capsys.readouterr()
    assert (
        precompute(settings, "teacher.cache=disk", f"teacher.cache_dir={tmp_path / 'link'}", "--overwrite")
        == 2
    )
    assert f"{tmp_path / 'link'} is a symbolic link" in capsys.readouterr().err
    assert (cache / "meta.json").is_file() and (tmp_path / "link").is_symlink()


def test_stale_disk_cache_is_refused_naming_what_differs(tmp_path, settings, capsys):
    cache = tmp_path / "cache"
    disk = ["teacher.cache=disk", f"teacher.cache_dir={cache}"]
    assert precompute(settings, *disk) == 0
    capsys.readouterr()
    out = tmp_path / "stale"
    assert run_cli(train_online, cli_argv("online_v1.yaml", out, *settings, *disk, "fewshot.k=1")) == 2
    err = capsys.readouterr().err
    assert "fewshot.k: cache has 2, config has 1" in err and "precompute_teacher.py" in err
    assert not (out / "checkpoint-6").exists()


def test_an_entry_from_another_teacher_input_is_refused(tmp_path):
    """A cache entry whose fingerprint differs from the batch's teacher ids (another tokenizer or
    template under the same settings) stops training instead of being used."""
    import torch
    from test_teacher_fast_paths import first_batches, tiny

    from fsdistill.distill.alignment import answer_positions
    from fsdistill.distill.teacher_cache import CachedEntry, CachedTeacher, MemoryStore, TeacherCacheError

    cfg = tiny("teacher.cache=memory")
    (batch,) = first_batches(cfg, 1)
    store = MemoryStore()
    row, n = int(batch.rows[0]), int(batch.answer_len[0])
    store.put(row, CachedEntry(torch.zeros(n, 16, dtype=torch.int32), torch.zeros(n, 16), None, 12345))
    teacher = CachedTeacher(live=None, store=store)
    with pytest.raises(TeacherCacheError, match=f"training row {row}"):
        teacher.targets(batch, answer_positions(batch))


def test_padded_batches_differ_from_live_by_rounding_only(tmp_path, settings):
    """Two examples per micro-batch: a revisited example is padded to another width than at its first
    visit, which changes float32 rounding, nothing more."""
    padded = ["training.per_device_batch_size=2", "training.grad_accum_steps=1"]
    live = train(tmp_path / "live2", settings, *padded)
    cached = train(tmp_path / "memory2", settings, *padded, "teacher.cache=memory")
    for key in ("train/ce_loss", "train/dist_loss"):
        assert column(cached, key) == pytest.approx(column(live, key), rel=1e-5), key


def test_full_vocabulary_loss_uses_the_top_k_tail_bucket_approximation(tmp_path, settings):
    """forward_kl over the full vocabulary with a cache of K=8 trains exactly as the tail-bucket top-8
    loss without a cache: what the cache approximates is spelled out by this equality."""
    kl = ["distill.loss=forward_kl", "distill.top_k=null"]
    cached = train(tmp_path / "full_cached", settings, *kl, "teacher.cache=memory", "teacher.cache_top_k=8")
    tail = train(
        tmp_path / "tail_live", settings, "distill.loss=forward_kl", "distill.topk_support=tail_bucket"
    )
    same_training(cached, tail)
    assert len(metrics(cached)) == 6


def test_per_batch_shots_cannot_be_cached(tmp_path, settings, capsys):
    argv = cli_argv(
        "online_v1.yaml", tmp_path / "r", *settings, "fewshot.selection=per_batch", "teacher.cache=memory"
    )
    assert run_cli(train_online, argv) == 2
    assert "per_batch draws new exemplars every step" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
