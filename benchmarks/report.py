"""One markdown table from several harness runs (the tables in docs/benchmarks.md).

    python -m benchmarks.report benchmarks/measurements/classroom-200-w1-73635ba.json \
        benchmarks/measurements/classroom-200-w2-73635ba.json

Each run contributes one column per target (Aula and the bare server measured in that same run).
"""

from __future__ import annotations

import argparse
import json

from benchmarks.classroom import ROWS, cell


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("runs", nargs="+", help="JSON summaries written by benchmarks.classroom")
    args = parser.parse_args(argv)
    columns, ratios = [], []
    for path in args.runs:
        with open(path) as fh:
            summary = json.load(fh)
        a = summary["args"]
        extra = ", " + ", ".join(a["server_env"]) if a.get("server_env") else ""
        for result in summary["results"]:
            columns.append((f"{result['target']} ({a['students']}, w{a['workers']}{extra})", result))
        if "aula_vs_bare" in summary:
            v = summary["aula_vs_bare"]
            ratios.append(f"- {a['students']} students, `--workers {a['workers']}`: Aula / bare deliveries per "
                          f"server CPU-second = **{v['ratio']}** ({v['aula_deliveries_per_core_s']} vs "
                          f"{v['bare_deliveries_per_core_s']})")
    print("| measure | " + " | ".join(name for name, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label, fn in ROWS:
        print(f"| {label} | " + " | ".join(cell(fn, r) for _, r in columns) + " |")
    if ratios:
        print()
        print("\n".join(ratios))


if __name__ == "__main__":
    main()
