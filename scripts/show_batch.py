"""Show exactly what the student and the teacher see for one training example (fsdistill.tools.inspect).

    python scripts/show_batch.py --config configs/online_v1.yaml --index 0 \
        model.tokenizer=../shared/tokenizers/qwen3 data.source=../shared/data/gsm8k
"""

from fsdistill.tools.inspect import show_batch

if __name__ == "__main__":
    show_batch()
