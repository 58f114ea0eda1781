#!/usr/bin/env python3
"""Judges one lab/run-session.sh run from its bark-lab-analyze JSON (the
check test-opus.sh and test-channels.sh share).

  session-check.py ANALYSIS.JSON NAME MAX_SKEW_US MIN_FIDELITY

Every receiver: median latency within 0.5 ms of 40 ms, mean fidelity
(windowed correlation) >= MIN_FIDELITY, no dropout or jump outside the
machine's own stalls (bark-lab-stalls: those are reported, not failed).
Every pair: skew p99 <= MAX_SKEW_US over at least 20 windows, with at most
a tenth of the windows left out as unmeasurable (bark-lab-analyze
--ref-channels); MAX_SKEW_US "-" reports the pairs without judging them.
Prints the figures and one "NAME: FAIL ..." line per failure; exits 1 if
any.
"""
import json
import sys


def fmt(x, spec):
    """x with the format spec, or "None" (a figure the analysis lacks)."""
    return "None" if x is None else format(x, spec)


def main(path, name, max_skew, min_fid):
    d = json.load(open(path))
    min_fid = float(min_fid)
    bad = []
    for r in d["receivers"]:
        lab = r["label"]
        lat = (r["latency_ms"] or {}).get("p50")
        fid = r["fidelity"] or {}
        stalled = r.get("dropouts_in_stalls", 0) + r.get("jumps_in_stalls", 0)
        drops = r["dropouts"] + r["jumps"] - stalled
        print(f"  {lab}: latency {fmt(lat, '.4f')} ms, fidelity mean {fmt(fid.get('mean'), '.4f')} "
              f"min {fmt(fid.get('min'), '.4f')}, "
              f"{r['windows']} windows, dropouts+jumps {drops} (and {stalled} in machine stalls)")
        if lat is None or abs(lat - 40.0) > 0.5:
            bad.append(f"{lab} latency {lat} not 40 +- 0.5 ms")
        if fid.get("mean") is None or fid["mean"] < min_fid:
            bad.append(f"{lab} fidelity {fid.get('mean')} < {min_fid}")
        if drops:
            bad.append(f"{lab}: {drops} dropouts/jumps")
    for p in d["pairs"]:
        k = (p["abs_skew_us"] or {}).get("p99")
        out = p.get("unreliable_windows", 0)
        print(f"  skew {p['b']} - {p['a']}: p99 {fmt(k, '.1f')} us over {p['windows']} windows, "
              f"{out} left out as unmeasurable (limit {max_skew})")
        if max_skew == "-":
            continue
        if k is None or k > float(max_skew) or p["windows"] < 20:
            bad.append(f"skew {p['b']}-{p['a']} p99 {k} us")
        # Left out windows must stay the exception.
        if out > 0.1 * p["windows"]:
            bad.append(f"skew {p['b']}-{p['a']}: {out} of {p['windows']} windows unmeasurable")
    for b in bad:
        print(f"{name}: FAIL {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
