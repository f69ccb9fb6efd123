"""Print the fully resolved config (all keys, defaults filled in) of a config file plus overrides.

python scripts/show_config.py --config configs/online_v1.yaml training.lr=1e-4
"""

from __future__ import annotations

import argparse

from fsdistill.cli import add_config_args, config_from_args
from fsdistill.config import to_yaml
from fsdistill.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(parser)
    parser.add_argument("--sources", action="store_true", help="Also list where each set key came from.")
    args = parser.parse_intermixed_args(argv)  # overrides may sit before and after options
    cfg, source = config_from_args(args)
    print(to_yaml(cfg), end="")
    if args.sources:
        print("# set explicitly:")
        for key, where in sorted(source.items()):
            print(f"#   {key}: {where}")


if __name__ == "__main__":
    main()
