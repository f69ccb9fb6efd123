"""The hf and vllm backends on the same prompts: verdicts, texts and speed (fsdistill.tools.vllm_agreement)."""

from fsdistill.tools.vllm_agreement import main

if __name__ == "__main__":  # the vLLM engine core is a spawned process: it must not run this again
    main()
