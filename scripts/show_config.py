"""Print the fully resolved config of a config file plus overrides (fsdistill.tools.inspect).

python scripts/show_config.py --config configs/online_v1.yaml training.lr=1e-4
"""

from fsdistill.tools.inspect import show_config

if __name__ == "__main__":
    show_config()
