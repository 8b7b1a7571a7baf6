#!/usr/bin/env bash
# NAT benchmark: refresh absorption and the CPU cost of NATed clients.
#
# Topology of tests/integration/nat_lib.sh (client ns -> masquerading NAT ns -> server ns
# with sipedge and a Kamailio registrar with digest auth). BENCH_CLIENTS clients behind
# the NAT (one socket each) register, then refresh every BENCH_REFRESH_S s, 10 times
# (tests/integration/sipp/nat_reg_refresh.xml). The window is the refresh phase, after
# every client is registered. For each configuration the script reports:
#   client REGISTERs sent in the window, REGISTERs Kamailio received in it
#   (core:rcv_requests_register), the share sipedge absorbed, pings sent, and sipedge's
#   CPU time (utime+stime from /proc/PID/stat) in the window, per 1,000 clients and
#   minute, pings included.
# Configurations: "cache" (default policy: regcache on, CRLF pings every
# BENCH_PING_S s) and "nocache" (regcache off, same pings).
#
# Needs root (network namespaces), sipp, kamailio, kamcmd, nft, python3.
# Environment: SIPEDGE_BIN (default build/sipedge), BENCH_CLIENTS (1000, at most 1000),
# BENCH_REFRESH_S (12), BENCH_PING_S (15), BENCH_CONFIGS ("cache nocache").
# Runs about 2 x (BENCH_CLIENTS/100 + 10 x BENCH_REFRESH_S + 15) s.
SELF=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")
: "${SIPEDGE_SRC:=$(cd "$(dirname "$0")/.." && pwd)}"
export SIPEDGE_SRC
# shellcheck source=tests/integration/nat_lib.sh disable=SC2034
. "$SIPEDGE_SRC/tests/integration/nat_lib.sh"
nat_enter "$SELF" "$@"
it_init bench_nat
need_cmd sipp python3 kamailio kamcmd
need_sipedge

CLIENTS=${BENCH_CLIENTS:-1000}
REFRESH_S=${BENCH_REFRESH_S:-12}
PING_S=${BENCH_PING_S:-15}
CONFIGS=${BENCH_CONFIGS:-cache nocache}
REFRESHES=10
# New clients per second. Every client sits behind the one NAT address, so the guard's
# per-IP budget (guard.yaml, 200 msg/s) sees them all: 2 REGISTERs per new client.
RATE=${BENCH_RATE:-50}
[ "$CLIENTS" -le 1000 ] || fail "BENCH_CLIENTS at most 1000"
SIPP_TIMEOUT=$((CLIENTS / RATE + REFRESHES * REFRESH_S + 90))
TCK=$(getconf CLK_TCK)
make_csv "$IT_TMP/users.csv" 1000 "$CLIENTS"

KAM_CHILDREN=4 start_kamailio "$SIPEDGE_SRC/tests/integration/kamailio/registrar.cfg" \
    "$SRV_REG" 5060 WITH_AUTH "TRUSTED_EDGE=\"$SRV_CORE\""

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

