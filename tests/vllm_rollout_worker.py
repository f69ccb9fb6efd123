"""One process of test_vllm.py's 2-process rollout test, under `accelerate launch` (2 CPU processes): a
real on-policy run (train_online_v1, rollout.backend=vllm), each process beside its own engine (vLLM's
external_launcher executor), with vllm_helpers.EngineProbe around every sync; writes what it saw to
OUT/probe_rank{RANK}.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from transformers import AutoTokenizer
from vllm_helpers import PROBE_TEXT, EngineProbe

from fsdistill.train.entry import train_online_v1


def main(out: str, model_dir: str, *argv: str) -> None:
    probe = EngineProbe(AutoTokenizer.from_pretrained(model_dir)(PROBE_TEXT)["input_ids"])
    probe.install(setattr)
    train_online_v1(list(argv))
    record = {"records": probe.records, "samples": probe.samples, "threads": probe.threads}
    (Path(out) / f"probe_rank{os.environ['RANK']}.json").write_text(json.dumps(record))


if __name__ == "__main__":  # vLLM may spawn processes: the guard keeps them from running this again
    main(*sys.argv[1:])
