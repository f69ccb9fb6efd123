"""Time compare_evals.py on two entries of a million paired examples (fsdistill.tools.bench_compare)."""

from fsdistill.tools.bench_compare import main

if __name__ == "__main__":
    main()
