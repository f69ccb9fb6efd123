"""A training step's seconds without and beside a colocated vLLM engine (fsdistill.tools.vllm_colocation)."""

from fsdistill.tools.vllm_colocation import main

if __name__ == "__main__":
    main()
