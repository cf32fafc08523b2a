"""Summarise a py-spy ``--format raw`` profile (collapsed stacks): the hottest functions.

``bench/pyspy_top.py FILE [--top K] [--under SUBSTRING]`` prints, for the K
hottest functions, the share of samples in which each is on the stack
(inclusive) and at the top of the stack (self). ``--under`` keeps only
samples whose stack contains SUBSTRING (e.g. ``_on_heartbeat``).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

LINE_NO = re.compile(r":\d+\)$")


def function_of(frame: str) -> str:
    """``name (file:line)`` -> ``name (file)``: one entry per function, not per line."""
    return LINE_NO.sub(")", frame.strip())


def read_stacks(path: Path, under: str | None) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        if under is not None and under not in stack:
            continue
        frames = [function_of(f) for f in stack.split(";") if f]
        stacks.append((frames, int(count)))
    return stacks


def summarise(
    stacks: list[tuple[list[str], int]],
) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    total = 0
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            self_time[frames[-1]] += count
    return total, inclusive, self_time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under", help="only samples whose stack contains this text")
    args = parser.parse_args(argv)
    total, inclusive, self_time = summarise(read_stacks(args.file, args.under))
    if total == 0:
        print("no samples")
        return 1
    print(f"{total} samples")
    print("inclusive%  function")
    for name, count in inclusive.most_common(args.top):
        print(f"{100 * count / total:9.1f}%  {name}")
    print("self%      function")
    for name, count in self_time.most_common(args.top):
        print(f"{100 * count / total:9.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
