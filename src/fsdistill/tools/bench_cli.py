"""scripts/bench_step.py: the step benchmark (fsdistill.tools.bench), or with --on_policy the on-policy
step's (fsdistill.tools.bench_on_policy, which builds on the first: hence this dispatcher of its own)."""

from __future__ import annotations

import sys


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--on_policy" in argv:
        from fsdistill.tools.bench_on_policy import main as on_policy_main

        return on_policy_main([a for a in argv if a != "--on_policy"])
    from fsdistill.tools.bench import main as step_main

    return step_main(argv)
