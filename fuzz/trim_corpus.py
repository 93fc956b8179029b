#!/usr/bin/env python3
"""Minimises the committed fuzz corpora and caps their size.

For each target (all by default): `cargo fuzz cmin` keeps a smallest set of inputs that covers
every edge the corpus reaches (set-cover merge, edge coverage only). Where that still leaves more
than --max files (the JSON and reliable-channel targets reach thousands of edges deep inside
serde_json and the std collections), the inputs are then chosen greedily by how many edges not
yet covered each adds, and the rest removed: the kept corpus covers most of what the full one
does at a fraction of the files.

Run from anywhere, after fuzzing: fuzz/trim_corpus.py [--max N] [target ...]
"""

import argparse
import os
import subprocess
import tempfile

FUZZ = os.path.dirname(os.path.abspath(__file__))
TRIPLE = "x86_64-unknown-linux-gnu"


def cargo_fuzz(*args, **kw):
    env = dict(os.environ, RUSTC_BOOTSTRAP="1")
    return subprocess.run(["cargo", "fuzz", *args], cwd=FUZZ, env=env, check=True, **kw)


def edges_per_input(target, corpus):
    """{path: set of covered PCs}, read from libFuzzer's merge control file."""
    binary = os.path.join(FUZZ, "target", TRIPLE, "release", target)
    with tempfile.TemporaryDirectory() as tmp:
        control = os.path.join(tmp, "control")
        out = os.path.join(tmp, "out")
        os.mkdir(out)
        subprocess.run(
            [binary, "-merge=1", "-use_counters=0", f"-merge_control_file={control}", out, corpus],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lines = open(control).read().split("\n")
    n = int(lines[0])
    files = lines[2 : 2 + n]
    edges = {}
    for line in lines[2 + n :]:
        parts = line.split()
        if parts and parts[0] == "COV":
            edges[files[int(parts[1])]] = set(parts[2:])
    return edges


def cap(target, corpus, most):
    edges = edges_per_input(target, corpus)
    covered, keep = set(), []
    while len(keep) < most and edges:
        # The input adding most new edges; the smaller one on a tie.
        best = max(edges, key=lambda p: (len(edges[p] - covered), -os.path.getsize(p)))
        if not edges[best] - covered:
            break
        covered |= edges.pop(best)
        keep.append(best)
    total = len(covered | set().union(*edges.values())) if edges else len(covered)
    for path in edges:
        os.remove(path)
    print(f"{target}: kept {len(keep)} inputs covering {len(covered)} of {total} edges")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max", type=int, default=100, help="most inputs kept per target")
    parser.add_argument("targets", nargs="*")
    args = parser.parse_args()
    targets = args.targets or cargo_fuzz("list", capture_output=True, text=True).stdout.split()
    cargo_fuzz("build")
    for target in targets:
        corpus = os.path.join(FUZZ, "corpus", target)
        cargo_fuzz("cmin", target, "--", "-set_cover_merge=1", "-use_counters=0",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if len(os.listdir(corpus)) > args.max:
            cap(target, corpus, args.max)
        print(f"{target}: {len(os.listdir(corpus))} inputs")


if __name__ == "__main__":
    main()
