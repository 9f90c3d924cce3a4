#!/usr/bin/env python3
"""Compares the per-step train losses of pgolf runs (metrics.jsonl files): the first file is the reference.
Prints one line per other file: steps compared, largest |difference| and relative difference, and the mean step time."""
import json
import sys


def losses(path):
    out, ms = {}, []
    with open(path) as f:
        for line in f:
            e = json.loads(line)
            if e.get("type") == "train":
                out[e["step"]] = e["train_loss"]
                ms.append(e.get("step_ms", 0.0))
    return out, ms


def main(paths):
    ref, ref_ms = losses(paths[0])
    print(f"reference {paths[0]}: {len(ref)} steps, last loss {ref[max(ref)]:.6f}" if ref else f"reference {paths[0]}: no steps")
    for p in paths[1:]:
        got, ms = losses(p)
        common = sorted(set(ref) & set(got))
        if not common:
            print(f"{p}: no common steps")
            continue
        diff = max(abs(got[s] - ref[s]) for s in common)
        rel = max(abs(got[s] - ref[s]) / abs(ref[s]) for s in common)
        tail = ms[len(ms) // 2:] or [0.0]
        print(f"{p}: {len(common)} steps, max |dloss| {diff:.3e} (rel {rel:.3e}), last loss {got[common[-1]]:.6f}, "
              f"median step {sorted(tail)[len(tail) // 2]:.1f} ms")


if __name__ == "__main__":
    main(sys.argv[1:])
