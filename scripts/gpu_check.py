"""The GPU check (fsdistill.tools.gpu_check; see its --help): on a GPU, or on CPU with --smoke.

python scripts/gpu_check.py --smoke --output /tmp/gpu_check
"""

from fsdistill.tools.gpu_check import main

if __name__ == "__main__":
    main()
