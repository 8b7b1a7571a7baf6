#!/usr/bin/env bash
# Guard benchmark, one run, in network namespaces (root):
#   1. flood sipedge from a banned source at the highest rate sipp reaches, once with the
#      nftables backend (kernel drops) and once with the userspace backend; report
#      sipedge's CPU use for each;
#   2. time from the threshold-crossing strike to the element being in the kernel set
#      (in-process netlink send->ACK, from the debug log, and polled with nft).
# Usage: scripts/bench_guard.sh [BUILD_DIR] [SECONDS]
set -uo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
SECS=${2:-10}
BIN=$BUILD/sipedge CTL=$BUILD/tools/sipedgectl
. "$SRC/scripts/netns.sh"
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 77; }
TMP=$(mktemp -d /tmp/bench-guard.XXXXXX)
trap 'netns_cleanup; rm -rf "$TMP"' EXIT
netns_add srv; netns_add atk
netns_link srv 198.18.2.1 atk 198.18.2.2
mkdir -p "$TMP/pol"; cp "$SRC"/policies/default/*.yaml "$TMP/pol/"
printf 'guard:\n  limits: {per_ip: {rate: 1000000, burst: 1000000}, per_ip_port: {rate: 1000000, burst: 1000000}}\n  strikes: {threshold: 6, weights: {auth_failure: 2}}\n  event_log: ""\n' >"$TMP/pol/50-bench.yaml"
cat >"$TMP/flood.xml" <<'X'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="flood"><send><![CDATA[
OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch]
Max-Forwards: 70
From: <sip:f@[local_ip]>;tag=[call_number]
To: <sip:x@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 OPTIONS
Content-Length: 0

]]></send></scenario>
X
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run_one() { # backend -> prints "cpu% packets_sent"
    local be=$1 pid t0 t1 hz
    ip netns exec "$(netns_name srv)" "$BIN" --workers 1 --listen-udp 0.0.0.0:5060 --core 127.0.0.1:5070 \
        --registrar-listen 127.0.0.1:5080 --policy "$TMP/pol" --ban-backend "$be" \
        --admin-socket "$TMP/$be.sock" --log-level debug 2>"$TMP/$be.log" >/dev/null &
    pid=$!
    for _ in $(seq 1 50); do grep -q 'sipedge: ready' "$TMP/$be.log" && break; sleep 0.1; done
    netns_exec srv "$CTL" -s "$TMP/$be.sock" ban 198.18.2.2 1h >/dev/null
    t0=$(cpu_ticks "$pid")
    netns_exec atk timeout $((SECS + 5)) sipp 198.18.2.1:5060 -sf "$TMP/flood.xml" -i 198.18.2.2 \
        -p 5099 -r 1000000 -rate_max 1000000 -l 1000000 -timeout "${SECS}s" -nostdin -m 100000000 \
        -trace_stat -stf "$TMP/$be.csv" -fd 1 >/dev/null 2>&1
    t1=$(cpu_ticks "$pid")
    hz=$(getconf CLK_TCK)
    local sent
    sent=$(python3 -c "import sys;r=[l.split(';') for l in open(sys.argv[1]) if l.strip()];print(r[-1][r[0].index('OutgoingCall(C)')])" "$TMP/$be.csv" 2>/dev/null || echo "?")
    echo "$(python3 -c "print(round(100.0*($t1-$t0)/$hz/$SECS,1))") $sent"
    kill "$pid"; for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}
read -r cpu_nft sent_nft < <(run_one nftables)
drops=$(netns_exec srv nft list chain inet sipedge input | awk '/@ban4 /{for(i=1;i<=NF;i++) if($i=="packets") print $(i+1)}' | head -1)
# Kernel bans outlive the daemon: remove our table so the userspace run really is one.
netns_exec srv nft delete table inet sipedge
read -r cpu_usr sent_usr < <(run_one userspace)
ack=$(grep -o 'committed in [0-9]* us' "$TMP/nftables.log" | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END{if(NR) print a[int((NR+1)/2)]; else print "?"}')
printf '\n%-28s %12s %12s\n' "" "nftables" "userspace"
printf '%-28s %12s %12s\n' "flood messages sent" "$sent_nft" "$sent_usr"
printf '%-28s %12s %12s\n' "sipedge CPU (%)" "$cpu_nft" "$cpu_usr"
printf '%-28s %12s %12s\n' "kernel drops (ban4 rule)" "${drops:-?}" "-"
printf '%-28s %12s %12s\n' "ban send->ACK median (us)" "$ack" "-"
