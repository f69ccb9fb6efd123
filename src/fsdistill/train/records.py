"""A run's records, written by the main process: run.json, metrics.jsonl and the configured trackers.

run.json        name, method, config, git commit, data (the files' sha256 and version), global batch,
                checkpoints so far, status; started, ended and duration_s (seconds spent running, summed
                over the run's launches)
metrics.jsonl   one JSON line per logged optimizer step (what figure scripts read)
trackers        accelerate's trackers (output.log_with: TensorBoard under tensorboard/ by default;
                wandb, MLflow, ... when installed), which receive the same values

On resume, records past the checkpoint's step are dropped from metrics.jsonl and TensorBoard (purge_step),
so a step a crash logged before its checkpoint was written appears once.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from fsdistill.config import Config, flat_config, run_name, to_dict, to_yaml
from fsdistill.errors import UserError
from fsdistill.files import git_state, sha256_file, write_json_atomic, write_text_atomic
from fsdistill.tasks.rows import data_provenance, data_roles
from fsdistill.train.run_dir import list_checkpoints

TRACKER_MODULES = {"tensorboard": "tensorboard", "comet_ml": "comet_ml", "trackio": "trackio"}


def make_trackers(cfg: Config, run_dir: Path, start_step: int) -> list:
    """The `log_with` of the run's Accelerator: TensorBoard as a tracker writing to run_dir/tensorboard
    (purging records past `start_step` on resume), the others by name. A tracker whose package is not
    installed is refused (accelerate would drop it with a warning only)."""
    missing = [t for t in cfg.output.log_with if importlib.util.find_spec(TRACKER_MODULES.get(t, t)) is None]
    if missing:
        raise UserError(f"output.log_with names {missing}, not installed here; install it or remove it")
    trackers: list = []
    for name in cfg.output.log_with:
        if name == "tensorboard":
            from accelerate.tracking import TensorBoardTracker

            trackers.append(TensorBoardTracker("tensorboard", str(run_dir), purge_step=start_step + 1))
        else:
            trackers.append(name)
    return trackers


def resume_sources(run_dir: Path, checkpoint: Path, step: int) -> list[dict]:
    """run.json's "resumed_from" once this launch continues from `checkpoint`: the run's earlier resumes (read
    from its run.json before it is rewritten) and this one, with the checkpoint's absolute path, its step
    and the sha256 of its checkpoint.json (which holds the sha256 of every file of it). A run resumed from
    another run's checkpoint (--resume OTHER/checkpoint-N into a new folder) so says where it came from."""
    try:
        earlier = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("resumed_from", [])
    except (OSError, ValueError, AttributeError):
        earlier = []
    source = {
        "checkpoint": str(checkpoint.resolve()),
        "step": step,
        "checkpoint_json_sha256": sha256_file(checkpoint / "checkpoint.json"),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return [*(earlier if isinstance(earlier, list) else []), source]


class RunRecorder:
    """run.json, metrics.jsonl and the Accelerator's trackers (main process only)."""

    def __init__(
        self,
        run_dir: Path,
        cfg: Config,
        method: str,
        identity: dict,
        accelerator,
        global_batch: int,
        start_step: int,
    ):
        self.run_dir, self.is_main, self.accelerator = run_dir, accelerator.is_main_process, accelerator
        self.launch_start = time.monotonic()
        self.earlier_seconds = 0.0  # what earlier launches of a resumed run spent
        self.manifest = {
            "name": run_name(cfg),
            "method": method,
            "identity": identity,
            "output_dir": str(run_dir),
            "git_commit": git_state()["commit"],
            "num_processes": accelerator.num_processes,
            "global_batch_size": global_batch,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "status": "running",
            "dropped_examples": [],
            "checkpoints": [],
            "config": to_dict(cfg),
        }
        # Every process joins (trackers are started on the main process only).
        accelerator.init_trackers("few-shot-distillation", init_kwargs={"wandb": {"name": run_name(cfg)}})
        if not self.is_main:
            return
        # The sha256 of every split file training reads (validation and exemplar pool included) and the
        # data's version record, as evaluation result files have them.
        self.manifest["data"] = data_provenance(cfg.data.source, data_roles(cfg))
        run_dir.mkdir(parents=True, exist_ok=True)
        old = run_dir / "run.json"
        if start_step > 0 and old.is_file():
            previous = json.loads(old.read_text())
            self.manifest["dropped_examples"] = previous.get("dropped_examples", [])
            self.manifest["resumed_from_step"] = start_step
            self.manifest["started"] = previous.get("started", self.manifest["started"])
            self.earlier_seconds = previous.get("duration_s") or 0.0
        self.manifest["checkpoints"] = [{"step": s, "path": p.name} for s, p in list_checkpoints(run_dir)]
        write_text_atomic(run_dir / "config.yaml", to_yaml(cfg))
        for name in ("metrics.jsonl", "samples.jsonl"):
            self._truncate_records(run_dir / name, start_step)
        self.save()
        # The config, for trackers with a place for it (TensorBoard's hparams would add a second events
        # file; run.json holds the config anyway).
        flat = {
            k: v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v)
            for k, v in flat_config(cfg).items()
        }
        for tracker in accelerator.trackers:
            if tracker.name != "tensorboard":
                tracker.store_init_configuration(flat)

    def _truncate_records(self, path: Path, start_step: int) -> None:
        """On resume, drop the JSON lines (metrics, samples) of steps past the checkpoint (a crash may have
        logged steps that are redone). A torn last line (the process died mid-write) is dropped with a
        warning; a bad line elsewhere is a damaged file, refused naming the line."""
        if not path.is_file():
            return
        lines = path.read_bytes().decode("utf-8", "replace").splitlines()
        keep = []
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                if lineno == len(lines):
                    tqdm.write(
                        f"warning: {path}:{lineno}: a torn last record (a crash mid-write) was dropped",
                        file=sys.stderr,
                    )
                    continue
                raise UserError(
                    f"{path}:{lineno}: not a record of a step; mend or remove the line, then --resume"
                ) from None
            if step <= start_step:
                keep.append(line)
        write_text_atomic(path, "".join(f"{line}\n" for line in keep))

    def save(self) -> None:
        if self.is_main:
            write_json_atomic(self.run_dir / "run.json", self.manifest)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.accelerator.log(values, step=step)
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")

    def log_samples(self, step: int, samples: list[dict]) -> None:
        """Sampled answers of a logged step: samples.jsonl, and trackers that show text (TensorBoard)."""
        if not samples:
            return
        if self.is_main:
            with open(self.run_dir / "samples.jsonl", "a") as f:
                for sample in samples:
                    f.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")
        text = "\n\n".join(f"row {s['row']}: {s['completion']!r}" for s in samples)
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log({"rollout/samples": text}, step=step)

    def checkpoints_changed(self) -> None:
        self.manifest["checkpoints"] = [
            {"step": s, "path": p.name} for s, p in list_checkpoints(self.run_dir)
        ]
        self.save()

    def launch_seconds(self) -> float:
        return time.monotonic() - self.launch_start

    def close(self, status: str) -> None:
        self.manifest["status"] = status
        self.manifest["ended"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.manifest["duration_s"] = round(self.earlier_seconds + self.launch_seconds(), 1)
        try:
            self.save()
        except OSError as e:  # e.g. the disk is still full: the error that ended the run says more
            tqdm.write(
                f"warning: could not record status {status!r} in {self.run_dir / 'run.json'}: {e}",
                file=sys.stderr,
            )
        for tracker in self.accelerator.trackers:  # not end_training(): it also destroys the process group
            tracker.finish()


def end_of_run_line(recorder: RunRecorder, step: int, max_steps: int) -> str:
    """What a run prints when it ends: status, steps, this launch's duration, the last checkpoint and the
    command that evaluates it (from the checkpoint's own config: fsdistill.eval.checkpoints --path)."""
    status = recorder.manifest["status"]
    line = f"run {status}: step {step} of {max_steps} in {format_duration(recorder.launch_seconds())}"
    checkpoints = list_checkpoints(recorder.run_dir)
    if not checkpoints:
        return f"{line}; no checkpoint written"
    last = checkpoints[-1][1]
    output = recorder.run_dir.parent / f"{recorder.run_dir.name}_eval.json"
    command = shlex.join(["fsdistill-eval-checkpoints", "--path", str(last), "--output", str(output)])
    return f"{line}; last checkpoint {last}; evaluate it with: {command}"


def format_duration(seconds: float) -> str:
    """'42 s', '12 min 3 s', '2 h 5 min'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"
