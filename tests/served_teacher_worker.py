"""One process of test_served_teacher.py's 2-process stop test, under `accelerate launch` (2 CPU processes):
a gold-answer run through the served teacher (train_online_v1). At step 3, rank 1 fetches its targets first;
then rank 0 kills the server (SIGKILL to its process group, SERVER_PGID) and asks it for its own: only rank
0's request fails, so only the agreement across ranks can stop rank 1. Each process writes its exit status,
how many steps' targets it was asked for and what its own last request gave to OUT/status_rank{RANK}.json."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from fsdistill.distill.served_teacher import ServedTeacher
from fsdistill.train.entry import train_online_v1

KILL_AT = 3  # the step whose targets rank 0 asks a dead server for


def main(out: str, *argv: str) -> None:
    prepare, calls, failures = ServedTeacher.prepare_step, [], []
    rank = os.environ["RANK"]
    answered = Path(out) / "rank1_answered"  # rank 1 has step KILL_AT's targets

    def killing(teacher, micro_batches):
        calls.append(1)
        if len(calls) == KILL_AT and rank == "0":
            deadline = time.monotonic() + 120
            while not answered.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            os.killpg(int(os.environ["SERVER_PGID"]), signal.SIGKILL)
        failure = prepare(teacher, micro_batches)
        failures.append(failure is not None)
        if len(calls) == KILL_AT and rank == "1":
            answered.write_text("")
        return failure

    ServedTeacher.prepare_step = killing
    status = 0
    try:
        train_online_v1(list(argv))
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else 1
    record = {"status": status, "steps_asked": len(calls), "own_request_failed": failures}
    (Path(out) / f"status_rank{rank}.json").write_text(json.dumps(record))
    sys.exit(status)


if __name__ == "__main__":
    main(*sys.argv[1:])
