"""Choose a system prompt to distil, on validation, paired against none (fsdistill.eval.system_prompts)."""

from fsdistill.eval.system_prompts import main

if __name__ == "__main__":
    main()
