"""Choose each run's checkpoint on the validation split, never on test (fsdistill.eval.select)."""

from fsdistill.eval.select import main

if __name__ == "__main__":
    main()
