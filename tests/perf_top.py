#!/usr/bin/env python3
"""Top inclusive and self costs of a `perf record --call-graph` profile, by function.

    tests/perf_top.py target/perf-bedrock.data [--top 40] [--match REGEX]

Reads `perf script --no-inline` (inlined frames are folded into their caller: resolving them
takes minutes). A function's inclusive share counts every sample with it anywhere on the stack,
once per sample, so recursion is not counted twice; its self share counts the samples it is the
leaf of. Names are shortened: crate hashes, closures and generic arguments are dropped, so the
monomorphic copies of one function add up. `--match` keeps only the functions whose short name
matches, e.g. `--match 'aws_|smithy'` to see the SDK's part.
"""
import argparse
import collections
import re
import subprocess
import sys


def short(sym: str) -> str:
    """`<a::B<T> as c::D>::poll::{{closure}}` -> `<a::B as c::D>::poll`."""
    sym = re.sub(r"::\{\{closure\}\}", "", sym)
    sym = re.sub(r"::h[0-9a-f]{16}$", "", sym)
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    out, depth = [], 0
    for c in sym:  # drop generic arguments, keeping the outer `<X as Y>` of trait impls
        if c == "<":
            depth += 1
            if depth == 1 and (not out or out[-1] in ":<"):
                out.append(c)
                continue
            continue
        if c == ">":
            if depth == 1 and "<" in out and out.count("<") > out.count(">"):
                out.append(c)
            depth -= 1
            continue
        if depth <= 1:
            out.append(c)
    return "".join(out)


def samples(path: str):
    script = subprocess.run(
        ["perf", "script", "-i", path, "--no-inline", "-F", "ip,sym"],
        capture_output=True, text=True, check=True,
    ).stdout
    for block in script.split("\n\n"):
        frames = []
        for line in block.strip().splitlines():
            parts = line.strip().split(None, 1)
            frames.append(short(parts[1]) if len(parts) == 2 else "[unknown]")
        if frames:
            yield frames


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data")
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--match", default="")
    args = ap.parse_args()
    inclusive, leaf, total = collections.Counter(), collections.Counter(), 0
    for frames in samples(args.data):
        total += 1
        leaf[frames[0]] += 1
        for f in set(frames):
            inclusive[f] += 1
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    keep = re.compile(args.match)
    print(f"{total} samples; inclusive %, self %, function")
    shown = 0
    for name, n in inclusive.most_common():
        if not keep.search(name):
            continue
        print(f"{100 * n / total:6.1f} {100 * leaf[name] / total:6.1f}  {name}")
        shown += 1
        if shown == args.top:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
