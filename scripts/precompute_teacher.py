"""Precompute the teacher's top-K targets into a teacher.cache_dir (fsdistill.distill.precompute).

    python scripts/precompute_teacher.py --config configs/online_v1.yaml \
        teacher.cache=disk teacher.cache_dir=cache/qwen3_1.7b_8shot_top256
"""

from fsdistill.distill.precompute import main

if __name__ == "__main__":
    main()
