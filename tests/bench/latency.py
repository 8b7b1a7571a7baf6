#!/usr/bin/env python3
"""Sequential REGISTER round trips with microsecond timing.

Usage: latency.py DST_IP:PORT SRC_IP COUNT
Sends COUNT REGISTERs one at a time (a new one when the previous got its final
response) and prints "n p50_us p90_us p99_us". The client's own cost is the same for
every target, so the difference between two targets' figures is the hop's added latency.
"""
import socket
import sys
import time

dst_s, src, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = dst_s.rsplit(":", 1)
dst = (host, int(port))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(1.0)
lport = s.getsockname()[1]
rtts = []
for i in range(count):
    user = 200000 + (i % 1000)
    msg = (f"REGISTER sip:{host} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP {src}:{lport};branch=z9hG4bKlat{i}x;rport\r\n"
           "Max-Forwards: 70\r\n"
           f"From: <sip:{user}@{host}>;tag=l{i}\r\n"
           f"To: <sip:{user}@{host}>\r\n"
           f"Call-ID: lat-{user}@{src}\r\n"
           f"CSeq: {i + 1} REGISTER\r\n"
           f"Contact: <sip:{user}@{src}:{lport}>\r\n"
           "Expires: 3600\r\nContent-Length: 0\r\n\r\n").encode()
    t0 = time.perf_counter_ns()
    s.sendto(msg, dst)
    while True:
        try:
            data, _ = s.recvfrom(65535)
        except socket.timeout:
            data = None
            break
        if not data.startswith(b"SIP/2.0 1"):
            break
    if data is not None:
        rtts.append((time.perf_counter_ns() - t0) / 1000.0)
rtts.sort()
if not rtts:
    print("0 - - -")
else:
    pick = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))]
    print(f"{len(rtts)} {pick(0.5):.0f} {pick(0.9):.0f} {pick(0.99):.0f}")
