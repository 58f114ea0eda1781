#!/usr/bin/env python3
"""Figures of the fault-injection scenarios (lab/test-robust.sh), from a
bark-lab-analyze --series CSV and the receivers' recordings (WAV F32 +
.ts.csv, CLOCK_MONOTONIC stamps shared by every lab namespace).

  robust-check.py recovery --series S --label rx1 --ts rx1.ts.csv
        --event NS [--base-from NS --base-to NS | --base-ms MS]
        [--tol-us 100] [--hold 5]
    Time from EVENT (a CLOCK_MONOTONIC ns: the network returning, a sender
    starting, a receiver joining) to the centre of the first analysis window
    after it from which HOLD windows in a row have a latency within TOL µs
    of the baseline (the receiver's median latency over [BASE_FROM,
    BASE_TO], or BASE_MS). Prints one JSON line; "recovery_ms" is null if
    that never happens.

  robust-check.py level --wav rx1.wav --ts rx1.ts.csv --from NS --to NS
    RMS and peak of what the receiver played in [FROM, TO] (one JSON line),
    to show a partition fades to digital silence rather than garbage.

Only the standard library: CI has python3 but no numpy.
"""
import argparse
import array
import bisect
import json
import statistics
import struct
import sys


def load_ts(path):
    """Rows (frame, t_first_ns) of a .ts.csv."""
    rows = []
    with open(path) as f:
        for line in f:
            if not line or line[0] in "#f":
                continue
            p = line.split(",")
            rows.append((int(p[0]), int(p[2])))
    if not rows:
        sys.exit(f"{path}: no stamps")
    return rows


def frame_time(rows, frame, rate):
    """CLOCK_MONOTONIC ns at which recording frame FRAME was heard; ROWS
    as from load_ts (frames ascending)."""
    i = max(0, bisect.bisect_right(rows, (frame, float("inf"))) - 1)
    f0, t0 = rows[i]
    return t0 + (frame - f0) * 1e9 / rate


def load_series(path, label):
    out = []
    with open(path) as f:
        next(f)
        for line in f:
            p = line.rstrip("\n").split(",")
            if p[0] != label or p[2] == "":
                continue
            out.append((float(p[1]), float(p[2]), float(p[3])))
    return out


def recovery(a):
    rows = load_ts(a.ts)
    wins = [
        (frame_time(rows, t * a.rate, a.rate), lat, fid)
        for t, lat, fid in load_series(a.series, a.label)
    ]
    if a.base_ms is not None:
        base = a.base_ms
    else:
        sel = [lat for t, lat, _ in wins if a.base_from <= t <= a.base_to]
        if not sel:
            print(json.dumps({"label": a.label, "error": "no baseline windows"}))
            return 1
        base = statistics.median(sel)
    after = [(t, lat) for t, lat, _ in wins if t >= a.event]
    tol_ms = a.tol_us / 1000.0
    rec = None
    for i in range(len(after)):
        run = after[i : i + a.hold]
        if len(run) == a.hold and all(abs(lat - base) <= tol_ms for _, lat in run):
            rec = (after[i][0] - a.event) / 1e6
            break
    err = [abs(lat - base) * 1000 for t, lat in after if rec is not None and t >= a.event + rec * 1e6]
    print(
        json.dumps(
            {
                "label": a.label,
                "baseline_latency_ms": round(base, 4),
                "windows_after_event": len(after),
                "recovery_ms": None if rec is None else round(rec, 1),
                "abs_error_after_us_p50": round(statistics.median(err), 1) if err else None,
                "abs_error_after_us_max": round(max(err), 1) if err else None,
            }
        )
    )
    return 0


def load_wav_f32(path):
    with open(path, "rb") as f:
        d = f.read()
    if d[:4] != b"RIFF" or d[8:12] != b"WAVE":
        sys.exit(f"{path}: not a WAV file")
    at, ch, rate, data = 12, None, None, None
    while at + 8 <= len(d):
        cid, n = d[at : at + 4], struct.unpack_from("<I", d, at + 4)[0]
        body = d[at + 8 : at + 8 + n]
        if cid == b"fmt ":
            fmt, ch, rate = struct.unpack_from("<HHI", body)
            bits = struct.unpack_from("<H", body, 14)[0]
            if fmt not in (3, 0xFFFE) or bits != 32:
                sys.exit(f"{path}: want F32 WAV")
        elif cid == b"data":
            data = body
        at += 8 + n + (n & 1)
    s = array.array("f")
    s.frombytes(data[: len(data) // 4 * 4])
    return ch, rate, s


def level(a):
    ch, rate, s = load_wav_f32(a.wav)
    rows = load_ts(a.ts)
    frames = len(s) // ch
    lo = hi = None
    for fr in range(0, frames, max(1, rate // 1000)):
        t = frame_time(rows, fr, rate)
        if lo is None and t >= a.t_from:
            lo = fr
        if t <= a.t_to:
            hi = fr
    if lo is None or hi is None or hi <= lo:
        print(json.dumps({"error": "interval not in the recording"}))
        return 1
    seg = s[lo * ch : hi * ch]
    peak = max((abs(v) for v in seg), default=0.0)
    rms = (sum(v * v for v in seg) / max(1, len(seg))) ** 0.5
    nonzero = sum(1 for v in seg if v != 0.0)
    print(
        json.dumps(
            {
                "seconds": round((hi - lo) / rate, 3),
                "rms": rms,
                "peak": peak,
                "nonzero_samples": nonzero,
            }
        )
    )
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recovery")
    r.add_argument("--series", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--ts", required=True)
    r.add_argument("--rate", type=int, default=48000)
    r.add_argument("--event", type=int, required=True)
    r.add_argument("--base-from", type=int, default=0)
    r.add_argument("--base-to", type=int, default=0)
    r.add_argument("--base-ms", type=float)
    r.add_argument("--tol-us", type=float, default=100.0)
    r.add_argument("--hold", type=int, default=5)
    l = sub.add_parser("level")
    l.add_argument("--wav", required=True)
    l.add_argument("--ts", required=True)
    l.add_argument("--from", dest="t_from", type=int, required=True)
    l.add_argument("--to", dest="t_to", type=int, required=True)
    a = p.parse_args()
    return recovery(a) if a.cmd == "recovery" else level(a)


if __name__ == "__main__":
    sys.exit(main())
