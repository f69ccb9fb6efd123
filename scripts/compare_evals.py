"""Paired comparison of two conditions scored on the same problems (fsdistill.eval.compare)."""

from fsdistill.eval.compare import main

if __name__ == "__main__":
    main()
