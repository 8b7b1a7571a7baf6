#!/usr/bin/env bash
# Bans survive a restart with --state-dir (bans.state).
#   Userspace backend, on loopback: a brute-forcer is banned twice (the second ban at
#   step 2 of the ladder) and an operator bans an address; after SIGTERM and a start
#   with the same --state-dir the attacker is still banned at step 2 with origin
#   strikes, the operator ban is still origin admin, and the attacker's requests are
#   still dropped while another port of the same address is answered.
#   nftables backend, in network namespaces (root, nft): the kernel set keeps the
#   elements and the state file adds what the kernel does not know: the operator ban
#   comes back as origin admin (not "restored") and the attacker at step 2.
#   A corrupt state file is moved aside, reported in one line, and the start goes on.
. "$(dirname "$0")/lib.sh"

it_init guard_restart
need_cmd sipp python3
need_sipedge
CTL=$SIPEDGE_BUILD/tools/sipedgectl
[ -x "$CTL" ] || fail "sipedgectl not built ($CTL)"

# Ladder [2, 600]: the first ban runs out quickly, the second is the long step 2.
POLICY_YAML="guard:
  strikes: {threshold: 6, ip_threshold: 60, weights: {auth_failure: 2}}
  bans: {durations: [2, 600]}
  allowlist: [192.0.2.1/32]"
{ echo SEQUENTIAL; for u in $(seq 1000 1019); do echo "$u;bad;[authentication username=$u password=bad]"; done; } >"$IT_TMP/bad.csv"

# bans_of SOCK: the listing; ban_line SOCK ADDR PORT: the entry of ADDR:PORT (PORT any:
# the address or any of its ports; the attacker's address has no authenticated port, so
# the guard may take the whole address).
bans_of() { "$CTL" -s "$1" bans; }
ban_line() { bans_of "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
for b in d["bans"]:
    if b["source"] == sys.argv[1] and sys.argv[2] in ("any", str(b["port"])):
        print("step=%d origin=%s expires_in_s=%d" % (b["step"], b["origin"], b["expires_in_s"]))
' "$2" "$3"; }
# wait_ban SOCK ADDR PORT STEP SECONDS: until ADDR:PORT is banned at STEP.
wait_ban() {
    local n
    for ((n = 0; n < $5 * 10; n++)); do
        ban_line "$1" "$2" "$3" | grep -q "^step=$4 " && return 0
        sleep 0.1
    done
    return 1
}
# wait_unbanned SOCK ADDR PORT SECONDS
wait_unbanned() {
    local n
    for ((n = 0; n < $4 * 10; n++)); do
        [ -z "$(ban_line "$1" "$2" "$3")" ] && return 0
        sleep 0.1
    done
    return 1
}

# ---- userspace backend, loopback -------------------------------------------------------
PUB=$(it_addr 1)
CORE=$(it_addr 2)
ATK=$(it_addr 3)
REG=$(it_addr 4)
make_users "$IT_TMP/users.txt"
test_policy_dir "$IT_TMP/policy" "$POLICY_YAML"
STATE=$IT_TMP/state
SOCK=$IT_TMP/admin.sock
N_START=0
us_start() {
    N_START=$((N_START + 1))
    start_sipedge --listen-udp "$PUB:5060" --core "$CORE:5070" --registrar-listen "$REG:5080" \
        --users "$IT_TMP/users.txt" --policy "$IT_TMP/policy" --admin-socket "$SOCK" \
        --ban-backend userspace --state-dir "$STATE" --log-level debug
}
us_stop() {
    stop_sipedge
    cp "$SIPEDGE_LOG" "$IT_TMP/sipedge-us-$N_START.log"
}
attack() { # TAG SRC DST
    (cd "$IT_TMP" && timeout -k 2 20 sipp "$3:5060" -sf "$IT_SIPP_DIR/reg_auth_uac.xml" \
        -inf "$IT_TMP/bad.csv" -key domain example.com -key expires 60 -i "$2" -p 5090 \
        -r 10 -m 5 -recv_timeout 500 -nostdin >"$IT_TMP/sipp-atk-$1.out" 2>&1)
}
# probe SRC PORT DST: one REGISTER from SRC:PORT; prints the reply's status line or
# "no reply" after a second.
probe() {
    python3 - "$@" <<'EOF_PY'
import socket, sys
src, port, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((src, port))
msg = ("REGISTER sip:example.com SIP/2.0\r\n"
       "Via: SIP/2.0/UDP %s:%d;branch=z9hG4bK-probe%d;rport\r\n"
       "Max-Forwards: 70\r\nFrom: <sip:1500@example.com>;tag=p1\r\n"
       "To: <sip:1500@example.com>\r\nCall-ID: probe-%d@%s\r\nCSeq: 1 REGISTER\r\n"
       "Contact: <sip:1500@%s:%d>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n"
       % (src, port, port, port, src, src, port))
s.sendto(msg.encode(), (dst, 5060))
s.settimeout(1.0)
try:
    rep, _ = s.recvfrom(65535)
    print(rep.split(b"\r\n", 1)[0].decode("latin-1"))
except socket.timeout:
    print("no reply")
EOF_PY
}

us_start
attack 1 "$ATK" "$PUB"
wait_ban "$SOCK" "$ATK" any 1 5 || fail "attacker $ATK:5090 not banned (step 1): $(bans_of "$SOCK")"
wait_unbanned "$SOCK" "$ATK" any 6 || fail "first ban (2 s) did not run out"
attack 2 "$ATK" "$PUB"
wait_ban "$SOCK" "$ATK" any 2 5 || fail "attacker not banned again at step 2: $(bans_of "$SOCK")"
"$CTL" -s "$SOCK" ban 198.51.100.9 1h >/dev/null || fail "sipedgectl ban failed"
before=$(ban_line "$SOCK" "$ATK" any)
log "before restart: attacker $before; operator $(ban_line "$SOCK" 198.51.100.9 0)"
[ "$(probe "$ATK" 5090 "$PUB")" = "no reply" ] || fail "banned attacker answered before the restart"
us_stop
[ -s "$STATE/bans.state" ] || fail "no $STATE/bans.state after SIGTERM"

sleep 1
us_start
grep -E 'guard: restored [0-9]+ bans' "$SIPEDGE_LOG" || fail "no restore line in the log"
# Each worker restores the bans of the sources it owns from its own file, one line each:
# the counts are their sums.
restored=$(sed -nE 's/.*guard: restored ([0-9]+) bans \(([0-9]+) operator\) and [0-9]+ history entries.*/\1 \2/p' \
    "$SIPEDGE_LOG" | awk '{ b += $1; o += $2 } END { print b + 0, o + 0 }')
[ "$restored" = "2 1" ] ||
    fail "restore lines count $restored (bans, operator), want 2 bans, 1 operator"
after=$(ban_line "$SOCK" "$ATK" any)
op=$(ban_line "$SOCK" 198.51.100.9 0)
log "after restart: attacker $after; operator $op"
case $after in "step=2 origin=strikes "*) ;; *) fail "attacker after restart: '$after' (want step 2, strikes)" ;; esac
case $op in "step=1 origin=admin "*) ;; *) fail "operator ban after restart: '$op' (want origin admin)" ;; esac
left=${after##*expires_in_s=}
[ "$left" -gt 580 ] && [ "$left" -le 600 ] || fail "attacker has $left s left after the restart"
got=$(probe "$ATK" 5090 "$PUB")
[ "$got" = "no reply" ] || fail "attacker's request answered after the restart: $got"
got=$(probe "$(it_addr 5)" 5090 "$PUB")
case $got in SIP/2.0\ *) log "another source: $got" ;; *) fail "another source not answered: $got" ;; esac
"$CTL" -s "$SOCK" stats | grep -qE '"drop_banned":[1-9]' || fail "drop_banned did not move"
us_stop

