#!/usr/bin/env python3
"""Percentiles of a sipp -trace_rtt csv (Date_ms;response_time_ms;rtd_no).

Usage: rtt_stats.py FILE...   prints "count p50_ms p99_ms max_ms"
"""
import sys


def main():
    vals = []
    for path in sys.argv[1:]:
        try:
            with open(path) as f:
                for line in f:
                    parts = line.strip().split(";")
                    if len(parts) < 2:
                        continue
                    try:
                        vals.append(float(parts[1]))
                    except ValueError:
                        continue  # header
        except OSError:
            pass
    if not vals:
        print("0 - - -")
        return
    vals.sort()

    def pct(p):
        return vals[min(len(vals) - 1, int(round(p / 100.0 * (len(vals) - 1))))]

    print(f"{len(vals)} {pct(50):.2f} {pct(99):.2f} {vals[-1]:.2f}")


if __name__ == "__main__":
    main()
