"""Consolidate a sharded (FSDP) checkpoint into a plain model folder (fsdistill.tools.consolidate)."""

from fsdistill.tools.consolidate import main

if __name__ == "__main__":
    main()
