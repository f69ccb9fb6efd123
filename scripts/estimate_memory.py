"""Per-GPU memory of a training step for each model, mode and GPU count, estimated from shapes
(fsdistill.tools.memory; see its --help).

    python scripts/estimate_memory.py --lengths-from-data    # -> experiments/memory/estimates.{json,md}
"""

from fsdistill.tools.memory import main

if __name__ == "__main__":
    main()
