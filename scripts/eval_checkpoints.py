"""Score every checkpoint of one or more runs (fsdistill.eval.checkpoints; installed as
fsdistill-eval-checkpoints). See `python scripts/eval_checkpoints.py --help`."""

from fsdistill.eval.checkpoints import main

if __name__ == "__main__":
    main()
