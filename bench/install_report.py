"""The report both install benchmarks print: medians, then bolt-host's ratios to the tool alone."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def report(title: str, figures: dict[str, list[float]], tool: str, json_path: Path | None) -> None:
    """``figures`` holds ``{tool}_cold``, ``bolt_cold``, ``{tool}_warm``, ``bolt_warm`` (seconds)."""
    medians = {name: statistics.median(values) for name, values in figures.items()}
    ratios = {
        f"bolt_cold / {tool}_cold": medians["bolt_cold"] / medians[f"{tool}_cold"],
        f"bolt_warm / {tool}_warm": medians["bolt_warm"] / medians[f"{tool}_warm"],
        "bolt_warm / bolt_cold": medians["bolt_warm"] / medians["bolt_cold"],
    }
    print(f"{title}, medians:")
    for name, value in medians.items():
        print(f"  {name:10} {value:7.3f} s   (all: {', '.join(f'{v:.3f}' for v in figures[name])})")
    for name, value in ratios.items():
        print(f"  {name:22} {value:5.2f}x")
    if json_path:
        json_path.write_text(json.dumps({"seconds": figures, "medians": medians, "ratios": ratios}, indent=2))
