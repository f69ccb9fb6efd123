"""Training-loss curves of several runs, read from each run folder's metrics.jsonl."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fsdistill.errors import exit_on_user_error
from fsdistill.evaluation.figures import MetricsError, loss_curves, read_metrics_jsonl


def parse_run(spec: str) -> tuple[Path, str | None]:
    """'DIR' or 'DIR:LABEL' (a folder whose own name holds ':' is taken whole)."""
    if Path(spec).is_dir():
        return Path(spec), None
    folder, sep, label = spec.rpartition(":")
    if sep and folder and label:
        return Path(folder), label
    return Path(spec), None


def run_label(run_dir: Path) -> str:
    """The run's name from run.json, else its folder name."""
    run_json = run_dir / "run.json"
    if not run_json.exists():
        return run_dir.name
    try:
        name = json.loads(run_json.read_text(encoding="utf-8")).get("name")
    except (json.JSONDecodeError, AttributeError) as e:
        raise MetricsError(f"{run_json}: not a JSON object: {e}") from e
    if not isinstance(name, str):
        raise MetricsError(f"{run_json}: missing field 'name'")
    return name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--run",
        required=True,
        nargs="+",
        action="extend",
        metavar="DIR[:LABEL]",
        help="run folder holding metrics.jsonl; LABEL defaults to run.json's name",
    )
    p.add_argument("--key", default="train/ce_loss", help="metrics field to plot (default train/ce_loss)")
    p.add_argument("--out", default="assets/loss_comparison.png")
    p.add_argument("--title", default=None, help="default: the key")
    return p


@exit_on_user_error
def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    runs: dict[str, list[dict]] = {}
    for spec in args.run:
        run_dir, label = parse_run(spec)
        if not run_dir.is_dir():
            raise MetricsError(f"{run_dir}: run folder not found")
        label = label or run_label(run_dir)
        if label in runs:
            raise MetricsError(f"two runs labelled {label!r}: give them distinct labels with DIR:LABEL")
        runs[label] = read_metrics_jsonl(run_dir / "metrics.jsonl")
    drawn = loss_curves(runs, args.out, key=args.key, title=args.title)
    print(f"wrote {args.out}")
    return drawn


if __name__ == "__main__":
    main()