ROWS=()
for cfg in $CONFIGS; do
    pdir=$IT_TMP/policy-$cfg
    test_policy_dir "$pdir"
    sed -i -e '/^nat:/,/^[a-z]/{s/^\(  ping_interval:\).*/\1 '"$PING_S"'/}' "$pdir/policy.yaml"
    [ "$cfg" = nocache ] && sed -i -e '/^regcache:/,/^[a-z]/{s/^\(  enabled:\).*/\1 false/}' "$pdir/policy.yaml"
    start_sipedge --listen-udp "$SRV_PUB:5060" --core "$SRV_CORE:5070" --registrar "$SRV_REG:5060" \
        --policy "$pdir" --log-level info
    mv "$SIPEDGE_LOG" "$IT_TMP/sipedge-$cfg.log" && SIPEDGE_LOG=$IT_TMP/sipedge-$cfg.log
    acc0=$(kam_stat registrar:accepted_regs)
    SIPP_NO_MSG=1 cli_bg_sipp "$cfg" -sf "$SIPEDGE_SRC/tests/integration/sipp/nat_reg_refresh.xml" \
        -inf "$IT_TMP/users.csv" -key domain "$SRV_PUB" -key expires 3600 -t un \
        -max_socket $((CLIENTS + 100)) -i "$NAT_CLI_IP" -m "$CLIENTS" -l "$CLIENTS" -r "$RATE" \
        -d $((REFRESH_S * 1000)) -max_retrans 4 -recv_timeout 10000 "$SRV_PUB:5060"
    cpid=$BG_PID
    # Window start: the registration phase (sipp -r RATE) is over and the last client
    # has had 2 s for its digest round trip. (Kamailio's accepted count cannot tell:
    # without the cache it also counts the first refreshes.)
    for ((i = 0; i < (CLIENTS / RATE + 2) * 4; i++)); do
        kill -0 "$cpid" 2>/dev/null || fail "[$cfg] sipp ended during the registrations"
        sleep 0.25
    done
    acc=$(($(kam_stat registrar:accepted_regs) - acc0))
    log "[$cfg] window starts: $acc registrations accepted"
    reg_a=$(kam_stat core:rcv_requests_register)
    cpu_a=$(cpu_ticks "$SIPEDGE_PID")
    s_a=$(edge_stats)
    t_a=$EPOCHREALTIME
    wait "$cpid"
    rc=$?
    t_b=$EPOCHREALTIME
    cpu_b=$(cpu_ticks "$SIPEDGE_PID")
    reg_b=$(kam_stat core:rcv_requests_register)
    s_b=$(edge_stats)
    ok=$(sipp_stat "$cfg" 'SuccessfulCall(C)' 2>/dev/null)
    bad=$(sipp_stat "$cfg" 'FailedCall(C)' 2>/dev/null)
    rx_a=$(stat_of "$s_a" rx_public) rx_b=$(stat_of "$s_b" rx_public)
    pings=$(($(stat_of "$s_b" ping_sent) - $(stat_of "$s_a" ping_sent)))
    hits=$(($(stat_of "$s_b" regcache_hit) - $(stat_of "$s_a" regcache_hit)))
    ROWS+=("$(python3 - "$cfg" "$CLIENTS" "$t_a" "$t_b" "$((rx_b - rx_a))" "$((reg_b - reg_a))" \
        "$hits" "$pings" "$((cpu_b - cpu_a))" "$TCK" "$ok" "$bad" <<'PY'
import sys
cfg, n, ta, tb, cli, reg, hits, pings, ticks, tck, ok, bad = sys.argv[1:]
n, win, cli, reg, hits, pings = int(n), float(tb) - float(ta), int(cli), int(reg), int(hits), int(pings)
cpu = int(ticks) / int(tck)
absorbed = 100.0 * (1 - reg / cli) if cli else 0.0
per_k_min = cpu / (n / 1000) / (win / 60) * 1000 if win > 0 else 0
print(f"{cfg:<8} {n:>7} {win:>6.0f} {cli:>9} {cli / win:>8.1f} {reg:>9} {reg / win:>8.1f} "
      f"{absorbed:>8.1f} {hits:>7} {pings:>6} {cpu:>7.2f} {per_k_min:>11.0f} {ok}/{bad}")
PY
)")
    log "[$cfg] sipp status $rc; ${ROWS[-1]}"
    stop_sipedge
done

{
    echo
    echo "NAT benchmark: $CLIENTS clients behind NAT, refresh every ${REFRESH_S}s x $REFRESHES, pings every ${PING_S}s (crlf), $(nproc) cores"
    echo "window = refresh phase (after all clients registered); msgs = datagrams from clients at sipedge (REGISTER + nothing else here)"
    printf '%-8s %7s %6s %9s %8s %9s %8s %8s %7s %6s %7s %11s %s\n' config clients win_s cli_msgs cli_rps \
        reg_REGs reg_rps absorb% cachehit pings cpu_s ms/1k/min ok/failed
    printf '%s\n' "${ROWS[@]}"
} | tee "$IT_TMP/bench_nat.txt"
log "table also in $IT_TMP/bench_nat.txt"
