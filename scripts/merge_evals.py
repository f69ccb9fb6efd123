"""Merge result files evaluated with the same settings (fsdistill.eval.compare.merge_main)."""

from fsdistill.eval.compare import merge_main

if __name__ == "__main__":
    merge_main()
