"""Put what the GPU machine lacks into .gpu_carry/ (wheels, tokenizer, config, a GSM8K slice) and print the
device command of the GPU check (fsdistill.tools.gpu_check; compute.md, "GPU check")."""

from fsdistill.tools.gpu_check import prepare_main

if __name__ == "__main__":
    prepare_main()
