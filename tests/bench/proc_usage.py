#!/usr/bin/env python3
"""CPU time and memory of a process tree, from /proc.

Usage: proc_usage.py PID   prints "cpu_us pss_kib rss_kib" summed over PID and its
descendants (Kamailio forks workers; sipedge uses threads, which /proc/PID/stat
already includes).
"""
import os
import sys

TICK = os.sysconf("SC_CLK_TCK")


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def usage(pid):
    cpu = pss = rss = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            fields = s[s.rindex(")") + 2:].split()
            cpu += int(fields[11]) + int(fields[12])  # utime + stime
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1])
        except OSError:
            continue
    return cpu * 1_000_000 // TICK, pss, rss


if __name__ == "__main__":
    print(*usage(int(sys.argv[1])))
