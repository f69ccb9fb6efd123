"""Merge result files evaluated with the same settings (e.g. a sweep split over machines) into one."""

from __future__ import annotations

import argparse

from fsdistill.errors import exit_on_user_error
from fsdistill.evaluation.results import load_results, merge_results, save_results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--inputs", required=True, nargs="+", help="result files; the first one's settings are kept"
    )
    p.add_argument("--output", required=True, help="merged result file (written atomically)")
    return p


@exit_on_user_error
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    merged = merge_results([(path, load_results(path)) for path in args.inputs])
    save_results(args.output, merged)
    print(f"merged {len(merged['results'])} entries from {len(args.inputs)} files into {args.output}")
    return merged


if __name__ == "__main__":
    main()
