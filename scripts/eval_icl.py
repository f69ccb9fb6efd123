"""Evaluate the base model 0-shot and k-shot (fsdistill.eval.icl; installed as fsdistill-eval-icl)."""

from fsdistill.eval.icl import main

if __name__ == "__main__":
    main()
