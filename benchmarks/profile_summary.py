"""Summarize a py-spy raw profile (collapsed stacks) by function: self and inclusive share of samples.

    python -m benchmarks.profile_summary PROFILE_DIR/2000-w2-aula-chat0-server-0.txt [--top 30]
    python -m benchmarks.profile_summary FILE --match consumers.py --match selectors.py

The harness writes these files when it is given `--py-spy PATH` (sampling costs CPU, so profiled runs are
for finding where time goes, not for the figures in docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import collections


def summarize(path: str) -> tuple[int, collections.Counter, collections.Counter]:
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            self_time[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    return total, self_time, inclusive


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_summary")
    parser.add_argument("path")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", action="append", default=[], help="only functions whose name contains this")
    args = parser.parse_args(argv)
    total, self_time, inclusive = summarize(args.path)
    print(f"{total} samples in {args.path}")
    for title, counter in (("self", self_time), ("inclusive", inclusive)):
        print(f"--- {title}")
        shown = 0
        for frame, n in counter.most_common():
            if args.match and not any(m in frame for m in args.match):
                continue
            print(f"{100 * n / max(total, 1):5.1f}%  {frame[:160]}")
            shown += 1
            if shown >= args.top:
                break


if __name__ == "__main__":
    main()