# A corrupt state file: moved aside, one line, the start goes on with no bans.
printf 'garbage, not a state file..................................' >"$STATE/bans.state"
us_start
grep -E 'bans state refused: .*starting with no bans state, the file was moved to' "$SIPEDGE_LOG" ||
    fail "corrupt state file not reported"
ls "$STATE"/bans.state.bad-* >/dev/null 2>&1 || fail "corrupt state file not moved aside"
[ -z "$(ban_line "$SOCK" 198.51.100.9 0)" ] || fail "bans restored from a corrupt file"
us_stop
log "userspace backend: PASS"

# ---- nftables backend, network namespaces ---------------------------------------------
if [ "$(id -u)" != 0 ] || ! command -v nft >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
    [ "${CI:-}" = true ] && fail "nftables part needs root, nft and ip"
    log "nftables part skipped (needs root, nft, ip)"
    log PASS
    exit 0
fi
. "$SIPEDGE_SRC/scripts/netns.sh"
trap 'netns_cleanup; it_cleanup' EXIT
netns_add srv
netns_add atk
netns_link srv 198.18.2.1 atk 198.18.2.2
netns_exec atk ip route add 198.18.0.0/15 via 198.18.2.1 2>/dev/null
NSTATE=$IT_TMP/state-nft
NSOCK=$IT_TMP/admin-nft.sock
NFT_START=0
nft_start() {
    NFT_START=$((NFT_START + 1))
    SIPEDGE_LOG=$IT_TMP/sipedge-nft-$NFT_START.log
    # ip netns exec execs the daemon, so $! is sipedge itself. The worker count as
    # start_sipedge gives it (lib.sh IT_WORKERS).
    ip netns exec "$(netns_name srv)" "$SIPEDGE_BIN" --workers "$IT_WORKERS" --listen-udp 0.0.0.0:5060 \
        --core 127.0.0.1:5070 --registrar-listen 127.0.0.1:5080 --users "$IT_TMP/users.txt" \
        --policy "$IT_TMP/policy" --ban-backend nftables --admin-socket "$NSOCK" \
        --state-dir "$NSTATE" --log-level debug 2>>"$SIPEDGE_LOG" >/dev/null &
    SIPEDGE_PID=$!
    IT_PIDS+=("$SIPEDGE_PID")
    wait_for_line "$SIPEDGE_LOG" 'sipedge: ready' 5 "$SIPEDGE_PID" || fail "sipedge (nftables) did not start"
    grep -q 'nftables backend ready' "$SIPEDGE_LOG" || fail "nftables backend not active"
}
nft_stop() {
    kill -TERM "$SIPEDGE_PID"
    # Up to stop.timeout (5 s) and a margin: the bans are written first thing at SIGTERM.
    for _ in $(seq 1 200); do kill -0 "$SIPEDGE_PID" 2>/dev/null || break; sleep 0.05; done
    kill -0 "$SIPEDGE_PID" 2>/dev/null && fail "sipedge (nftables) did not stop"
    wait "$SIPEDGE_PID"
    local rc=$?
    [ "$rc" -eq 0 ] || fail "sipedge (nftables) exit status $rc"
    SIPEDGE_PID=
}
nctl() { netns_exec srv "$CTL" -s "$NSOCK" "$@"; }
in_set() { netns_exec srv nft list set inet sipedge "$1" 2>/dev/null | grep -q "$2"; }
nattack() {
    netns_exec atk timeout -k 2 20 sipp 198.18.2.1:5060 -sf "$IT_SIPP_DIR/reg_auth_uac.xml" \
        -inf "$IT_TMP/bad.csv" -key domain example.com -key expires 60 -i 198.18.2.2 -p 5090 \
        -r 10 -m 5 -recv_timeout 500 -nostdin >"$IT_TMP/sipp-natk-$1.out" 2>&1
}
# The listing is read inside the namespace (the socket path is shared).
nban_line() { ban_line "$NSOCK" "$1" "$2"; }

