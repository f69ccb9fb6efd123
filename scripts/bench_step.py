"""Time one distillation micro-batch (forward + backward) five ways, against SFT and the original's step
(fsdistill.tools.bench; see its --help), or with --on_policy the on-policy step (fsdistill.tools.bench_on_policy).

    python scripts/bench_step.py --preset cpu              # -> experiments/bench/step_cpu.json
    python scripts/bench_step.py --on_policy --preset cpu  # -> experiments/bench/on_policy_cpu.json
"""

from fsdistill.tools.bench_cli import main

if __name__ == "__main__":
    main()
