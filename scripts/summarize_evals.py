"""An experiment's summary JSON: references, runs per seed at the chosen checkpoint, paired tests (fsdistill.eval.summary)."""

from fsdistill.eval.summary import main

if __name__ == "__main__":
    main()
