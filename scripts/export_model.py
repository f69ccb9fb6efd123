"""Merge a LoRA checkpoint into a plain transformers model folder that loads without peft (fsdistill.tools.export)."""

from fsdistill.tools.export import main

if __name__ == "__main__":
    main()