nft_start
nattack 1
wait_ban "$NSOCK" 198.18.2.2 any 1 5 || fail "nft: attacker not banned (step 1): $(bans_of "$NSOCK")"
wait_unbanned "$NSOCK" 198.18.2.2 any 6 || fail "nft: first ban did not run out"
nattack 2
wait_ban "$NSOCK" 198.18.2.2 any 2 5 || fail "nft: attacker not banned at step 2: $(bans_of "$NSOCK")"
nctl ban 198.51.100.9 1h >/dev/null || fail "nft: sipedgectl ban failed"
in_set ban4 '198.51.100.9' || fail "nft: operator ban not in ban4"
in_set ban4 '198.18.2.2' || in_set ban4p '198.18.2.2 . 5090' || fail "nft: attacker not in the kernel set"
nft_stop
sleep 1
nft_start
grep -E 'guard: restored [0-9]+ bans' "$SIPEDGE_LOG" || fail "nft: no restore line"
after=$(nban_line 198.18.2.2 any)
op=$(nban_line 198.51.100.9 0)
log "nft after restart: attacker $after; operator $op"
case $after in "step=2 origin=strikes "*) ;; *) fail "nft: attacker after restart: '$after' (want step 2, strikes)" ;; esac
case $op in "step=1 origin=admin "*) ;; *) fail "nft: operator ban after restart: '$op' (want origin admin)" ;; esac
in_set ban4 '198.18.2.2' || in_set ban4p '198.18.2.2 . 5090' ||
    fail "nft: attacker's element gone after the restart"

# The kernel decides what is live: an element deleted while sipedge was down stays lifted.
nft_stop
netns_exec srv nft delete element inet sipedge ban4 '{ 198.51.100.9 }' || fail "nft delete element"
nft_start
[ -z "$(nban_line 198.51.100.9 0)" ] || fail "nft: a ban the kernel no longer holds came back"
[ -n "$(nban_line 198.18.2.2 any)" ] || fail "nft: attacker's ban lost on the second restart"

# A reboot empties the kernel: the whole table is gone while sipedge is down. The saved
# bans go back into the new set with their step, origin and the time they have left.
nft_stop
netns_exec srv nft delete table inet sipedge || fail "nft delete table"
nft_start
in_set ban4 '198.18.2.2' || in_set ban4p '198.18.2.2 . 5090' ||
    fail "nft: after the table was recreated, the attacker is not back in the kernel set"
after=$(nban_line 198.18.2.2 any)
log "nft after the table was recreated: attacker $after"
case $after in "step=2 origin=strikes "*) ;; *) fail "nft: attacker after the table was recreated: '$after' (want step 2, strikes)" ;; esac
nft_stop
log PASS
