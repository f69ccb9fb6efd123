"""scripts/bench_step.py: the step benchmark (fsdistill.tools.bench), or with --on_policy the on-policy
step's (fsdistill.tools.bench_on_policy), or with --shared_context teacher scoring over a long shared
context (fsdistill.tools.bench_shared_context); the last two build on the first: hence this dispatcher."""

from __future__ import annotations

import sys


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--on_policy" in argv:
        from fsdistill.tools.bench_on_policy import main as on_policy_main

        return on_policy_main([a for a in argv if a != "--on_policy"])
    if "--shared_context" in argv:
        from fsdistill.tools.bench_shared_context import main as shared_context_main

        return shared_context_main([a for a in argv if a != "--shared_context"])
    from fsdistill.tools.bench import main as step_main

    return step_main(argv)
